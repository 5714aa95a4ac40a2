"""QIDO on every catalog (DynamoDB on moto, SQLite, the fakes) against a plain in-memory
reference, and the no-Scan rule.

The reference aggregates the stored records in memory, builds the same datasets and keeps
those the matcher accepts: what the index-backed planner returns must be the same set, for
data and queries Hypothesis generates; paging must cut that list into consistent pages.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.matching import matches
from shared.dicomweb.query import MAX_LIMIT, Query, parse
from shared.errors import NotFound
from shared.ports import InstanceRecord, InstanceRow, PatientRow, SeriesRow, StudyRow
from shared.services import lifecycle
from shared.services import search as search_service
from shared.services.lifecycle import Target
from shared.services.store import _record
from tests.fakes import FakeIndex, FakeObjectStore, FakeSearchCatalog
from tests.support import dicom_files

TABLE = "qido-table"
BASE = "https://h/o3-dpacs-wado"
NAMES = {
    "P1": "Smith^John",
    "P2": "Smíth^Anna",
    "P3": "Doe^Jane",
    "P4": "Dœ^Zoë",
    "P5": "Yamada^Tarou=山田^太郎",
    "P6": "Müller^Jürgen",
    "P7": "Ng^Al",
}
MODALITIES = ("CT", "MR", "SR", "US")
DESCRIPTIONS = ("CT HEAD WO CONTRAST", "MR Knee Left", "Thorax/Abdomen", "Échographie", "頭部CT")
PHYSICIANS = ("HOUSE^GREGORY", "Grey^Meredith", "", "Müller^Ärztin")


@pytest.fixture
def aws(mocked_aws: None) -> Any:
    return boto3.client("dynamodb")


def _new_table(client: Any) -> None:
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=TABLE)
    client.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)


# ------------------------------------------------------------------ data

study_strategy = st.fixed_dictionaries(
    {
        "patient": st.sampled_from(sorted(NAMES)),
        "date": st.dates(min_value=date(2019, 1, 1), max_value=date(2021, 12, 31)),
        "time": st.integers(0, 23 * 3600 + 3599),
        "accession": st.integers(1, 40),
        "series": st.lists(
            st.tuples(st.sampled_from(MODALITIES), st.integers(1, 2)), min_size=1, max_size=2
        ),
        "description": st.sampled_from(DESCRIPTIONS),
        # The study's last instance may carry another description: the index must follow.
        "late_description": st.none() | st.sampled_from(DESCRIPTIONS),
        "physician": st.sampled_from(PHYSICIANS),
    }
)


def _instances(spec: dict[str, Any], number: int) -> list[bytes]:
    study = f"1.2.826.0.1.3680043.8.498.{number}"
    hh, rest = divmod(spec["time"], 3600)
    out = []
    total = sum(count for _, count in spec["series"])
    for s_index, (modality, count) in enumerate(spec["series"], start=1):
        for i in range(count):
            last = len(out) == total - 1
            description = spec.get("description", "")
            if last and spec.get("late_description"):
                description = spec["late_description"]
            out.append(
                dicom_files.with_new_uids(
                    study=study,
                    series=f"{study}.{s_index}",
                    patient_id=spec["patient"],
                    SpecificCharacterSet="ISO_IR 192",
                    PatientName=NAMES[spec["patient"]],
                    StudyDate=spec["date"].strftime("%Y%m%d"),
                    StudyTime=f"{hh:02d}{rest // 60:02d}{rest % 60:02d}",
                    AccessionNumber=f"A{spec['accession']}",
                    Modality=modality,
                    SeriesNumber=s_index,
                    InstanceNumber=i + 1,
                    StudyDescription=description,
                    ReferringPhysicianName=spec.get("physician", ""),
                )
            )
    return out


def _load(client: Any, specs: list[dict[str, Any]]) -> list[InstanceRecord]:
    _new_table(client)
    index = DynamoInstanceIndex(client, TABLE, sleep=lambda _: None)
    records = []
    for number, spec in enumerate(specs, start=1):
        for data in _instances(spec, number):
            record = _record(validate(data), "AE", datetime.now(UTC))
            index.add(record)
            records.append(record)
    return records


# ------------------------------------------------------------------ reference


def _reference(query: Query, records: list[InstanceRecord]) -> list[str]:  # noqa: C901, PLR0912 - one branch per level
    """Keys of every dataset the matcher accepts, built from the records in memory."""
    import json

    datasets: list[tuple[str, dict[str, Any]]] = []
    level = query.level
    studies: dict[str, list[InstanceRecord]] = defaultdict(list)
    for r in records:
        studies[r.study_uid].append(r)
    if level == "STUDY":
        for uid, rs in studies.items():
            row = StudyRow(
                uid,
                json.loads(rs[-1].study_json),
                n_instances=len(rs),
                n_series=len({r.series_uid for r in rs}),
                modalities=tuple(sorted({r.modality for r in rs})),
                sop_classes=tuple(sorted({r.sop_class_uid for r in rs})),
            )
            datasets.append((uid, search_service.study_dataset(row, BASE)))
    elif level == "SERIES":
        series: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in records:
            series[r.series_uid].append(r)
        for uid, rs in series.items():
            if query.study_uid and rs[0].study_uid != query.study_uid:
                continue
            row = SeriesRow(
                rs[0].study_uid,
                uid,
                json.loads(rs[-1].series_json),
                json.loads(rs[-1].study_json),
                len(rs),
            )
            datasets.append((uid, search_service.series_dataset(row, BASE)))
    elif level == "INSTANCE":
        for r in records:
            if query.study_uid and r.study_uid != query.study_uid:
                continue
            row = InstanceRow(
                r.study_uid,
                r.series_uid,
                r.sop_instance_uid,
                json.loads(r.instance_json),
                json.loads(r.series_json),
                json.loads(r.study_json),
            )
            datasets.append((r.sop_instance_uid, search_service.instance_dataset(row, BASE)))
    else:
        patients: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in records:
            patients[r.patient_id].append(r)
        for pid, rs in patients.items():
            row = PatientRow(
                json.loads(rs[-1].patient_json),
                n_instances=len(rs),
                n_studies=len({r.study_uid for r in rs}),
                n_series=len({r.series_uid for r in rs}),
            )
            datasets.append((pid, search_service.patient_dataset(row)))
    return sorted(key for key, dataset in datasets if matches(query, dataset))


def _key(level: str, dataset: dict[str, Any]) -> str:
    tag = {"STUDY": "0020000D", "SERIES": "0020000E", "INSTANCE": "00080018", "PATIENT": "00100020"}
    return str(dataset[tag[level]]["Value"][0])


# ------------------------------------------------------------------ queries


@st.composite
def queries(  # noqa: C901, PLR0912, PLR0915 - one branch per kind of condition
    draw: st.DrawFn, records: list[InstanceRecord]
) -> tuple[str, dict[str, list[str]], str | None]:
    level = draw(st.sampled_from(["STUDY", "STUDY", "SERIES", "INSTANCE", "PATIENT"]))
    record = draw(st.sampled_from(records))
    params: dict[str, list[str]] = {}
    study_path = None
    options = ["PatientID", "PatientName", "fuzzy", "PatientName*", "PatientID*"]
    if level != "PATIENT":
        options += ["AccessionNumber", "StudyDate", "StudyDateTime", "StudyInstanceUID"]
        options += ["AccessionNumber*", "StudyDescription*", "ReferringPhysicianName*"]
    if level == "STUDY":
        options += ["ModalitiesInStudy"]
    if level in ("SERIES", "INSTANCE"):
        options += ["Modality", "SeriesInstanceUID", "study_path"]
    if level == "INSTANCE":
        options += ["SOPInstanceUID"]
    for choice in draw(st.lists(st.sampled_from(options), max_size=2, unique=True)):
        if choice == "PatientID":
            params["PatientID"] = [draw(st.sampled_from([record.patient_id, "P*", "P?", "X9"]))]
        elif choice == "PatientName":
            name = record.patient_name
            cut = draw(st.integers(1, len(name)))
            value = draw(st.sampled_from([name[:cut] + "*", name, "*" + name[cut - 1 :], "山田*"]))
            params["PatientName"] = [value.upper() if draw(st.booleans()) else value]
        elif choice == "fuzzy" and "PatientName" not in params:
            words = ["jo", "smith", "zoe", "JURG", "an", "mull jurg", "yam tar", "ng al", "dœ"]
            params["PatientName"] = [draw(st.sampled_from(words))]
            params["fuzzymatching"] = ["true"]
        elif choice.endswith("*"):
            keyword = choice[:-1]
            if keyword == "PatientName" and "fuzzymatching" in params:
                continue
            value = _attribute(record, keyword)
            pattern = draw(substrings(value)) if value else "*x*"
            if keyword in ("PatientName", "ReferringPhysicianName") and draw(st.booleans()):
                pattern = pattern.upper()
            params[keyword] = [pattern]
        elif choice == "AccessionNumber":
            params["AccessionNumber"] = [record.accession_number]
        elif choice == "StudyDate":
            day = record.study_date
            params["StudyDate"] = [
                draw(st.sampled_from([day, f"{day}-", f"-{day}", f"{day[:6]}01-{day[:6]}28"]))
            ]
        elif choice == "StudyDateTime":
            day = record.study_date
            params["StudyDate"] = [f"{day}-{day}"]
            params["StudyTime"] = [
                draw(st.sampled_from(["0000-1200", "1200-2359", f"{record.study_time[:4]}-"]))
            ]
        elif choice == "StudyInstanceUID":
            other = draw(st.sampled_from(records)).study_uid
            params["StudyInstanceUID"] = [
                draw(st.sampled_from([record.study_uid, f"{record.study_uid}\\{other}"]))
            ]
        elif choice == "ModalitiesInStudy":
            params["ModalitiesInStudy"] = [draw(st.sampled_from([*MODALITIES, "CT\\MR"]))]
        elif choice == "Modality":
            params["Modality"] = [draw(st.sampled_from(MODALITIES))]
        elif choice == "SeriesInstanceUID":
            params["SeriesInstanceUID"] = [record.series_uid]
        elif choice == "SOPInstanceUID":
            params["SOPInstanceUID"] = [record.sop_instance_uid]
        elif choice == "study_path":
            study_path = record.study_uid
            params.pop("StudyInstanceUID", None)
    if study_path:
        for key in (
            "PatientID",
            "PatientName",
            "fuzzymatching",
            "AccessionNumber",
            "StudyDate",
            "StudyTime",
            "StudyDescription",
            "ReferringPhysicianName",
        ):
            params.pop(key, None)
    return level, params, study_path


def _attribute(record: InstanceRecord, keyword: str) -> str:
    """A study-level text value of the record, as stored (PN: its first group)."""
    import json

    from shared._generated.dictionary import ATTRIBUTES

    values = (json.loads(record.study_json).get(ATTRIBUTES[keyword][0]) or {}).get("Value") or []
    if not values:
        return ""
    value = values[0]
    return (
        str(value.get("Alphabetic") or value.get("Ideographic") or "")
        if isinstance(value, dict)
        else str(value)
    )


@st.composite
def substrings(draw: st.DrawFn, value: str) -> str:
    """Wildcard forms over a stored value: ``*infix*``, ``start*end``, ``*ab?c*`` (one
    character replaced), a two-character infix (shorter than a trigram), a miss."""
    start = draw(st.integers(0, max(0, len(value) - 1)))
    end = draw(st.integers(start + 1, len(value)))
    infix = value[start:end]
    form = draw(st.sampled_from(["infix", "ends", "question", "short", "miss"]))
    if form == "ends" and len(value) >= 2:
        cut = draw(st.integers(1, len(value) - 1))
        return f"{value[:cut]}*{value[cut + (1 if cut < len(value) - 1 else 0) :]}"
    if form == "question" and len(infix) >= 2:
        at = draw(st.integers(0, len(infix) - 1))
        return f"*{infix[:at]}?{infix[at + 1 :]}*"
    if form == "short":
        return f"*{value[start : start + 2]}*"
    if form == "miss":
        return f"*{infix}Q*"
    return f"*{infix}*"


@settings(
    max_examples=6,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking reloads the table: too slow
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(specs=st.lists(study_strategy, min_size=4, max_size=14), data=st.data())
def test_index_backed_search_agrees_with_the_reference(
    aws: Any, specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    records = _load(aws, specs)
    catalog = DynamoSearch(aws, TABLE)
    operations: list[str] = []
    aws.meta.events.register(
        "before-call.dynamodb.*",
        lambda event_name, **_: operations.append(event_name.split(".")[-1]),
    )
    _agrees_with_the_reference(records, catalog, data)
    assert "Scan" not in operations
    assert set(operations) <= {
        "Query",
        "GetItem",
        "BatchGetItem",
        "TransactWriteItems",
        "DeleteTable",
        "CreateTable",
        "DescribeTable",
    }


def _stored_in(index: Any, specs: list[dict[str, Any]]) -> list[InstanceRecord]:
    """The instances of ``specs`` added to ``index``, as records."""
    records = []
    for number, spec in enumerate(specs, start=1):
        for instance in _instances(spec, number):
            record = _record(validate(instance), "AE", datetime.now(UTC))
            index.add(record)
            records.append(record)
    return records


def _agrees_with_the_reference(
    records: list[InstanceRecord], catalog: Any, data: st.DataObject
) -> None:
    for _ in range(25):
        level, params, study_path = data.draw(queries(records))
        query = parse({**params, "limit": [str(MAX_LIMIT)]}, level, study_uid=study_path)  # type: ignore[arg-type]
        result = search_service.search(query, catalog, BASE)
        got = [_key(level, d) for d in result.datasets]
        assert sorted(got) == _reference(query, records), (level, params, study_path)
        # Pages of 3 cut the same ordered list.
        paged: list[str] = []
        for offset in range(0, len(got) + 3, 3):
            page_query = parse(
                {**params, "limit": ["3"], "offset": [str(offset)]}, level, study_uid=study_path
            )  # type: ignore[arg-type]
            page = search_service.search(page_query, catalog, BASE)
            paged += [_key(level, d) for d in page.datasets]
            assert page.more == (offset + 3 < len(got))
        assert paged == got


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs=st.lists(study_strategy, min_size=4, max_size=14), data=st.data())
def test_sqlite_search_agrees_with_the_reference(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    from shared.adapters import sqlite_catalog

    # Half the time every substring search takes the plan for many candidates (walk the
    # date index, test each study against them).
    many = sqlite_catalog.MANY_CANDIDATES
    sqlite_catalog.MANY_CANDIDATES = data.draw(st.sampled_from([many, 0]))
    try:
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "index.sqlite3"
            records = _stored_in(SqliteIndex(path), specs)
            _agrees_with_the_reference(records, SqliteCatalog(path), data)
    finally:
        sqlite_catalog.MANY_CANDIDATES = many


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs=st.lists(study_strategy, min_size=4, max_size=14), data=st.data())
def test_fake_search_agrees_with_the_reference(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    index = FakeIndex()
    records = _stored_in(index, specs)
    _agrees_with_the_reference(records, FakeSearchCatalog(index), data)


# ------------------------------------------------------------------ no Scan, per query kind

KINDS = [
    ("STUDY", {"StudyInstanceUID": ["{study}"]}, None, set()),
    ("STUDY", {"PatientID": ["P3"]}, None, {"ByPatientId"}),
    ("STUDY", {"AccessionNumber": ["A2"]}, None, {"ByAccession"}),
    ("STUDY", {"StudyDate": ["20200101-20200131"]}, None, {"ByList"}),
    ("STUDY", {"PatientName": ["doe*"]}, None, {"ByPatientName"}),
    ("STUDY", {"PatientName": ["Doe^Jane"]}, None, {"ByPatientName"}),
    ("STUDY", {"ModalitiesInStudy": ["MR"]}, None, {"ByModality"}),
    ("STUDY", {}, None, {"ByList"}),
    ("SERIES", {"SeriesInstanceUID": ["{series}"]}, None, {"BySeriesUid"}),
    ("SERIES", {"Modality": ["CT"]}, None, {"ByModality"}),
    ("SERIES", {}, "{study}", {""}),
    ("INSTANCE", {"SOPInstanceUID": ["{sop}"]}, None, {""}),  # + its study's series (counts)
    ("INSTANCE", {"SeriesInstanceUID": ["{series}"]}, None, {"BySeriesUid", ""}),
    ("INSTANCE", {}, "{study}", {""}),
    ("PATIENT", {"PatientID": ["P3"]}, None, {""}),
    ("PATIENT", {"PatientName": ["SMI*"]}, None, {"ByPatientName"}),
    ("PATIENT", {}, None, {"ByList"}),
]


@pytest.mark.parametrize(("level", "params", "study", "indexes"), KINDS)
def test_every_query_kind_uses_query_or_get_never_scan(
    aws: Any, level: str, params: dict[str, list[str]], study: str | None, indexes: set[str]
) -> None:
    specs = [
        {
            "patient": p,
            "date": date(2020, 1, 5 + n),
            "time": 3600 * n,
            "accession": n,
            "series": [("CT", 1), ("MR", 1)],
        }
        for n, p in enumerate(["P1", "P3", "P5", "P3"])
    ]
    records = _load(aws, specs)
    target = records[2]
    names = {"study": target.study_uid, "series": target.series_uid, "sop": target.sop_instance_uid}
    params = {k: [v.format(**names) for v in vs] for k, vs in params.items()}
    calls: list[tuple[str, str]] = []

    def record_call(event_name: str, params: dict[str, Any], **_: Any) -> None:
        calls.append((event_name.rsplit(".", maxsplit=1)[-1], params.get("IndexName", "")))

    aws.meta.events.register("before-parameter-build.dynamodb.*", record_call)
    query = parse(params, level, study_uid=study.format(**names) if study else None)  # type: ignore[arg-type]
    result = search_service.search(query, DynamoSearch(aws, TABLE), BASE)
    assert result.datasets
    assert {op for op, _ in calls} <= {"Query", "GetItem", "BatchGetItem"}
    assert {index for op, index in calls if op == "Query"} == indexes
    assert sorted(_key(level, d) for d in result.datasets) == _reference(query, records)


def test_store_corpus_pn_round_trip(aws: Any) -> None:
    """Non-Latin names of real files come back as the same Unicode strings."""
    from pydicom.data import get_charset_files

    _new_table(aws)
    index = DynamoInstanceIndex(aws, TABLE)
    expected = {}
    for name in ("chrH31.dcm", "chrX1.dcm", "chrKoreanMulti.dcm", "chrFren.dcm", "chrRuss.dcm"):
        data = Path(get_charset_files(name)[0]).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        index.add(_record(validate(data), "AE", datetime.now(UTC)))
        pn = ds.PatientName
        expected[str(ds.PatientID)] = {
            k: v
            for k, v in (
                ("Alphabetic", pn.alphabetic),
                ("Ideographic", pn.ideographic),
                ("Phonetic", pn.phonetic),
            )
            if v
        }
    result = search_service.search(parse({}, "STUDY"), DynamoSearch(aws, TABLE), BASE)
    got = {d["00100020"]["Value"][0]: d["00100010"]["Value"][0] for d in result.datasets}
    assert got == expected
    assert all(
        d["00080005"]["Value"] == ["ISO_IR 192"]
        for d in result.datasets
        if not d["00100020"]["Value"][0].startswith("SCS")
    )


# ------------------------------------------------------------------ after deletions


def _kept_in(
    index: Any, specs: list[dict[str, Any]], objects: FakeObjectStore
) -> list[InstanceRecord]:
    """As :func:`_stored_in`, the bytes kept in ``objects`` too (a DELETE sweeps them)."""
    records = []
    for number, spec in enumerate(specs, start=1):
        for instance in _instances(spec, number):
            record = _record(validate(instance), "AE", datetime.now(UTC))
            objects.put(record.blob_key, instance)
            index.add(record)
            records.append(record)
    return records


def _delete_some(
    index: Any, catalog: Any, records: list[InstanceRecord], data: st.DataObject, objects: Any
) -> list[InstanceRecord]:
    """DELETE a few studies, series and instances (the delete service); the records that
    remain, in the order they were stored: the reference's data."""
    picks = data.draw(
        st.lists(
            st.tuples(st.sampled_from(records), st.sampled_from(["STUDY", "SERIES", "INSTANCE"])),
            min_size=1,
            max_size=4,
        )
    )
    gone: list[Target] = []
    for record, level in picks:
        target = Target(
            record.study_uid,
            record.series_uid if level != "STUDY" else None,
            record.sop_instance_uid if level == "INSTANCE" else None,
        )
        with contextlib.suppress(NotFound):
            lifecycle.delete(
                target, objects=objects, index=index, retention_days=0, catalog=catalog
            )
        gone.append(target)
    return [
        r
        for r in records
        if not any(t.holds((r.study_uid, r.series_uid, r.sop_instance_uid)) for t in gone)
    ]


