"""QIDO-RS end to end over HTTP: emulator -> authorizer -> QIDO Lambda -> moto DynamoDB.

The session's local stack is shared with other modules, so this module stores its own data
first (one STOW per group, fresh UIDs, PatientIDs carrying a per-run token) and scopes every
assertion to that data: queries name our PatientIDs, StudyInstanceUIDs or AccessionNumbers,
and queries that cannot (a bare name or date search) are checked on the subset of results
that is ours.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_charset_files
from pydicom.datadict import tag_for_keyword
from pydicom.uid import generate_uid

from local.stack import LocalStack
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

pytestmark = pytest.mark.integration

MULTIPART = 'multipart/related; type="application/dicom"; boundary={b}'
AET = "VIEWER"
RUN = uuid.uuid4().hex[:8].upper()  # unique per run: our PatientIDs and AccessionNumbers

# Charset files of pydicom's test data: (file, patient-id suffix).
CHARSET_FILES = (
    "chrH31.dcm",  # ISO 2022 IR 87: Yamada^Tarou=山田^太郎=やまだ^たろう
    "chrH32.dcm",  # ISO 2022 IR 13 + 87: half-width katakana alphabetic group
    "chrI2.dcm",  # ISO 2022 IR 149: Hong^Gildong=洪^吉洞=홍^길동
    "chrKoreanMulti.dcm",  # ISO 2022 IR 149: 김희중
    "chrJapMulti.dcm",  # ISO 2022 IR 87: やまだ^たろう
    "chrX1.dcm",  # ISO_IR 192: Wang^XiaoDong=王^小東
    "chrX2.dcm",  # GB18030: Wang^XiaoDong=王^小东
    "chrFren.dcm",  # ISO_IR 100: Buc^Jérôme
    "chrGerm.dcm",  # ISO_IR 100: Äneas^Rüdiger
    "chrRuss.dcm",  # ISO_IR 144
    "chrGreek.dcm",  # ISO_IR 126
    "chrArab.dcm",  # ISO_IR 127
    "chrHbrw.dcm",  # ISO_IR 138
)

# (StudyDate, StudyTime) of the "dates" patient's studies, oldest first.
DATES = (
    ("19010101", "120000"),
    ("19010115", "080000"),
    ("19010115", "200000"),
    ("19010630", "000000"),
    ("19030301", "235959"),
)
PAGING_STUDIES = 7


def tag(keyword: str) -> str:
    """The 8-hex-digit DICOM JSON key of a keyword."""
    return f"{tag_for_keyword(keyword):08X}"


def value(dataset: dict[str, Any], keyword: str) -> list[Any] | None:
    """The Value list of an attribute (None when absent or empty)."""
    element = dataset.get(tag(keyword))
    return None if element is None else element.get("Value")


def first(dataset: dict[str, Any], keyword: str) -> Any:
    values = value(dataset, keyword)
    return values[0] if values else None


def stow(stack: LocalStack, *datas: bytes) -> None:
    boundary = new_boundary()
    body = build_related([(d, "application/dicom") for d in datas], boundary)
    response = requests.post(
        f"{stack.base_url}/stowRsListener/QIDOTEST/studies",
        data=body,
        headers={"Content-Type": MULTIPART.format(b=boundary), "Authorization": stack.api_key},
        timeout=120,
    )
    assert response.status_code == 200, response.text


def qido(
    stack: LocalStack,
    path: str,
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    *,
    query: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """GET {base}/qido/VIEWER/{path}; ``query`` is a literal, pre-encoded query string."""
    url = f"{stack.base_url}/qido/{AET}/{path}"
    if query is not None:
        url += "?" + query
    sent = {"Authorization": stack.api_key, **(headers or {})}
    return requests.get(url, params=params, headers=sent, timeout=60)


def ok(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    body = json.loads(response.content.decode("utf-8"))  # strict UTF-8
    assert isinstance(body, list)
    return body


def uids(results: Iterable[dict[str, Any]], keyword: str = "StudyInstanceUID") -> list[str]:
    return [first(r, keyword) for r in results]


def rewrite(source: Path, patient_id: str) -> bytes:
    """A charset file with fresh UIDs and our PatientID; names and charset untouched."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def expected_pn(source: Path) -> dict[str, str]:
    """PatientName as DICOM JSON expects it, decoded by pydicom from the original file."""
    name = pydicom.dcmread(source).PatientName
    groups = {
        "Alphabetic": name.alphabetic,
        "Ideographic": name.ideographic,
        "Phonetic": name.phonetic,
    }
    return {k: v for k, v in groups.items() if v}


@dataclass
class Data:
    """What the module stored."""

    charset: dict[str, tuple[str, str, dict[str, str]]] = field(default_factory=dict)
    # file name -> (PatientID, StudyInstanceUID, expected PN)
    main_pid: str = ""
    main_study: str = ""
    main_accession: str = ""
    main_series: list[str] = field(default_factory=list)  # by SeriesNumber
    main_sops: dict[str, list[str]] = field(default_factory=dict)  # series -> by number
    dates_pid: str = ""
    dates_studies: list[str] = field(default_factory=list)  # DATES order (oldest first)
    paging_pid: str = ""
    paging_studies: list[str] = field(default_factory=list)  # oldest first
    phonetic_pid: str = ""  # Latin name only in the phonetic group

    def charset_pid(self, name: str) -> str:
        return self.charset[name][0]

    def ours(self, results: Iterable[dict[str, Any]]) -> set[str]:
        """PatientIDs of ours among the results."""
        return {first(r, "PatientID") for r in results} & self.pids()

    def pids(self) -> set[str]:
        return {p for p, _, _ in self.charset.values()} | {
            self.main_pid,
            self.dates_pid,
            self.paging_pid,
            self.phonetic_pid,
        }


