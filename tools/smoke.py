"""Smoke test of a deployed (or local) archive: every route once, pass or fail per route.

    dicomweb-smoke --url https://{api}.execute-api.{region}.amazonaws.com/v1/o3-dpacs-wado \\
        --key o3k_...

It stores one small synthetic CT image (generated here with pydicom: 64 x 64 pixels,
patient ``SMOKE^TEST``, fixed UIDs under 2.25, so every run sends the same bytes and the
archive keeps one copy however often it runs), then searches it at every QIDO level,
retrieves it through every WADO-RS resource and WADO-URI, checks that a request without a
key (and with a wrong one) is refused with 401 and that CORS preflights need no key.
Prints one line per check and exits 1 when any failed. Standard library and pydicom only.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

AET = "SMOKE"
PATIENT_ID = "SMOKE-TEST-0001"
# Fixed UIDs (2.25 = UUID-derived roots, PS3.5 B.2): one smoke study per archive, ever.
STUDY_UID = "2.25.238271178713418356386409545102347658601"
SERIES_UID = "2.25.238271178713418356386409545102347658602"
SOP_UID = "2.25.238271178713418356386409545102347658603"
SIDE = 64
BOUNDARY = "SMOKEBOUNDARY"
DICOM_JSON = "application/dicom+json"
TIMEOUT_S = 35.0


def smoke_instance() -> bytes:
    """A small, valid CT image Part 10 file; the same bytes every time."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(SOP_UID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("2.25.238271178713418356386409545102347658600")
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientName = "SMOKE^TEST"
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.AccessionNumber = "SMOKE0001"
    ds.StudyDescription = "Smoke test (synthetic, no patient)"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    # A diagonal ramp: every frame request, rendering and thumbnail has real pixels.
    ramp = bytearray()
    for row in range(SIDE):
        for column in range(SIDE):
            ramp += ((row + column) * 32).to_bytes(2, "little")
    ds.PixelData = bytes(ramp)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ---------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Reply:
    """What came back."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        """A response header ('' when absent), matched case-insensitively."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""

    def json(self) -> object:
        """The body as JSON."""
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # 303s are followed by hand, without the API key (presigned URLs)


_OPENER = urllib.request.build_opener(_NoRedirect)


def send(method: str, url: str, headers: Mapping[str, str], body: bytes | None = None) -> Reply:
    """One request; a 303 is followed to its Location (a presigned URL) without headers."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)  # noqa: S310 - the user's URL
    try:
        with _OPENER.open(request, timeout=TIMEOUT_S) as response:
            reply = Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        reply = Reply(error.code, dict(error.headers.items()), error.read())
    if reply.status == 303 and method == "GET":
        location = reply.header("Location")
        target = urllib.request.Request(location, method="GET")  # noqa: S310 - the API's redirect
        with urllib.request.urlopen(target, timeout=TIMEOUT_S) as response:  # noqa: S310
            return Reply(response.status, dict(response.headers.items()), response.read())
    return reply


# ---------------------------------------------------------------------------- checks

Expect = Callable[[Reply], str | None]


@dataclass(frozen=True)
class Check:
    """One request and what its answer must be; ``route`` is the template's resource."""

    name: str
    method: str
    route: str
    path: str
    expect: Expect
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    key: str | None = "valid"  # "valid", "wrong" or None (no Authorization header)
    #: The path found at run time from (base URL, key), for what only an answer names.
    late_path: Callable[[str, str], str] | None = None


def _status(*wanted: int) -> Expect:
    def check(reply: Reply) -> str | None:
        return None if reply.status in wanted else f"status {reply.status}, wanted {wanted}"

    return check


def _all(*expects: Expect) -> Expect:
    def check(reply: Reply) -> str | None:
        for expect in expects:
            problem = expect(reply)
            if problem:
                return problem
        return None

    return check


def _media(prefix: str) -> Expect:
    def check(reply: Reply) -> str | None:
        found = reply.header("Content-Type")
        return None if found.startswith(prefix) else f"Content-Type {found!r}, wanted {prefix}"

    return check