@settings(
    max_examples=4,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(specs=st.lists(study_strategy, min_size=4, max_size=10), data=st.data())
def test_dynamodb_search_after_deletions_agrees_with_the_reference(
    aws: Any, specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    _new_table(aws)
    index, objects = DynamoInstanceIndex(aws, TABLE, sleep=lambda _: None), FakeObjectStore()
    records = _kept_in(index, specs, objects)
    left = _delete_some(index, DynamoSearch(aws, TABLE), records, data, objects)
    _agrees_with_the_reference(left, DynamoSearch(aws, TABLE), data)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs=st.lists(study_strategy, min_size=4, max_size=10), data=st.data())
def test_sqlite_and_fake_search_after_deletions_agree_with_the_reference(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "index.sqlite3"
        index, objects = SqliteIndex(path), FakeObjectStore()
        records = _kept_in(index, specs, objects)
        left = _delete_some(index, SqliteCatalog(path), records, data, objects)
        _agrees_with_the_reference(left, SqliteCatalog(path), data)
    fake, objects = FakeIndex(), FakeObjectStore()
    records = _kept_in(fake, specs, objects)
    left = _delete_some(fake, FakeSearchCatalog(fake), records, data, objects)
    _agrees_with_the_reference(left, FakeSearchCatalog(fake), data)