@pytest.fixture(scope="module")
def data(local_stack: LocalStack) -> Data:
    d = Data()
    charset_paths = {Path(p).name: Path(p) for p in get_charset_files("chr*.dcm")}
    charset_datas = []
    for name in CHARSET_FILES:
        pid = f"Q{RUN}-{name.removesuffix('.dcm')}"
        blob = rewrite(charset_paths[name], pid)
        study = pydicom.dcmread(io.BytesIO(blob)).StudyInstanceUID
        d.charset[name] = (pid, study, expected_pn(charset_paths[name]))
        charset_datas.append(blob)
    stow(local_stack, *charset_datas)

    # Main study: 2 series (CT, MR) x 2 instances, ASCII names.
    d.main_pid, d.main_study, d.main_accession = f"Q{RUN}-MAIN", generate_uid(), f"A{RUN}"
    d.main_series = [generate_uid(), generate_uid()]
    blobs = []
    for number, (series, modality) in enumerate(zip(d.main_series, ("CT", "MR"), strict=True)):
        d.main_sops[series] = []
        for instance in (1, 2):
            blob = dicom_files.with_new_uids(
                study=d.main_study,
                series=series,
                patient_id=d.main_pid,
                PatientName="Main^Patient",
                AccessionNumber=d.main_accession,
                StudyDate="20200115",
                StudyTime="101500",
                StudyDescription="QIDO main",
                Modality=modality,
                SeriesNumber=number + 1,
                InstanceNumber=instance,
            )
            d.main_sops[series].append(pydicom.dcmread(io.BytesIO(blob)).SOPInstanceUID)
            blobs.append(blob)

    d.dates_pid = f"Q{RUN}-DATES"
    for date, time in DATES:
        study = generate_uid()
        d.dates_studies.append(study)
        blobs.append(
            dicom_files.with_new_uids(
                study=study, patient_id=d.dates_pid, StudyDate=date, StudyTime=time
            )
        )
    d.paging_pid = f"Q{RUN}-PAGING"
    for day in range(1, PAGING_STUDIES + 1):
        study = generate_uid()
        d.paging_studies.append(study)
        blobs.append(
            dicom_files.with_new_uids(
                study=study, patient_id=d.paging_pid, StudyDate=f"190201{day:02d}"
            )
        )
    d.phonetic_pid = f"Q{RUN}-PHON"
    blobs.append(
        dicom_files.with_new_uids(
            patient_id=d.phonetic_pid,
            PatientName="Иванов^Иван==Ivanov^Ivan",
            SpecificCharacterSet="ISO_IR 192",
        )
    )
    stow(local_stack, *blobs)
    return d


# ------------------------------------------------------------------ 1. character sets


@pytest.mark.parametrize("name", CHARSET_FILES)
def test_non_latin_names_come_back_as_unicode_pn_objects(
    local_stack: LocalStack, data: Data, name: str
) -> None:
    pid, study, pn = data.charset[name]
    for path in ("studies", "patients", "series", "instances"):
        response = qido(local_stack, path, {"PatientID": pid})
        raw = response.content
        (result,) = ok(response)
        assert first(result, "PatientID") == pid
        assert result[tag("PatientName")]["vr"] == "PN"
        assert value(result, "PatientName") == [pn]
        non_ascii = not raw.isascii()
        assert non_ascii == any(not g.isascii() for g in pn.values())
        if non_ascii:
            assert result[tag("SpecificCharacterSet")] == {"vr": "CS", "Value": ["ISO_IR 192"]}
        else:
            assert tag("SpecificCharacterSet") not in result
        if path != "patients":
            assert value(result, "StudyInstanceUID") == [study]


def test_japanese_name_groups(local_stack: LocalStack, data: Data) -> None:
    (result,) = ok(qido(local_stack, "studies", {"PatientID": data.charset_pid("chrH31.dcm")}))
    assert value(result, "PatientName") == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    (result,) = ok(qido(local_stack, "studies", {"PatientID": data.charset_pid("chrX1.dcm")}))
    assert value(result, "PatientName") == [
        {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}
    ]
    (result,) = ok(qido(local_stack, "studies", {"PatientID": data.charset_pid("chrFren.dcm")}))
    assert value(result, "PatientName") == [{"Alphabetic": "Buc^Jérôme"}]


def test_ascii_only_results_declare_no_character_set(local_stack: LocalStack, data: Data) -> None:
    response = qido(local_stack, "studies", {"PatientID": data.main_pid})
    assert response.content.isascii()
    (result,) = ok(response)
    assert tag("SpecificCharacterSet") not in result


# ------------------------------------------------------------------ 2. matching