def _json_uids(tag: str, uid: str) -> Expect:
    """A DICOM JSON array in which some dataset has ``uid`` in ``tag``."""

    def check(reply: Reply) -> str | None:
        try:
            document = reply.json()
        except ValueError:
            return "the body is not JSON"
        if not isinstance(document, list):
            return "the body is not a JSON array"
        for item in document:
            if isinstance(item, dict) and uid in (item.get(tag) or {}).get("Value", []):
                return None
        return f"no result with {tag} = the smoke instance's UID"

    return check


def _contains(needle: bytes, what: str) -> Expect:
    def check(reply: Reply) -> str | None:
        return None if needle in reply.body else f"the body holds no {what}"

    return check


def _image(magic: bytes) -> Expect:
    def check(reply: Reply) -> str | None:
        return None if reply.body.startswith(magic) else "the body is not the expected image"

    return check


def _pixels_inside(reply: Reply) -> str | None:
    return None if len(reply.body) >= SIDE * SIDE * 2 else "fewer bytes than one frame"


def _stored(reply: Reply) -> str | None:
    if reply.status != 200:
        return f"status {reply.status}: {reply.body[:300]!r}"
    text = reply.body.decode("utf-8", "replace")
    return None if SOP_UID in text else "the instance is not in ReferencedSOPSequence"


def _cors(reply: Reply) -> str | None:
    if reply.status not in (200, 204):
        return f"status {reply.status}"
    if not reply.header("Access-Control-Allow-Origin"):
        return "no Access-Control-Allow-Origin"
    methods = reply.header("Access-Control-Allow-Methods")
    return None if methods else "no Access-Control-Allow-Methods"


def _refused(reply: Reply) -> str | None:
    if reply.status != 401:
        return f"status {reply.status}, wanted 401"
    return None if SOP_UID.encode() not in reply.body else "the refusal leaked data"


_STUDY = f"studies/{STUDY_UID}"
_SERIES = f"{_STUDY}/series/{SERIES_UID}"
_INSTANCE = f"{_SERIES}/instances/{SOP_UID}"
_R_STUDY = "/o3-dpacs-wado/rs/studies/{STUDY}"
_R_SERIES = _R_STUDY + "/series/{SERIES}"
_R_INSTANCE = _R_SERIES + "/instances/{INSTANCE}"
_STUDY_TAG, _SERIES_TAG, _SOP_TAG, _PATIENT_TAG = "0020000D", "0020000E", "00080018", "00100020"
_DICOM_PARTS = 'multipart/related; type="application/dicom"'
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG"


