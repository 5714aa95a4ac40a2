"""The read-deidentified view: an invariant over every read route and its parameters.

Instances carrying generated identities (names, IDs, dates, accession numbers, institution,
physician, description, UIDs) are stored through STOW, on the embedded backend (files and
SQLite) and on S3 + DynamoDB + Secrets Manager (moto), the de-identified UIDs written at
store time. Then, for a key that has
``read-deidentified`` and not ``read``, hypothesis draws requests over every read route of
the template (QIDO-RS, WADO-RS, WADO-URI) with path UIDs that are de-identified, original,
of another level or unknown, and query parameters among matching keys, identifying values,
UIDs, ``anonymize``, ``includefield``, rendering and transfer-syntax options. For each:

* no answer body (gzip and base64 undone) or header holds an original UID, any part of the
  patient's name, the patient's ID, or another identifying value of the stored instances,
  as written, upper- or lower-case, in UTF-8 or UTF-16 (pixel data passes through the
  profile untouched, so the searched values are chosen not to occur in it), apart from
  the request's own text quoted back in an error message;
* a request naming an original UID (in its path, a QIDO UID matching key or WADO-URI's
  UID parameters) never reaches data: a 4xx, or an empty QIDO result.

Example tests check that the view does answer (by de-identified UIDs) and that a key with
``read`` keeps the normal view.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from pydicom.dataset import Dataset

from local.template import load as load_template
from shared import bootstrap, config, keys
from shared.dicom.uid_map import DICOM_UID_ROOT, map_uid
from shared.services import deidentified
from tests.support import dicom_files
from tests.support.handlers import Context, load, quiet
from tools.make_events import STUDIES, multipart_related, stow_event

EVENTS = Path(__file__).resolve().parents[2] / "events"
_FUNCTIONS = {"QidoFunction": "qido", "WadoRsFunction": "wado_rs", "WadoUriFunction": "wado_uri"}
_ROUTES = sorted(
    {
        (_FUNCTIONS[r.function], r.path)
        for r in load_template().routes
        if r.method == "GET" and r.function in _FUNCTIONS
    }
)
_RNG = random.Random(20261127)
_UID_PARAMS = {
    "StudyInstanceUID": "STUDY",
    "SeriesInstanceUID": "SERIES",
    "SOPInstanceUID": "INSTANCE",
    "studyUID": "STUDY",
    "seriesUID": "SERIES",
    "objectUID": "INSTANCE",
}


def _word(size: int = 9) -> str:
    return "".join(_RNG.choice("bcdfghjklmnpqrstvwxz") for _ in range(size)).capitalize()


@dataclass(frozen=True)
class Stored:
    """One stored instance: its UIDs, original and de-identified, and what identifies it."""

    uids: dict[str, str]  # level -> original UID
    deid: dict[str, str]  # level -> de-identified UID
    family: str
    given: str
    patient_id: str
    identifying: tuple[str, ...]  # every value that must never be answered


def _identity() -> dict[str, str]:
    """A patient and a study's identifying values, none of which occurs in CT_small's pixels."""
    family, given_name = _word(), _word(7)
    patient_id = f"PID{_RNG.randrange(10**8):08d}Q"
    return {
        "PatientName": f"{family}^{given_name}",
        "PatientID": patient_id,
        "PatientBirthDate": f"19{_RNG.randrange(20, 60)}0{_RNG.randrange(1, 9)}1{_RNG.randrange(1, 9)}",
        "StudyDate": f"20{_RNG.randrange(10, 20)}0{_RNG.randrange(1, 9)}2{_RNG.randrange(1, 9)}",
        "AccessionNumber": f"ACC{_RNG.randrange(10**7):07d}",
        "InstitutionName": f"{_word()} Hospital",
        "ReferringPhysicianName": f"{_word()}^{_word(6)}",
        "StudyDescription": f"{_word()} study",
        "SeriesDescription": f"{_word()} series",
        "StudyID": f"SID{_RNG.randrange(10**6):06d}",
    }


def _identity_file(study: str, series: str, values: dict[str, str]) -> tuple[bytes, Stored]:
    family, given_name = values["PatientName"].split("^")
    patient_id = values["PatientID"]
    data = dicom_files.with_new_uids("CT_small.dcm", study=study, series=series, **values)
    ds = pydicom.dcmread(io.BytesIO(data))
    uids = {
        "STUDY": str(ds.StudyInstanceUID),
        "SERIES": str(ds.SeriesInstanceUID),
        "INSTANCE": str(ds.SOPInstanceUID),
    }
    identifying = {
        v for k, v in values.items() if k not in ("PatientName", "ReferringPhysicianName")
    }
    identifying |= {family, given_name, *values["ReferringPhysicianName"].split("^")}
    identifying |= _uids_in(ds)
    stored = Stored(uids, {}, family, given_name, patient_id, tuple(sorted(identifying)))
    return data, stored


def _uids_in(ds: Dataset) -> set[str]:
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, list) else [element.value]
            found |= {str(v) for v in values if not str(v).startswith(DICOM_UID_ROOT)}
    return found


@dataclass(frozen=True)
class Archive:
    stored: list[Stored]
    key: bytes

    @property
    def forbidden(self) -> list[bytes]:
        needles: set[bytes] = set()
        for item in self.stored:
            for value in item.identifying:
                for text in {value, value.upper(), value.lower()}:
                    needles |= {text.encode(), text.encode("utf-16-le"), text.encode("utf-16-be")}
        return sorted(needles)


@contextlib.contextmanager
def backend(kind: str, data_dir: Path, patch: pytest.MonkeyPatch) -> Iterator[config.Settings]:
    """Settings of the embedded backend, or of S3 + DynamoDB + Secrets Manager on moto
    (tables and secret made from the template)."""
    if kind == "local":
        yield config.Settings(
            storage="local",
            data_dir=str(data_dir),
            inline_limit=64 << 20,  # every answer inline: the invariant reads every body
            local_url="http://127.0.0.1:9",
        )
        return
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
    for name, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ):
        patch.setenv(name, value)
    with mock_aws():
        template = load_template()
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(TableName="index", **template.tables["IndexTable"].create_args)
        boto3.client("s3").create_bucket(Bucket="dicom")
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name="anon", SecretString="moto anonymization key")
        yield config.Settings(
            storage="aws",
            bucket="dicom",
            table="index",
            anonymization_secret_id="anon",  # noqa: S106 - a secret's name
            inline_limit=64 << 20,
        )


@contextlib.contextmanager
def serving(built: bootstrap.Archive) -> Iterator[bootstrap.Archive]:
    """Every function these tests call answering from ``built``."""
    with contextlib.ExitStack() as stack:
        for name in (*_FUNCTIONS.values(), "stow"):
            stack.enter_context(_module(name).archive.using(built))
        yield built


@pytest.fixture(scope="module", params=["local", "moto"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    patch = pytest.MonkeyPatch()
    try:
        with backend(request.param, tmp_path_factory.mktemp("deid"), patch) as chosen:
            patch.setattr(config, "settings", lambda: chosen)
            with serving(bootstrap.build(chosen)) as built:
                yield _stored_archive(built)
    finally:
        patch.undo()


def _stored_archive(built: bootstrap.Archive) -> Archive:
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    files, stored = [], []
    first, second = _identity(), _identity()
    for index in range(3):  # two instances in one series, one in another study
        data, item = _identity_file(
            study if index < 2 else pydicom.uid.generate_uid(),
            series if index < 2 else pydicom.uid.generate_uid(),
            first if index < 2 else second,
        )
        files.append(data)
        stored.append(item)
    event = stow_event(STUDIES, "", multipart_related(files), "deid-stow")
    event["requestContext"]["authorizer"]["scopes"] = keys.STORE
    stow = _module("stow")
    with quiet(stow):
        response = stow.lambda_handler(event, Context())
    assert response["statusCode"] == 200, response["body"]
    key = built.anonymizer.key()
    with_deid = [
        Stored(
            s.uids,
            {level: map_uid(uid, key) for level, uid in s.uids.items()},
            s.family,
            s.given,
            s.patient_id,
            s.identifying,
        )
        for s in stored
    ]
    return Archive(with_deid, key)


_MODULES: dict[str, Any] = {}


def _module(name: str) -> Any:
    if name not in _MODULES:
        _MODULES[name] = load(name)
    return _MODULES[name]


def _sample_event(resource: str) -> dict[str, Any]:
    for path in sorted(EVENTS.glob("*.json")):
        if "preflight" in path.name:
            continue
        event = json.loads(path.read_text())
        if event.get("resource") == resource and event.get("httpMethod") == "GET":
            return event
    raise AssertionError(f"no sample event for {resource}")


def call(
    function: str,
    resource: str,
    path_parameters: dict[str, str],
    params: dict[str, list[str]] | None,
    *,
    scopes: str = keys.READ_DEIDENTIFIED,
    accept: str | None = None,
) -> dict[str, Any]:
    event = _sample_event(resource)
    path = resource
    for name, value in path_parameters.items():
        path = path.replace("{" + name + "}", value)
    event["path"] = path
    event["requestContext"]["path"] = "/v1" + path
    event["pathParameters"] = dict(path_parameters) or None
    event["multiValueQueryStringParameters"] = params or None
    event["queryStringParameters"] = {k: v[-1] for k, v in params.items()} if params else None
    event["requestContext"]["authorizer"]["scopes"] = scopes
    if accept is not None:
        event["headers"]["Accept"] = accept
        event["multiValueHeaders"]["Accept"] = [accept]
    event["headers"]["Accept-Encoding"] = "gzip"
    event["multiValueHeaders"]["Accept-Encoding"] = ["gzip"]
    module = _module(function)
    with quiet(module):
        response: dict[str, Any] = module.lambda_handler(event, Context())
    return response


def body_of(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    data = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        headers[k.lower()] = ",".join(str(v) for v in values)
    if headers.get("content-encoding") == "gzip":
        data = gzip.decompress(data)
    return data


def _headers_text(response: dict[str, Any]) -> bytes:
    parts = [f"{k}: {v}" for k, v in (response.get("headers") or {}).items()]
    for k, values in (response.get("multiValueHeaders") or {}).items():
        parts += [f"{k}: {v}" for v in values]
    return "\n".join(parts).encode()


# ---------------------------------------------------------------------------- strategies

#: How a request names instances: mostly by the de-identified UIDs of one instance (so
#: that answers hold data), else with an original UID, a UID of another level, of another
#: instance, or an unknown one.
_KINDS = ("deid",) * 6 + ("original", "deid-other-level", "deid-other-item", "unknown")


@st.composite
def _uid(draw: st.DrawFn, archive: Archive, level: str, item: Stored) -> tuple[str, bool]:
    """A UID for a path or UID parameter, and whether it is an original one."""
    kind = draw(st.sampled_from(_KINDS))
    if kind == "deid":
        return item.deid[level], False
    if kind == "original":
        return draw(st.sampled_from(archive.stored)).uids[level], True
    if kind == "deid-other-level":
        other = draw(st.sampled_from([lv for lv in item.deid if lv != level]))
        return item.deid[other], False
    if kind == "deid-other-item":
        return draw(st.sampled_from(archive.stored)).deid[level], False
    return "2.25." + str(draw(st.integers(1, 10**30))), False


def _identifying_values(archive: Archive) -> list[str]:
    values: list[str] = []
    for item in archive.stored:
        values += [
            item.family,
            f"{item.family}^{item.given}",
            f"{item.family[:3]}*",
            item.patient_id,
            *item.identifying[:4],
        ]
    return values


_OTHER_VALUES = [
    "", "*", "all", "true", "false", "yes", "no", "CT", "1", "0", "10", "2", "-1",
    "application/dicom", "image/jpeg", "image/png", "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50", "original", "19000101-20991231", "00100010", "PatientName",
    "512", "100,100", "WADO",
]  # fmt: skip
_PARAM_NAMES = [
    "PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber",
    "InstitutionName", "ReferringPhysicianName", "StudyDescription", "StudyID", "Modality",
    "SeriesNumber", "InstanceNumber", "includefield", "fuzzymatching", "limit", "offset",
    "anonymize", "00100010", "00100020", "contentType", "transferSyntax", "rows", "columns",
    "frameNumber", "windowCenter", "windowWidth", "viewport", "quality", "window",
    "ModalitiesInStudy", "SOPClassUID", "RequestAttributesSequence.ScheduledProcedureStepID",
    "Manufacturer", "BodyPartExamined", "ManufacturerModelName",
]  # fmt: skip
_ACCEPTS = [
    *[None] * 8,  # the sample event's, which suits its route
    "*/*",
    "application/dicom+json",
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "image/jpeg",
    "image/png",
]


@st.composite
def requests(draw: st.DrawFn, archive: Archive) -> tuple[str, str, dict[str, str], dict, bool]:
    """A request of any read route: (function, resource, path parameters, query, whether
    it names an original UID where UIDs select data)."""
    function = draw(st.sampled_from(sorted(_FUNCTIONS.values())))  # WADO-URI: one route
    resource = draw(st.sampled_from([r for f, r in _ROUTES if f == function]))
    item = draw(st.sampled_from(archive.stored))
    original = False
    path: dict[str, str] = {}
    for name, level in (("STUDY", "STUDY"), ("SERIES", "SERIES"), ("INSTANCE", "INSTANCE")):
        if "{" + name + "}" in resource:
            uid, was_original = draw(_uid(archive, level, item))
            path[name] = uid
            original |= was_original
    if "{AET}" in resource:
        path["AET"] = "AET"
    if "{FRAMES}" in resource:
        path["FRAMES"] = draw(st.sampled_from(["1", "1,1", "2"]))
    if "{PATH}" in resource:
        path["PATH"] = draw(st.sampled_from(["7FE00010", "00100010", "00420011", "x"]))
    params: dict[str, list[str]] = {}
    if function == "wado_uri":
        params["requestType"] = ["WADO"]
        for name in ("studyUID", "seriesUID", "objectUID"):
            uid, was_original = draw(_uid(archive, _UID_PARAMS[name], item))
            params[name] = [uid]
            original |= was_original
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        name = draw(st.sampled_from([*_PARAM_NAMES, *list(_UID_PARAMS)[:3]]))
        if name in _UID_PARAMS:
            uid, was_original = draw(_uid(archive, _UID_PARAMS[name], item))
            params[name] = [uid]
            original |= was_original and function == "qido"  # WADO-RS ignores them
        else:
            pool = _identifying_values(archive) + _OTHER_VALUES
            params[name] = [draw(st.sampled_from(pool))]
    return function, resource, path, params, original


# ---------------------------------------------------------------------------- the invariant


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_request_of_a_deidentified_key_reaches_an_identity(archive: Archive, data) -> None:
    function, resource, path, params, original = data.draw(requests(archive))
    accept = data.draw(st.sampled_from(_ACCEPTS))
    response = call(function, resource, path, params, accept=accept)
    status = response["statusCode"]
    assert status != 500, (resource, path, params, response.get("body"))
    body = body_of(response)
    if status >= 400:
        # An error message may quote what the request said: the client's own words, not data.
        sent = [*path.values(), *(v for values in params.values() for v in values)]
        for text in sorted(sent, key=len, reverse=True):
            if text:
                body = body.replace(text.encode(), b"")
    haystack = body + b"\n" + _headers_text(response)
    for needle in archive.forbidden:
        assert needle not in haystack, (resource, path, params, status, needle)
    if original and 200 <= status < 300 and not resource.endswith(("/changefeed", "/latest")):
        # A request naming an original UID reaches nothing: QIDO finds no result. (The
        # change feed filters on nothing: it lists every change, de-identified, whatever
        # parameter it is sent; the check above holds for it.)
        assert function == "qido", (resource, path, params, status)
        assert status == 204 or json.loads(body_of(response)) == [], (resource, path, params)


# ---------------------------------------------------------------------------- examples


def _qido(path: str, params: dict[str, list[str]] | None = None, **kw: Any) -> dict[str, Any]:
    resource = "/o3-dpacs-wado/qido/{AET}/" + path
    return call("qido", resource, {"AET": "AET"}, params, **kw)


def test_qido_answers_by_deidentified_uids_with_deidentified_results(archive: Archive) -> None:
    first = archive.stored[0]
    response = _qido("studies", {"includefield": ["all"]})
    assert response["statusCode"] == 200
    results = json.loads(body_of(response))
    studies = {r["0020000D"]["Value"][0] for r in results}
    assert studies == {s.deid["STUDY"] for s in archive.stored}
    for result in results:
        assert "Value" not in result.get("00100010", {})  # PatientName: zero length
        assert "Value" not in result.get("00080020", {})  # StudyDate: zero length
        (url,) = result["00081190"]["Value"]
        assert url.endswith("/studies/" + result["0020000D"]["Value"][0])
    by_uid = _qido("studies", {"StudyInstanceUID": [first.deid["STUDY"]]})
    assert [r["0020000D"]["Value"][0] for r in json.loads(body_of(by_uid))] == [first.deid["STUDY"]]
    instances = call(
        "qido",
        "/o3-dpacs-wado/rs/studies/{STUDY}/series/{SERIES}/instances",
        {"STUDY": first.deid["STUDY"], "SERIES": first.deid["SERIES"]},
        None,
    )
    found = {r["00080018"]["Value"][0] for r in json.loads(body_of(instances))}
    assert first.deid["INSTANCE"] in found and len(found) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"PatientName": ["Z*"]},
        {"PatientID": ["PID*"]},
        {"StudyDate": ["19000101-20991231"]},
        {"AccessionNumber": ["ACC1"]},
        {"RequestAttributesSequence.ScheduledProcedureStepID": ["1"]},
    ],
)
def test_qido_refuses_identifying_matching_keys(archive: Archive, params) -> None:
    assert _qido("studies", params)["statusCode"] == 400


def test_qido_return_keys_are_allowed_and_deidentified(archive: Archive) -> None:
    response = _qido("studies", {"PatientName": [""], "PatientID": [""]})
    assert response["statusCode"] == 200
    for result in json.loads(body_of(response)):
        assert result["00100020"].get("Value") in (None, ["ANONYMIZED"])


def test_the_patients_resource_is_refused(archive: Archive) -> None:
    assert _qido("patients")["statusCode"] == 403


def test_wado_answers_by_deidentified_uids_and_404s_original_ones(archive: Archive) -> None:
    item = archive.stored[0]
    resource = "/o3-dpacs-wado/rs/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}"
    deid = {"STUDY": item.deid["STUDY"], "SERIES": item.deid["SERIES"]}
    deid["INSTANCE"] = item.deid["INSTANCE"]
    metadata = call("wado_rs", resource + "/metadata", deid, None)
    assert metadata["statusCode"] == 200
    (document,) = json.loads(body_of(metadata))
    assert document["00080018"]["Value"] == [item.deid["INSTANCE"]]
    assert document["00120062"]["Value"] == ["YES"]  # Patient Identity Removed
    retrieved = call("wado_rs", resource, deid, None)
    assert retrieved["statusCode"] == 200
    frames = call(
        "wado_rs",
        resource + "/frames/{FRAMES}",
        {**deid, "FRAMES": "1"},
        None,
        accept='multipart/related; type="application/octet-stream"; transfer-syntax=*',
    )
    assert frames["statusCode"] == 200
    assert call("wado_rs", resource + "/rendered", deid, None)["statusCode"] == 200
    uri = call(
        "wado_uri",
        "/o3-dpacs-wado/wado",
        {},
        {
            "requestType": ["WADO"],
            "studyUID": [deid["STUDY"]],
            "seriesUID": [deid["SERIES"]],
            "objectUID": [deid["INSTANCE"]],
            "contentType": ["application/dicom"],
        },
    )
    assert uri["statusCode"] == 200
    served = pydicom.dcmread(io.BytesIO(body_of(uri)))
    assert served.SOPInstanceUID == item.deid["INSTANCE"]
    assert served.PatientIdentityRemoved == "YES"
    originals = {"STUDY": item.uids["STUDY"], "SERIES": item.uids["SERIES"]}
    originals["INSTANCE"] = item.uids["INSTANCE"]
    assert call("wado_rs", resource, originals, None)["statusCode"] == 404
    assert call("wado_rs", resource + "/metadata", originals, None)["statusCode"] == 404
    off = call("wado_rs", resource, deid, {"anonymize": ["false"]})
    assert off["statusCode"] == 403


def test_a_key_with_read_keeps_the_normal_view(archive: Archive) -> None:
    item = archive.stored[0]
    for scopes in (keys.READ, f"{keys.READ},{keys.READ_DEIDENTIFIED}"):
        response = _qido("studies", {"PatientID": [item.patient_id]}, scopes=scopes)
        (result,) = json.loads(body_of(response))
        assert result["0020000D"]["Value"] == [item.uids["STUDY"]]
        assert result["00100020"]["Value"] == [item.patient_id]
        resource = "/o3-dpacs-wado/rs/studies/{STUDY}/metadata"
        normal = call("wado_rs", resource, {"STUDY": item.uids["STUDY"]}, None, scopes=scopes)
        assert normal["statusCode"] == 200
        assert item.family.encode() in body_of(normal)
        by_deid = call("wado_rs", resource, {"STUDY": item.deid["STUDY"]}, None, scopes=scopes)
        assert by_deid["statusCode"] == 404


def test_matchable_keys_are_kept_unchanged_by_the_profile() -> None:
    from shared._generated.dictionary import ATTRIBUTES
    from shared.dicom import anonymize

    table = anonymize.action_table()
    for keyword in deidentified.MATCHABLE:
        tag, vr = ATTRIBUTES[keyword][0], ATTRIBUTES[keyword][1]
        assert table.action(int(tag, 16)) is None, keyword
        assert int(tag, 16) not in anonymize.EXTRA_ACTIONS, keyword
        assert vr not in ("PN", "UN", "SQ"), keyword


def test_the_audit_names_the_stored_uids_a_deidentified_request_read(archive: Archive) -> None:
    item = archive.stored[0]
    resource = "/o3-dpacs-wado/rs/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}"
    path = {level: item.deid[level] for level in ("STUDY", "SERIES", "INSTANCE")}
    records: list[dict[str, Any]] = []
    sink = type("Sink", (), {"write": lambda self, record: records.append(record)})()
    with serving(bootstrap.build(config.settings(), audit=sink)):
        assert call("wado_rs", resource + "/metadata", path, None)["statusCode"] == 200
        assert _qido("studies", {"StudyInstanceUID": [item.deid["STUDY"]]})["statusCode"] == 200
    wado, qido = records
    assert item.uids["INSTANCE"] in wado["instances"]
    assert item.deid["INSTANCE"] in wado["instances"]
    assert item.uids["STUDY"] in qido["studies"]


def test_retrieve_urls_are_rebuilt_with_replaced_uids_or_dropped() -> None:
    base = "https://h.example/v1/o3-dpacs-wado"

    def replace(uid: str) -> str:
        return f"2.25.{uid}"

    rebuilt = deidentified._url_with(f"{base}/rs/studies/1/series/2/instances/3", base, replace)
    assert rebuilt == f"{base}/rs/studies/2.25.1/series/2.25.2/instances/2.25.3"
    assert deidentified._url_with(f"{base}/rs/studies/1", base, replace) == (
        f"{base}/rs/studies/2.25.1"
    )
    assert deidentified._url_with("https://elsewhere/rs/studies/1", base, replace) == ""
    assert deidentified._url_with(f"{base}/rs/studies/1/frames/2", base, replace) == ""