def charset_pids(data: Data, *names: str) -> set[str]:
    return {data.charset_pid(n) for n in names}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientName": "yamada*"}, ("chrH31.dcm",)),
        ({"PatientName": "YAMADA^T*"}, ("chrH31.dcm",)),
        ({"PatientName": "yamada^tarou"}, ("chrH31.dcm",)),
        ({"PatientName": "Yam?da^Tarou"}, ("chrH31.dcm",)),
        ({"PatientName": "山田*"}, ("chrH31.dcm", "chrH32.dcm")),
        ({"PatientName": "山田^太郎"}, ("chrH31.dcm", "chrH32.dcm")),
        ({"PatientName": "やまだ*"}, ("chrH31.dcm", "chrH32.dcm", "chrJapMulti.dcm")),
        ({"PatientName": "홍^길동"}, ("chrI2.dcm",)),
        ({"PatientName": "wang*"}, ("chrX1.dcm", "chrX2.dcm")),
        ({"PatientName": "王*"}, ("chrX1.dcm", "chrX2.dcm")),
        ({"PatientName": "buc^j*"}, ("chrFren.dcm",)),
        ({"PatientName": "jero"}, ()),
        ({"PatientName": "jero", "fuzzymatching": "true"}, ("chrFren.dcm",)),
        ({"PatientName": "JERO", "fuzzymatching": "true"}, ("chrFren.dcm",)),
        ({"PatientName": "rudiger", "fuzzymatching": "true"}, ("chrGerm.dcm",)),
        ({"PatientName": "jero", "fuzzymatching": "false"}, ()),
    ],
    ids=lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else None,
)
def test_patient_name_matching(
    local_stack: LocalStack, data: Data, params: dict[str, str], expected: tuple[str, ...]
) -> None:
    # Unscoped (other modules' studies may match too): the subset that is ours is exact.
    results = ok(qido(local_stack, "studies", params))
    assert data.ours(results) == charset_pids(data, *expected)
    # Scoped by each PatientID of ours: exactly the expected ones answer.
    for name in ("chrH31.dcm", "chrFren.dcm", "chrX1.dcm", "chrGerm.dcm"):
        scoped = ok(qido(local_stack, "studies", {**params, "PatientID": data.charset_pid(name)}))
        assert len(scoped) == (1 if name in expected else 0)


def test_patient_name_matching_at_patient_level(local_stack: LocalStack, data: Data) -> None:
    results = ok(qido(local_stack, "patients", {"PatientName": "yamada*"}))
    assert data.ours(results) == charset_pids(data, "chrH31.dcm")
    results = ok(qido(local_stack, "patients", {"PatientName": "jero", "fuzzymatching": "true"}))
    assert data.ours(results) == charset_pids(data, "chrFren.dcm")


def test_percent_encoded_values_in_a_literal_url(local_stack: LocalStack, data: Data) -> None:
    pid = data.charset_pid("chrH31.dcm")
    study = data.charset["chrH31.dcm"][1]
    queries = [
        f"PatientName=Yamada%5ETarou&PatientID={pid}",
        f"PatientName=yam%2A&PatientID={pid}",
        f"PatientName=yam%2a%5et%2A&PatientID={pid}",
        f"PatientName=%E5%B1%B1%E7%94%B0%5E%2A&PatientID={pid}",  # 山田^*
        f"PatientName=Yamada^Tarou&PatientID={pid}",  # unencoded ^ works too
        f"PatientName=yam*&PatientID={pid}",
        f"00100010=yamada%2A&00100020={pid}",
        f"PatientID={pid.replace('-', '%2D')}",
    ]
    for query in queries:
        assert uids(ok(qido(local_stack, "studies", query=query))) == [study], query
    # The same through requests' own encoding of the params.
    for name in ("Yamada^Tarou", "yam*", "山田^*", "*^太郎"):
        response = qido(local_stack, "studies", {"PatientName": name, "PatientID": pid})
        assert "%" in response.request.url
        assert uids(ok(response)) == [study], name