def _stow_body(data: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _stow_checks(data: bytes) -> list[Check]:
    headers = {
        "Content-Type": f"{_DICOM_PARTS}; boundary={BOUNDARY}",
        "Accept": DICOM_JSON,
    }
    body = _stow_body(data)
    stow = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies"
    return [
        Check(
            "STOW-RS store", "POST", stow, f"stowRsListener/{AET}/studies", _stored, headers, body
        ),
        Check(
            "STOW-RS store in a study",
            "POST",
            stow + "/{STUDY_UID}",
            f"stowRsListener/{AET}/{_STUDY}",
            _stored,
            headers,
            body,
        ),
        Check(
            "STOW-RS store (rs root)",
            "POST",
            "/o3-dpacs-wado/rs/studies",
            "rs/studies",
            _stored,
            headers,
            body,
        ),
        Check(
            "STOW-RS store in a study (rs root)",
            "POST",
            _R_STUDY,
            f"rs/{_STUDY}",
            _stored,
            headers,
            body,
        ),
    ]


def _qido_checks() -> list[Check]:
    q = "/o3-dpacs-wado/qido/{AET}"
    rs = "/o3-dpacs-wado/rs"
    by_patient = f"PatientID={PATIENT_ID}"
    found: list[Check] = [
        Check(
            "QIDO patients",
            "GET",
            f"{q}/patients",
            f"qido/{AET}/patients?{by_patient}",
            _all(_status(200), _json_uids(_PATIENT_TAG, PATIENT_ID)),
        )
    ]
    searches = [
        ("studies", "/studies", f"studies?{by_patient}", _STUDY_TAG, STUDY_UID),
        ("series", "/series", f"series?{by_patient}", _SERIES_TAG, SERIES_UID),
        ("study's series", "/studies/{STUDY}/series", f"{_STUDY}/series", _SERIES_TAG, SERIES_UID),
        ("instances", "/instances", f"instances?SOPInstanceUID={SOP_UID}", _SOP_TAG, SOP_UID),
        (
            "study's instances",
            "/studies/{STUDY}/instances",
            f"{_STUDY}/instances",
            _SOP_TAG,
            SOP_UID,
        ),
        (
            "series' instances",
            "/studies/{STUDY}/series/{SERIES}/instances",
            f"{_SERIES}/instances",
            _SOP_TAG,
            SOP_UID,
        ),
    ]
    for label, route, path, tag, uid in searches:
        expect = _all(_status(200), _media(DICOM_JSON), _json_uids(tag, uid))
        found.append(Check(f"QIDO {label}", "GET", q + route, f"qido/{AET}/{path}", expect))
        found.append(Check(f"QIDO {label} (rs root)", "GET", rs + route, f"rs/{path}", expect))
    return found


def _wado_checks() -> list[Check]:
    multipart = _all(_status(200), _media("multipart/related"), _contains(b"DICM", "Part 10 file"))
    metadata = _all(_status(200), _media(DICOM_JSON), _json_uids(_SOP_TAG, SOP_UID))
    frames = _all(_status(200), _media("multipart/related"), _pixels_inside)
    jpeg = _all(_status(200), _media("image/jpeg"), _image(_JPEG))
    octets = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    wado_uri = f"wado?requestType=WADO&studyUID={STUDY_UID}&seriesUID={SERIES_UID}"
    wado_uri += f"&objectUID={SOP_UID}"
    found = [
        Check("WADO-RS study", "GET", _R_STUDY, f"rs/{_STUDY}", multipart),
        Check("WADO-RS series", "GET", _R_SERIES, f"rs/{_SERIES}", multipart),
        Check("WADO-RS instance", "GET", _R_INSTANCE, f"rs/{_INSTANCE}", multipart),
        Check(
            "WADO-RS study metadata",
            "GET",
            f"{_R_STUDY}/metadata",
            f"rs/{_STUDY}/metadata",
            metadata,
        ),
        Check(
            "WADO-RS series metadata",
            "GET",
            f"{_R_SERIES}/metadata",
            f"rs/{_SERIES}/metadata",
            metadata,
        ),
        Check(
            "WADO-RS instance metadata",
            "GET",
            f"{_R_INSTANCE}/metadata",
            f"rs/{_INSTANCE}/metadata",
            metadata,
        ),
        Check(
            "WADO-RS frames",
            "GET",
            f"{_R_INSTANCE}/frames/{{FRAMES}}",
            f"rs/{_INSTANCE}/frames/1",
            frames,
            octets,
        ),
    ]
    for level, route, path in (
        ("study", _R_STUDY, _STUDY),
        ("series", _R_SERIES, _SERIES),
        ("instance", _R_INSTANCE, _INSTANCE),
        ("frame", f"{_R_INSTANCE}/frames/{{FRAMES}}", f"{_INSTANCE}/frames/1"),
    ):
        found.append(
            Check(
                f"WADO-RS {level} rendered",
                "GET",
                f"{route}/rendered",
                f"rs/{path}/rendered",
                jpeg,
                {"Accept": "image/jpeg"},
            )
        )
        found.append(
            Check(
                f"WADO-RS {level} thumbnail",
                "GET",
                f"{route}/thumbnail",
                f"rs/{path}/thumbnail",
                jpeg,
                {"Accept": "image/jpeg"},
            )
        )
    found += [
        Check(
            "WADO-RS bulk data (pixel data)",
            "GET",
            f"{_R_INSTANCE}/bulk/{{PATH}}",
            "",
            _all(_status(200), _pixels_inside),
            {"Accept": 'multipart/related; type="application/octet-stream"'},
            late_path=_bulk_path,
        ),
        Check(
            "WADO-URI Part 10",
            "GET",
            "/o3-dpacs-wado/wado",
            f"{wado_uri}&contentType=application%2Fdicom",
            _all(_status(200), _media("application/dicom"), _contains(b"DICM", "Part 10 file")),
        ),
        Check(
            "WADO-URI PNG",
            "GET",
            "/o3-dpacs-wado/wado",
            f"{wado_uri}&contentType=image%2Fpng&windowCenter=40&windowWidth=400",
            _all(_status(200), _media("image/png"), _image(_PNG)),
        ),
    ]
    return found


_UPLOADS = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/uploads"


def _json_fields(*names: str) -> Expect:
    def check(reply: Reply) -> str | None:
        try:
            document = json.loads(reply.body)
        except ValueError:
            return "the answer is not JSON"
        missing = [n for n in names if not isinstance(document, dict) or n not in document]
        return f"the answer has no {', '.join(missing)}" if missing else None

    return check


def _json_entries(reply: Reply) -> str | None:
    """A JSON array of change feed entries, each with its Sequence and Action."""
    try:
        document = json.loads(reply.body)
    except ValueError:
        return "the answer is not JSON"
    if not isinstance(document, list):
        return "the answer is not a JSON array"
    bad = [
        e for e in document if not isinstance(e, dict) or "Sequence" not in e or "Action" not in e
    ]
    return "an entry has no Sequence or Action" if bad else None


def _changefeed_checks() -> list[Check]:
    """The change feed: a page, its bound (400 beyond 100) and its latest entry (the store
    before it made one, unless the instance was there already)."""
    feed = "/o3-dpacs-wado/changefeed"
    return [
        Check(
            "change feed",
            "GET",
            feed,
            "changefeed?offset=0&limit=5&includeMetadata=false",
            _all(_status(200), _json_entries),
        ),
        Check("change feed limit", "GET", feed, "changefeed?limit=101", _status(400)),
        Check(
            "change feed latest",
            "GET",
            f"{feed}/latest",
            "changefeed/latest?includeMetadata=false",
            _all(_status(200), _json_fields("Sequence", "Action", "State")),
        ),
    ]


def _pending_upload(base: str, key: str) -> str:
    """Ask for an upload (sending nothing to it) and return its status path."""
    reply = send(
        "POST",
        f"{base}/stowRsListener/{AET}/uploads",
        {"Authorization": key, "Content-Type": "application/json"},
        b'{"size": 1000}',
    )
    if reply.status != 201:
        raise ValueError(f"asking for an upload answered {reply.status}")
    return f"stowRsListener/{AET}/uploads/{json.loads(reply.body)['uploadId']}"


def _upload_checks() -> list[Check]:
    """The upload path's routes (instances over STOW's limit): ask, status, list, complete."""
    json_headers = {"Content-Type": "application/json"}
    unknown = f"stowRsListener/{AET}/uploads/{'0' * 32}"
    return [
        Check(
            "Upload: ask for a presigned PUT",
            "POST",
            _UPLOADS,
            f"stowRsListener/{AET}/uploads",
            _all(_status(201), _json_fields("uploadId", "statusUrl", "upload")),
            json_headers,
            b'{"size": 5000000}',
        ),
        Check(
            "Upload: status",
            "GET",
            _UPLOADS + "/{UPLOAD_ID}",
            "",
            _all(_status(200), _json_fields("status")),
            late_path=_pending_upload,
        ),
        Check(
            "Upload: results by prefix",
            "GET",
            _UPLOADS,
            f"stowRsListener/{AET}/uploads?prefix=uploads/&limit=5",
            _all(_status(200), _json_fields("results")),
        ),
        Check(
            "Upload: complete an unknown upload (404)",
            "POST",
            _UPLOADS + "/{UPLOAD_ID}/complete",
            f"{unknown}/complete",
            _all(_status(404), _json_fields("message")),
            json_headers,
            b'{"parts": []}',
        ),
    ]


#: A study no archive holds: the lifecycle checks delete and restore nothing.
UNKNOWN_UID = "2.25.238271178713418356386409545102347658600"


def _lifecycle_checks() -> list[Check]:
    """DELETE and restore, on UIDs nothing holds (the smoke study stays): 404 with an
    ``admin`` key, 403 with any other (the route and the authorizer answered either way);
    the listing of rejected instances likewise, of a study nothing holds."""
    study = f"studies/{UNKNOWN_UID}"
    series = f"{study}/series/{UNKNOWN_UID}.1"
    instance = f"{series}/instances/{UNKNOWN_UID}.1.1"
    answered = _all(_status(404, 403), _json_fields("message"))
    levels = [("study", _R_STUDY, study), ("series", _R_SERIES, series)]
    levels.append(("instance", _R_INSTANCE, instance))
    restore = "/o3-dpacs-wado/rs/restore/"
    return [
        *(
            Check(f"DELETE an unknown {level} (404; 403 without admin)", "DELETE", route,
                  f"rs/{path}", answered)
            for level, route, path in levels
        ),
        *(
            Check(f"Restore an unknown {level} (404; 403 without admin)", "POST",
                  route.replace("/o3-dpacs-wado/rs/", restore), f"rs/restore/{path}", answered)
            for level, route, path in levels
        ),
        Check("List what rejection notes named in an unknown study (200; 403 without admin)",
              "GET", "/o3-dpacs-wado/iocm/rejected",
              f"iocm/rejected?StudyInstanceUID={UNKNOWN_UID}", _listed_or_refused),
        Check("Update with no change (400; 403 without admin)", "POST",
              "/o3-dpacs-wado/rs/studies/$bulkUpdate", "rs/studies/$bulkUpdate",
              _all(_status(400, 403), _json_fields("message")),
              {"Content-Type": "application/json"},
              f'{{"studyInstanceUids": ["{UNKNOWN_UID}"], "changeDataset": {{}}}}'.encode()),
        Check("Status of an unknown update operation (404; 403 without admin)", "GET",
              "/o3-dpacs-wado/operations/{OPERATION}",
              f"operations/{UNKNOWN_OPERATION}", answered),
        Check("Versions of an unknown instance (404; 403 without admin)", "GET",
              _VERSIONS, f"versions/{instance}", answered),
        Check("A version of an unknown instance (404; 403 without admin)", "GET",
              _VERSIONS + "/{VERSION}", f"versions/{instance}/{'0' * 64}", answered),
    ]  # fmt: skip


#: An operation id no archive holds.
UNKNOWN_OPERATION = "00000000-0000-7000-8000-000000000000"
_VERSIONS = "/o3-dpacs-wado/versions/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}"


def _listed_or_refused(reply: Reply) -> str | None:
    """An admin key's listing (``rejected``, empty for a study nothing holds), or 403."""
    if reply.status == 403:
        return _json_fields("message")(reply)
    if reply.status != 200:
        return f"status {reply.status}, expected 200 or 403"
    return _json_fields("rejected", "next")(reply)


def _auth_checks() -> list[Check]:
    studies = f"rs/{_STUDY}/metadata"
    preflight = {
        "Origin": "https://viewer.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    post_preflight = {**preflight, "Access-Control-Request-Method": "POST"}
    return [
        Check("401 without a key", "GET", f"{_R_STUDY}/metadata", studies, _refused, key=None),
        Check(
            "401 with a wrong key", "GET", f"{_R_STUDY}/metadata", studies, _refused, key="wrong"
        ),
        Check(
            "401 without a key (STOW)",
            "POST",
            "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
            f"stowRsListener/{AET}/studies",
            _refused,
            {"Content-Type": f"{_DICOM_PARTS}; boundary={BOUNDARY}"},
            _stow_body(b"x"),
            key=None,
        ),
        Check(
            "OPTIONS preflight (STOW)",
            "OPTIONS",
            "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
            f"stowRsListener/{AET}/studies",
            _cors,
            post_preflight,
            key=None,
        ),
        Check(
            "OPTIONS preflight (uploads)",
            "OPTIONS",
            _UPLOADS,
            f"stowRsListener/{AET}/uploads",
            _cors,
            post_preflight,
            key=None,
        ),
        Check(
            "OPTIONS preflight (QIDO)",
            "OPTIONS",
            "/o3-dpacs-wado/rs/studies",
            "rs/studies",
            _cors,
            preflight,
            key=None,
        ),
        Check(
            "OPTIONS preflight (WADO-RS)",
            "OPTIONS",
            f"{_R_STUDY}/metadata",
            studies,
            _cors,
            preflight,
            key=None,
        ),
        Check(
            "OPTIONS preflight (WADO-URI)",
            "OPTIONS",
            "/o3-dpacs-wado/wado",
            "wado",
            _cors,
            preflight,
            key=None,
        ),
    ]


def checks(data: bytes | None = None) -> list[Check]:
    """Every check, in the order they run (the store first: the others read what it stored)."""
    data = smoke_instance() if data is None else data
    return [
        *_stow_checks(data),
        *_qido_checks(),
        *_wado_checks(),
        *_upload_checks(),
        *_lifecycle_checks(),
        *_changefeed_checks(),
        *_auth_checks(),
    ]


def _bulk_path(base: str, key: str) -> str:
    """The BulkDataURI the instance metadata gives for the pixel data (relative to base)."""
    reply = send("GET", f"{base}/rs/{_INSTANCE}/metadata", {"Authorization": key})
    match = re.search(rb'"BulkDataURI"\s*:\s*"([^"]+/bulk/[^"]+)"', reply.body)
    if not match:
        raise ValueError("the instance metadata names no BulkDataURI")
    return match.group(1).decode().split("/o3-dpacs-wado/", 1)[-1]


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    """One check's result."""

    check: Check
    problem: str | None
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether the answer was as expected."""
        return self.problem is None


def run(base: str, key: str, selected: list[Check] | None = None) -> Iterator[Outcome]:
    """Run the checks against ``base`` (the URL ending in /o3-dpacs-wado)."""
    base = base.rstrip("/")
    for check in checks() if selected is None else selected:
        headers = dict(check.headers)
        if check.key == "valid":
            headers["Authorization"] = key
        elif check.key == "wrong":
            headers["Authorization"] = "o3k_this-key-does-not-exist"
        started = time.perf_counter()
        try:
            path = check.late_path(base, key) if check.late_path else check.path
            reply = send(check.method, f"{base}/{path}", headers, check.body)
            problem = check.expect(reply)
        except (OSError, ValueError) as error:  # connection refused, timeout, bad URL
            problem = f"{type(error).__name__}: {error}"
        yield Outcome(check, problem, time.perf_counter() - started)


def routes_covered() -> set[tuple[str, str]]:
    """(METHOD, template route) of every check, the bulk data one included."""
    return {(c.method, c.route) for c in checks(b"")}


def main(argv: list[str] | None = None) -> int:
    """Command line: print one line per check, exit 1 when any failed."""
    parser = argparse.ArgumentParser(prog="dicomweb-smoke", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="base URL, ending in /o3-dpacs-wado")
    parser.add_argument("--key", required=True, help="an API key (dicomweb-apikeys create)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    args = parser.parse_args(argv)
    outcomes = list(run(args.url, args.key))
    failed = [o for o in outcomes if not o.passed]
    if args.json:
        print(
            json.dumps(
                {
                    "passed": len(outcomes) - len(failed),
                    "failed": len(failed),
                    "checks": [
                        {
                            "name": o.check.name,
                            "method": o.check.method,
                            "route": o.check.route,
                            "passed": o.passed,
                            "problem": o.problem,
                            "ms": round(o.seconds * 1000, 1),
                        }
                        for o in outcomes
                    ],
                },
                indent=2,
            )
        )
    else:
        for o in outcomes:
            verdict = "PASS" if o.passed else "FAIL"
            detail = f"  {o.problem}" if o.problem else ""
            took = f"{o.seconds * 1000:7.0f} ms"
            print(f"{verdict}  {o.check.method:7} {o.check.name:34} {took}{detail}")
        print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