def test_uid_lists_with_backslash_and_comma_keep_the_given_order(
    local_stack: LocalStack, data: Data
) -> None:
    s = data.dates_studies
    for sep in ("\\", ","):
        results = ok(qido(local_stack, "studies", {"StudyInstanceUID": sep.join([s[0], s[2]])}))
        assert uids(results) == [s[0], s[2]]
        results = ok(qido(local_stack, "studies", {"StudyInstanceUID": sep.join([s[3], s[1]])}))
        assert uids(results) == [s[3], s[1]]
    literal = f"StudyInstanceUID={s[4]}%5C{s[0]}"
    assert uids(ok(qido(local_stack, "studies", query=literal))) == [s[4], s[0]]
    # Unknown UIDs in the list are simply not found.
    unknown = generate_uid()
    results = ok(qido(local_stack, "studies", {"StudyInstanceUID": f"{unknown}\\{s[1]}"}))
    assert uids(results) == [s[1]]


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_a_repeated_uid_in_a_list_answers_once(
    local_stack: LocalStack, data: Data, level: str
) -> None:
    uid = {
        "studies": ("StudyInstanceUID", data.main_study),
        "series": ("SeriesInstanceUID", data.main_series[0]),
        "instances": ("SOPInstanceUID", data.main_sops[data.main_series[0]][0]),
    }[level]
    response = qido(local_stack, level, {uid[0]: f"{uid[1]}\\{uid[1]}"})
    assert uids(ok(response), uid[0]) == [uid[1]]
    response = qido(local_stack, level, {uid[0]: f"{uid[1]}\\{uid[1]}", "limit": 1})
    assert "Warning" not in response.headers


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"StudyDate": "19010115"}, [1, 2]),
        ({"StudyDate": "19010115-19010630"}, [1, 2, 3]),
        ({"StudyDate": "-19010115"}, [0, 1, 2]),
        ({"StudyDate": "19010201-"}, [3, 4]),
        ({"StudyDate": "19010101-19010101"}, [0]),
        ({"StudyDate": "19000101-19001231"}, []),
        ({"StudyTime": "190000-210000"}, [2]),
        ({"StudyTime": "-090000"}, [1, 3]),
        ({"StudyTime": "120000"}, [0]),
        # Date and time ranges together are one date-time range (PS3.4 C.2.2.2.5.1):
        # from 1901-01-01 13:00 to 1901-01-15 19:00.
        ({"StudyDate": "19010101-19010115", "StudyTime": "130000-190000"}, [1]),
        ({"StudyDate": "19010115-", "StudyTime": "210000-"}, [3, 4]),
        ({"StudyDate": "19010115", "StudyTime": "190000-"}, [2]),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_date_and_time_matching(
    local_stack: LocalStack, data: Data, params: dict[str, str], expected: list[int]
) -> None:
    want = [data.dates_studies[i] for i in reversed(expected)]  # newest first
    scoped = ok(qido(local_stack, "studies", {**params, "PatientID": data.dates_pid}))
    assert uids(scoped) == want
    # Without the PatientID (date index): our subset is the same, in the same order.
    if "StudyDate" in params:
        results = ok(qido(local_stack, "studies", params))
        assert [u for u in uids(results) if u in data.dates_studies] == want


def test_studies_are_newest_first(local_stack: LocalStack, data: Data) -> None:
    results = ok(qido(local_stack, "studies", {"PatientID": data.dates_pid}))
    assert uids(results) == list(reversed(data.dates_studies))


def test_modalities_in_study(local_stack: LocalStack, data: Data) -> None:
    main = {"PatientID": data.main_pid}
    assert uids(ok(qido(local_stack, "studies", {**main, "ModalitiesInStudy": "MR"}))) == [
        data.main_study
    ]
    assert uids(ok(qido(local_stack, "studies", {**main, "ModalitiesInStudy": "CT"}))) == [
        data.main_study
    ]
    assert ok(qido(local_stack, "studies", {**main, "ModalitiesInStudy": "US"})) == []
    dates = {"PatientID": data.dates_pid}
    assert ok(qido(local_stack, "studies", {**dates, "ModalitiesInStudy": "MR"})) == []
    for modalities in ("MR\\CT", "US,CT"):
        results = ok(qido(local_stack, "studies", {**dates, "ModalitiesInStudy": modalities}))
        assert len(results) == len(DATES)
    # Alone (modality index): ours among the results.
    assert data.main_study in uids(ok(qido(local_stack, "studies", {"ModalitiesInStudy": "MR"})))


def test_accession_number(local_stack: LocalStack, data: Data) -> None:
    results = ok(qido(local_stack, "studies", {"AccessionNumber": data.main_accession}))
    assert uids(results) == [data.main_study]
    results = ok(qido(local_stack, "studies", {"AccessionNumber": f"{data.main_accession}*"}))
    assert data.main_study in uids(results)
    assert ok(qido(local_stack, "studies", {"AccessionNumber": f"{data.main_accession}X"})) == []


def test_empty_value_is_universal(local_stack: LocalStack, data: Data) -> None:
    everything = uids(ok(qido(local_stack, "studies", {"PatientID": data.dates_pid})))
    assert len(everything) == len(DATES)
    for extra in (
        "PatientName=",
        "StudyDate=",
        "StudyDescription=",
        "AccessionNumber=",
        "ModalitiesInStudy=",
        "StudyInstanceUID=",
        "PatientName=*",
        "StudyDate=-",
    ):
        query = f"PatientID={data.dates_pid}&{extra}"
        assert uids(ok(qido(local_stack, "studies", query=query))) == everything, extra


def test_empty_value_matching(local_stack: LocalStack, data: Data) -> None:
    pid = data.dates_pid
    # CT_small has an empty AccessionNumber and a StudyDescription.
    assert len(ok(qido(local_stack, "studies", query=f'PatientID={pid}&AccessionNumber=""'))) == 5
    assert ok(qido(local_stack, "studies", query=f"PatientID={pid}&StudyDescription=%22%22")) == []
    main = data.main_pid
    assert ok(qido(local_stack, "studies", query=f'PatientID={main}&AccessionNumber=""')) == []


def test_values_with_spaces(local_stack: LocalStack, data: Data) -> None:
    query = f"PatientID={data.main_pid}&StudyDescription=QIDO%20main"
    assert uids(ok(qido(local_stack, "studies", query=query))) == [data.main_study]
    query = f"PatientID={data.main_pid}&StudyDescription=qido%20main"  # case-sensitive
    assert ok(qido(local_stack, "studies", query=query)) == []


def test_tags_instead_of_keywords(local_stack: LocalStack, data: Data) -> None:
    by_keyword = ok(qido(local_stack, "studies", {"PatientID": data.main_pid}))
    by_tag = ok(qido(local_stack, "studies", {"00100020": data.main_pid}))
    assert by_tag == by_keyword
    lower = ok(qido(local_stack, "studies", {"0020000d": data.main_study}))
    assert uids(lower) == [data.main_study]
    series = ok(qido(local_stack, "series", {"00100020": data.main_pid, "00080060": "MR"}))
    assert uids(series, "SeriesInstanceUID") == [data.main_series[1]]


# ------------------------------------------------------------------ 3. returned attributes


STUDY_DEFAULTS = {
    tag(k)
    for k in (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
}


def test_study_level_default_attributes(local_stack: LocalStack, data: Data) -> None:
    (study,) = ok(qido(local_stack, "studies", {"PatientID": data.main_pid}))
    assert set(study) == STUDY_DEFAULTS  # CT_small has each of them (some empty)
    assert value(study, "StudyInstanceUID") == [data.main_study]
    assert study[tag("StudyInstanceUID")]["vr"] == "UI"
    assert sorted(value(study, "ModalitiesInStudy") or []) == ["CT", "MR"]
    assert study[tag("NumberOfStudyRelatedSeries")] == {"vr": "IS", "Value": [2]}
    assert study[tag("NumberOfStudyRelatedInstances")] == {"vr": "IS", "Value": [4]}
    assert study[tag("RetrieveURL")] == {
        "vr": "UR",
        "Value": [f"{local_stack.base_url}/rs/studies/{data.main_study}"],
    }
    assert value(study, "PatientName") == [{"Alphabetic": "Main^Patient"}]
    assert value(study, "StudyDate") == ["20200115"]
    assert value(study, "StudyTime") == ["101500"]
    assert value(study, "AccessionNumber") == [data.main_accession]
    assert value(study, "InstanceAvailability") == ["ONLINE"]
    # Not a default: only with includefield.
    assert tag("StudyDescription") not in study
    assert tag("SOPClassesInStudy") not in study


@pytest.mark.parametrize(
    "query",
    [
        "includefield=StudyDescription",
        "includefield=00081030",
        "includefield=StudyDescription,PatientAge",
        "includefield=StudyDescription&includefield=PatientAge",
        "includefield=00081030%2C00101010",
        "includefield=all",
    ],
)
def test_includefield(local_stack: LocalStack, data: Data, query: str) -> None:
    (study,) = ok(qido(local_stack, "studies", query=f"PatientID={data.main_pid}&{query}"))
    assert value(study, "StudyDescription") == ["QIDO main"]
    assert set(study) >= STUDY_DEFAULTS
    has_age = "PatientAge" in query or "00101010" in query or "all" in query
    assert (value(study, "PatientAge") == ["000Y"]) == has_age
    if "all" in query:
        assert value(study, "SOPClassesInStudy") == ["1.2.840.10008.5.1.4.1.1.2"]
        assert value(study, "PatientSex") == ["O"]
    else:
        assert tag("SOPClassesInStudy") not in study


def test_series_level(local_stack: LocalStack, data: Data) -> None:
    base = local_stack.base_url
    for path, params in (
        (f"studies/{data.main_study}/series", {}),
        ("series", {"PatientID": data.main_pid}),
        ("series", {"StudyInstanceUID": data.main_study}),
        ("series", {"AccessionNumber": data.main_accession}),
    ):
        results = ok(qido(local_stack, path, params))
        assert uids(results, "SeriesInstanceUID") == data.main_series, path
        for number, (series, modality) in enumerate(
            zip(results, ("CT", "MR"), strict=True), start=1
        ):
            uid = first(series, "SeriesInstanceUID")
            assert value(series, "StudyInstanceUID") == [data.main_study]
            assert value(series, "Modality") == [modality]
            assert series[tag("SeriesNumber")] == {"vr": "IS", "Value": [number]}
            assert series[tag("NumberOfSeriesRelatedInstances")] == {"vr": "IS", "Value": [2]}
            assert value(series, "RetrieveURL") == [
                f"{base}/rs/studies/{data.main_study}/series/{uid}"
            ]
            assert tag("SOPInstanceUID") not in series
    mr = ok(qido(local_stack, f"studies/{data.main_study}/series", {"Modality": "MR"}))
    assert uids(mr, "SeriesInstanceUID") == [data.main_series[1]]
    one = ok(qido(local_stack, "series", {"SeriesInstanceUID": data.main_series[0]}))
    assert uids(one, "SeriesInstanceUID") == [data.main_series[0]]


def test_instance_level(local_stack: LocalStack, data: Data) -> None:
    base, study = local_stack.base_url, data.main_study
    every = [sop for series in data.main_series for sop in data.main_sops[series]]
    for series in data.main_series:
        results = ok(qido(local_stack, f"studies/{study}/series/{series}/instances"))
        assert uids(results, "SOPInstanceUID") == data.main_sops[series]
        for number, instance in enumerate(results, start=1):
            sop = first(instance, "SOPInstanceUID")
            assert instance[tag("InstanceNumber")] == {"vr": "IS", "Value": [number]}
            assert value(instance, "SOPClassUID") == ["1.2.840.10008.5.1.4.1.1.2"]
            assert value(instance, "Rows") == [128]
            assert value(instance, "StudyInstanceUID") == [study]
            assert value(instance, "SeriesInstanceUID") == [series]
            assert value(instance, "RetrieveURL") == [
                f"{base}/rs/studies/{study}/series/{series}/instances/{sop}"
            ]
    by_study = ok(qido(local_stack, f"studies/{study}/instances"))
    assert sorted(uids(by_study, "SOPInstanceUID")) == sorted(every)
    # Ordered by series UID, then InstanceNumber.
    assert [(first(i, "SeriesInstanceUID"), first(i, "InstanceNumber")) for i in by_study] == (
        sorted((s, n) for s in data.main_series for n in (1, 2))
    )
    assert {first(i, "Modality") for i in by_study} == {"CT", "MR"}
    by_patient = ok(qido(local_stack, "instances", {"PatientID": data.main_pid}))
    assert sorted(uids(by_patient, "SOPInstanceUID")) == sorted(every)
    assert all(value(i, "PatientName") == [{"Alphabetic": "Main^Patient"}] for i in by_patient)
    sop = data.main_sops[data.main_series[1]][1]
    (one,) = ok(qido(local_stack, "instances", {"SOPInstanceUID": sop}))
    assert value(one, "InstanceNumber") == [2]
    by_series = ok(qido(local_stack, "instances", {"SeriesInstanceUID": data.main_series[1]}))
    assert uids(by_series, "SOPInstanceUID") == data.main_sops[data.main_series[1]]
    numbered = ok(qido(local_stack, f"studies/{study}/instances", {"InstanceNumber": "2"}))
    assert sorted(uids(numbered, "SOPInstanceUID")) == sorted(
        data.main_sops[s][1] for s in data.main_series
    )


@pytest.mark.parametrize(
    ("which", "counts"),
    [("main", (1, 2, 4)), ("dates", (5, 5, 5)), ("paging", (7, 7, 7))],
)
def test_patient_level_counts(
    local_stack: LocalStack, data: Data, which: str, counts: tuple[int, int, int]
) -> None:
    pid = getattr(data, f"{which}_pid")
    (patient,) = ok(qido(local_stack, "patients", {"PatientID": pid}))
    assert value(patient, "PatientID") == [pid]
    assert patient[tag("PatientName")]["vr"] == "PN"
    for keyword, count in zip(
        (
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ),
        counts,
        strict=True,
    ):
        assert patient[tag(keyword)] == {"vr": "IS", "Value": [count]}
    assert tag("StudyInstanceUID") not in patient


def test_value_types_in_json(local_stack: LocalStack, data: Data) -> None:
    (study,) = ok(qido(local_stack, "studies", {"PatientID": data.main_pid, "includefield": "all"}))
    for element in study.values():
        for item in element.get("Value", []):
            if element["vr"] in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"):
                assert isinstance(item, (int, float)) and not isinstance(item, bool), element
            elif element["vr"] == "PN":
                assert isinstance(item, dict), element
            elif element["vr"] != "SQ":
                assert isinstance(item, str), element


# ------------------------------------------------------------------ 4. paging


def test_pages_are_disjoint_consecutive_and_complete(local_stack: LocalStack, data: Data) -> None:
    pid = {"PatientID": data.paging_pid}
    response = qido(local_stack, "studies", pid)
    everything = uids(ok(response))
    assert "Warning" not in response.headers
    assert everything == list(reversed(data.paging_studies))  # newest first
    for limit in (1, 2, 3, 4, 6, 7, 10):
        pages: list[str] = []
        for offset in range(0, PAGING_STUDIES + 1, limit):
            response = qido(local_stack, "studies", {**pid, "limit": limit, "offset": offset})
            page = uids(ok(response))
            assert len(page) == min(limit, max(PAGING_STUDIES - offset, 0))
            more = offset + limit < PAGING_STUDIES
            if more:
                assert response.headers["Warning"].startswith("299 ")
            else:
                assert "Warning" not in response.headers
            pages.extend(page)
        assert pages == everything, limit


def test_offset_alone_and_past_the_end(local_stack: LocalStack, data: Data) -> None:
    pid = {"PatientID": data.paging_pid}
    everything = uids(ok(qido(local_stack, "studies", pid)))
    assert uids(ok(qido(local_stack, "studies", {**pid, "offset": 5}))) == everything[5:]
    for offset in (7, 100):
        response = qido(local_stack, "studies", {**pid, "offset": offset})
        assert ok(response) == []
        assert "Warning" not in response.headers


def test_paging_at_series_and_instance_level(local_stack: LocalStack, data: Data) -> None:
    pid = {"PatientID": data.main_pid}
    for path, keyword in (("series", "SeriesInstanceUID"), ("instances", "SOPInstanceUID")):
        everything = uids(ok(qido(local_stack, path, pid)), keyword)
        first_page = qido(local_stack, path, {**pid, "limit": 1})
        assert first_page.headers["Warning"].startswith("299 ")
        rest = qido(local_stack, path, {**pid, "offset": 1, "limit": 10})
        assert "Warning" not in rest.headers
        assert uids(ok(first_page), keyword) + uids(ok(rest), keyword) == everything


def test_no_match_is_200_with_an_empty_array(local_stack: LocalStack) -> None:
    nobody = f"Q{RUN}-NOBODY"
    for path in ("patients", "studies", "series", "instances"):
        response = qido(local_stack, path, {"PatientID": nobody})
        assert ok(response) == []
        assert response.text.strip() == "[]"
        assert "Warning" not in response.headers
    unknown = generate_uid()
    assert ok(qido(local_stack, f"studies/{unknown}/series")) == []
    assert ok(qido(local_stack, f"studies/{unknown}/instances")) == []
    assert ok(qido(local_stack, f"studies/{unknown}/series/{generate_uid()}/instances")) == []


# ------------------------------------------------------------------ 5. errors


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("studies", "Foo=1"),
        ("studies", "00191234=1"),
        ("studies", "StudyDate=2020-13-45"),
        ("studies", "StudyDate=abc"),
        ("studies", "StudyDate=20201345"),
        ("studies", "StudyDate=2020*"),
        ("studies", "StudyTime=256000"),
        ("studies", "StudyInstanceUID=1.02"),
        ("studies", "StudyInstanceUID=1.2.abc"),
        ("studies", "limit=-1"),
        ("studies", "limit=abc"),
        ("studies", "limit=0"),
        ("studies", "offset=-1"),
        ("studies", "offset=x"),
        ("studies", "fuzzymatching=maybe"),
        ("studies", "StudyDate=20200201-20200101"),
        ("studies", "StudyTime=120000-110000"),
        ("studies", "PatientID=a&PatientID=b"),
        ("studies", "PatientID=a&00100020=a"),
        ("studies", "includefield=not-a-keyword"),
        ("studies", "NumberOfStudyRelatedInstances=many"),
        ("patients", "Modality=CT"),
        ("studies/1.02/series", ""),
        ("studies/1.2.3/series/1.2.x/instances", ""),
    ],
)
def test_bad_requests_are_400_with_a_message(
    local_stack: LocalStack, data: Data, path: str, query: str
) -> None:
    response = qido(local_stack, path, query=query)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert isinstance(message, str) and message


def test_query_uid_contradicting_the_path_is_400(local_stack: LocalStack, data: Data) -> None:
    study, series = data.main_study, data.main_series[0]
    other = data.dates_studies[0]
    cases = [
        (f"studies/{study}/series", {"StudyInstanceUID": other}),
        (f"studies/{study}/instances", {"StudyInstanceUID": other}),
        (f"studies/{study}/series/{series}/instances", {"SeriesInstanceUID": data.main_series[1]}),
    ]
    for path, params in cases:
        response = qido(local_stack, path, params)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["message"]
    # Agreeing with the path is fine.
    same = ok(qido(local_stack, f"studies/{study}/series", {"StudyInstanceUID": study}))
    assert len(same) == 2


@pytest.mark.parametrize(
    "accept", ["application/dicom+xml", 'multipart/related; type="application/dicom+xml"']
)
def test_xml_is_not_acceptable(local_stack: LocalStack, data: Data, accept: str) -> None:
    response = qido(
        local_stack, "studies", {"PatientID": data.main_pid}, headers={"Accept": accept}
    )
    assert response.status_code == 406
    assert response.json()["message"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("application/json", "application/json"),
        ("application/dicom+json", "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/dicom+xml, application/json;q=0.5", "application/json"),
    ],
)
def test_json_accept_headers(local_stack: LocalStack, data: Data, accept: str, media: str) -> None:
    response = qido(
        local_stack, "studies", {"PatientID": data.main_pid}, headers={"Accept": accept}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(media)
    assert uids(response.json()) == [data.main_study]


@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789"])
def test_missing_or_wrong_key_is_401(local_stack: LocalStack, data: Data, key: str | None) -> None:
    headers = {} if key is None else {"Authorization": key}
    response = requests.get(
        f"{local_stack.base_url}/qido/{AET}/studies",
        params={"PatientID": data.main_pid},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["message"]
    assert data.main_study not in response.text


# ------------------------------------------------------------------ 6. dicomweb-client


@pytest.fixture
def client(local_stack: LocalStack) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(
        url=local_stack.base_url,
        qido_url_prefix=f"qido/{AET}",
        headers={"Authorization": local_stack.api_key},
    )


def test_dicomweb_client_search_for_studies(
    local_stack: LocalStack, data: Data, client: Any
) -> None:
    everything = uids(ok(qido(local_stack, "studies", {"PatientID": data.paging_pid})))
    page = client.search_for_studies(
        search_filters={"PatientID": data.paging_pid},
        fields=["StudyDescription", "00101010"],
        limit=3,
        offset=3,
    )
    assert uids(page) == everything[3:6]
    assert all(value(s, "PatientAge") == ["000Y"] for s in page)
    assert all(tag("StudyDescription") in s for s in page)
    (main,) = client.search_for_studies(search_filters={"PatientID": data.main_pid})
    # dicomweb-client sends Host without the port; the URL must still lead back here.
    assert value(main, "RetrieveURL") == [f"{local_stack.base_url}/rs/studies/{data.main_study}"]
    found = client.search_for_studies(search_filters={"PatientName": "山田*"})
    assert data.ours(found) == charset_pids(data, "chrH31.dcm", "chrH32.dcm")
    fuzzy = client.search_for_studies(search_filters={"PatientName": "jero"}, fuzzymatching=True)
    assert data.ours(fuzzy) == charset_pids(data, "chrFren.dcm")


def test_dicomweb_client_get_remaining(local_stack: LocalStack, data: Data, client: Any) -> None:
    everything = uids(ok(qido(local_stack, "studies", {"PatientID": data.paging_pid})))
    for limit in (2, 3, 7):
        results = client.search_for_studies(
            search_filters={"PatientID": data.paging_pid}, limit=limit, get_remaining=True
        )
        assert uids(results) == everything


def test_dicomweb_client_series_and_instances(data: Data, client: Any) -> None:
    series = client.search_for_series(study_instance_uid=data.main_study)
    assert uids(series, "SeriesInstanceUID") == data.main_series
    assert [first(s, "NumberOfSeriesRelatedInstances") for s in series] == [2, 2]
    mr = client.search_for_series(search_filters={"PatientID": data.main_pid, "Modality": "MR"})
    assert uids(mr, "SeriesInstanceUID") == [data.main_series[1]]
    for uid in data.main_series:
        instances = client.search_for_instances(
            study_instance_uid=data.main_study, series_instance_uid=uid
        )
        assert uids(instances, "SOPInstanceUID") == data.main_sops[uid]
    in_study = client.search_for_instances(study_instance_uid=data.main_study, limit=3)
    assert len(in_study) == 3
    remaining = client.search_for_instances(
        study_instance_uid=data.main_study, limit=3, get_remaining=True
    )
    assert len(remaining) == 4


def test_one_dicomweb_root_serves_search_and_retrieve(local_stack: LocalStack, data: Data) -> None:
    """A client given one URL (QIDO and WADO both under /rs) finds and retrieves."""
    from dicomweb_client.api import DICOMwebClient

    root = DICOMwebClient(
        url=f"{local_stack.base_url}/rs", headers={"Authorization": local_stack.api_key}
    )
    studies = root.search_for_studies(search_filters={"PatientID": data.main_pid})
    assert uids(studies) == [data.main_study]
    series = root.search_for_series(study_instance_uid=data.main_study)
    assert uids(series, "SeriesInstanceUID") == data.main_series
    for uid in data.main_series:
        instances = root.search_for_instances(
            study_instance_uid=data.main_study, series_instance_uid=uid
        )
        assert uids(instances, "SOPInstanceUID") == data.main_sops[uid]
    assert len(root.search_for_instances(study_instance_uid=data.main_study)) == 4
    assert root.search_for_series(search_filters={"SeriesInstanceUID": data.main_series[0]})
    assert root.search_for_instances(search_filters={"PatientID": data.main_pid})
    retrieved = root.retrieve_study(data.main_study)
    assert len(retrieved) == 4


# ------------------------------------------------------------------ parent attributes, PN groups


@pytest.mark.parametrize("path", ["studies", "patients"])
def test_latin_values_match_the_alphabetic_group_whatever_the_other_keys(
    local_stack: LocalStack, data: Data, path: str
) -> None:
    """Documented choice: an ASCII value is compared with the alphabetic group only, so the
    answer does not depend on which index serves the query."""
    for name in ("ivanov*", "Ivanov^Ivan"):
        alone = ok(qido(local_stack, path, {"PatientName": name}))
        assert data.phonetic_pid not in {first(r, "PatientID") for r in alone}
        scoped = ok(qido(local_stack, path, {"PatientName": name, "PatientID": data.phonetic_pid}))
        assert scoped == []
    for name in ("иванов*", "Иванов^Иван"):
        alone = ok(qido(local_stack, path, {"PatientName": name}))
        assert data.phonetic_pid in {first(r, "PatientID") for r in alone}
        (result,) = ok(
            qido(local_stack, path, {"PatientName": name, "PatientID": data.phonetic_pid})
        )
        assert value(result, "PatientName")[0]["Phonetic"] == "Ivanov^Ivan"
        assert value(result, "PatientName")[0]["Alphabetic"] == "Иванов^Иван"


@pytest.mark.parametrize("includefield", [None, "all"])
@pytest.mark.parametrize("level", ["series", "instances"])
def test_parent_computed_attributes_in_all_series_and_all_instances(
    local_stack: LocalStack, data: Data, level: str, includefield: str | None
) -> None:
    params = {"PatientID": data.main_pid}
    if includefield:
        params["includefield"] = includefield
    results = ok(qido(local_stack, level, params))
    assert results
    for result in results:
        assert sorted(value(result, "ModalitiesInStudy") or []) == ["CT", "MR"]
        assert value(result, "NumberOfStudyRelatedSeries") == [2]
        assert value(result, "NumberOfStudyRelatedInstances") == [4]
        if level == "instances":
            assert value(result, "NumberOfSeriesRelatedInstances") == [2]
