"""Write the sample API Gateway events in events/ (one per route, plus the authorizer's).

Usage: ``python -m tools.make_events`` to (re)write them, ``--check`` to fail when a file
differs from what this script makes (tests/template runs the check).

Each REST event is built by the emulator's own builder
(:func:`local.api_gateway.proxy.proxy_event`), here with a deployed stage's values. The STOW
bodies are real ``multipart/related; type="application/dicom"`` messages holding
pydicom's bundled ``CT_small.dcm``, base64-encoded with ``isBase64Encoded: true`` as API
Gateway (REST, ``BinaryMediaTypes: ["*~1*"]``) delivers them. Every value is fixed (ids,
times, boundary) so the output is byte-for-byte reproducible. The API key is a made-up
example that no deployment accepts.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from local.api_gateway.proxy import ProxyRequest, Stage, proxy_event
from shared.dicomweb.multipart import build_related

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

BASE = "/o3-dpacs-wado"
STAGE = "v1"
API_ID = "a1b2c3d4e5"
ACCOUNT = "123456789012"
REGION = "us-east-1"
DOMAIN = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
CALLING_AET = "MODALITY1"
ORIGIN = "https://viewer.example.org"
EXAMPLE_KEY = "o3k_EXAMPLE-not-a-real-key-accepted-by-no-deployment"
BOUNDARY = "DICOMwebBoundary-5e2d8f0a"
SAMPLE_FILE = "CT_small.dcm"
REQUEST_TIME = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SOURCE_IP = "198.51.100.10"
#: The deployed stage the sample events come from.
DEPLOYED = Stage(
    STAGE,
    api_id=API_ID,
    account_id=ACCOUNT,
    domain_name=DOMAIN,
    domain_prefix=API_ID,
    path_has_stage=True,
)
#: What API Gateway adds after our TOKEN authorizer allowed the key (see its context).
AUTHORIZER_CONTEXT = {
    "principalId": "apikey:0a1b2c3d",
    "integrationLatency": 12,
    "keyId": "0a1b2c3d",
    "keyLabel": "example",
    "scopes": "read,store",
}

STUDIES = f"{BASE}/stowRsListener/{{CALLING_AET}}/studies"
STUDY = f"{STUDIES}/{{STUDY_UID}}"


def sample_dicom() -> tuple[bytes, str]:
    """Return the bytes and the StudyInstanceUID of the bundled sample file."""
    path = get_testdata_file(SAMPLE_FILE, download=False)
    if path is None:
        raise SystemExit(f"pydicom's test file {SAMPLE_FILE} is not installed")
    data = Path(path).read_bytes()
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return data, str(dataset.StudyInstanceUID)


def multipart_related(parts: list[bytes]) -> bytes:
    """Build a multipart/related body (RFC 2387) with one application/dicom part each."""
    return build_related([(part, "application/dicom") for part in parts], BOUNDARY)


@dataclass(frozen=True)
class Request:
    """What a client sends: method, route (resource), path parameters, headers, body, query."""

    method: str
    resource: str
    path_parameters: dict[str, str] | None
    headers: dict[str, str]
    body: bytes | None = None
    query: dict[str, list[str]] | None = None


def rest_event(request: Request, *, authorized: bool, request_id: str) -> dict[str, Any]:
    """Return an API Gateway REST proxy event (payload format 1.0) for one request."""
    path = request.resource
    for name, value in (request.path_parameters or {}).items():
        path = path.replace("{" + name + "}", value)
    base_headers = {
        "Host": DOMAIN,
        "User-Agent": "dicomweb-client/0.59",
        "X-Amzn-Trace-Id": f"Root=1-6925a8c0-{request_id.replace('-', '')[:24]}",
        "X-Forwarded-For": SOURCE_IP,
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    all_headers = {**base_headers, **request.headers}
    if request.body is not None:
        all_headers["Content-Length"] = str(len(request.body))
    query = request.query or {}
    return proxy_event(
        ProxyRequest(
            method=request.method,
            resource=request.resource,
            path=path,
            headers=list(all_headers.items()),
            query=[(name, value) for name, values in query.items() for value in values],
            path_parameters=request.path_parameters,
            body=request.body,
            request_id=request_id,
            source_ip=SOURCE_IP,
            time=REQUEST_TIME,
            resource_id="k3x9q1",
            extended_request_id=request_id[:8] + "=",
            authorizer=AUTHORIZER_CONTEXT if authorized else None,
        ),
        DEPLOYED,
    )


def stow_event(resource: str, study_uid: str, body: bytes, request_id: str) -> dict[str, Any]:
    """POST of a multipart/related body to one of the STOW-RS routes."""
    params = {"CALLING_AET": CALLING_AET} if "{CALLING_AET}" in resource else {}
    if "{STUDY_UID}" in resource:
        params["STUDY_UID"] = study_uid
    if "{STUDY}" in resource:
        params["STUDY"] = study_uid
    headers = {
        "Accept": "application/dicom+json",
        "Authorization": EXAMPLE_KEY,
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
    }
    return rest_event(
        Request("POST", resource, params, headers, body), authorized=True, request_id=request_id
    )


def preflight_event(resource: str, study_uid: str, request_id: str) -> dict[str, Any]:
    """A browser's CORS preflight (no Authorization header, no authorizer on OPTIONS)."""
    params = {"CALLING_AET": CALLING_AET}
    if "{STUDY_UID}" in resource:
        params["STUDY_UID"] = study_uid
    headers = {
        "Accept": "*/*",
        "User-Agent": "Mozilla/5.0 (X11; Linux aarch64) viewer",
        "Access-Control-Request-Headers": "authorization,content-type",
        "Access-Control-Request-Method": "POST",
        "Origin": ORIGIN,
    }
    return rest_event(
        Request("OPTIONS", resource, params, headers), authorized=False, request_id=request_id
    )


QIDO = f"{BASE}/qido/{{AET}}"
QIDO_ROUTES = {
    "qido-patients": (f"{QIDO}/patients", {"PatientID": ["1CT1"]}),
    "qido-studies": (
        f"{QIDO}/studies",
        {"PatientName": ["Compressed*"], "StudyDate": ["20040101-"], "limit": ["101"]},
    ),
    "qido-series": (f"{QIDO}/series", {"Modality": ["CT"], "includefield": ["0008103E"]}),
    "qido-study-series": (f"{QIDO}/studies/{{STUDY}}/series", {}),
    "qido-instances": (f"{QIDO}/instances", {"SOPClassUID": ["1.2.840.10008.5.1.4.1.1.2"]}),
    "qido-study-instances": (f"{QIDO}/studies/{{STUDY}}/instances", {"limit": ["10"]}),
    "qido-series-instances": (
        f"{QIDO}/studies/{{STUDY}}/series/{{SERIES}}/instances",
        {"includefield": ["all"]},
    ),
    # The same searches under the one DICOMweb root, beside WADO-RS.
    "qido-root-studies": (f"{BASE}/rs/studies", {"PatientID": ["1CT1"]}),
    "qido-root-series": (f"{BASE}/rs/series", {"Modality": ["CT"]}),
    "qido-root-instances": (f"{BASE}/rs/instances", {"limit": ["10"]}),
    "qido-root-study-series": (
        f"{BASE}/rs/studies/{{STUDY}}/series",
        {"includefield": ["00080021", "00080031", "0008103E", "00200011"]},
    ),
    "qido-root-study-instances": (f"{BASE}/rs/studies/{{STUDY}}/instances", {}),
    "qido-root-series-instances": (f"{BASE}/rs/studies/{{STUDY}}/series/{{SERIES}}/instances", {}),
    # The change feed (Azure v1 shape), on the QIDO function.
    "changefeed": (f"{BASE}/changefeed", {"offset": ["0"], "limit": ["10"]}),
    "changefeed-latest": (f"{BASE}/changefeed/latest", {"includeMetadata": ["false"]}),
}


def qido_params(resource: str, study_uid: str, series_uid: str) -> dict[str, str]:
    """Path parameters of a QIDO route."""
    params = {"AET": "VIEWER1"} if "{AET}" in resource else {}
    if "{STUDY}" in resource:
        params["STUDY"] = study_uid
    if "{SERIES}" in resource:
        params["SERIES"] = series_uid
    return params


def qido_event(
    resource: str,
    path_params: dict[str, str] | None,
    query: dict[str, list[str]],
    request_id: str,
    accept: str = "application/dicom+json",
) -> dict[str, Any]:
    """GET of a QIDO-RS route with query parameters (decoded, as API Gateway passes them)."""
    headers = {"Accept": accept, "Authorization": EXAMPLE_KEY}
    return rest_event(
        Request("GET", resource, path_params, headers, query=query),
        authorized=True,
        request_id=request_id,
    )


def qido_preflight_event(
    resource: str, path_params: dict[str, str], request_id: str
) -> dict[str, Any]:
    """A browser's CORS preflight for a QIDO GET."""
    headers = {
        "Accept": "*/*",
        "Access-Control-Request-Headers": "authorization",
        "Access-Control-Request-Method": "GET",
        "Origin": ORIGIN,
    }
    return rest_event(
        Request("OPTIONS", resource, path_params, headers), authorized=False, request_id=request_id
    )


RS = f"{BASE}/rs/studies/{{STUDY}}"
WADO_ROUTES = {
    "wado-rs-study": (RS, {}),
    "wado-rs-series": (f"{RS}/series/{{SERIES}}", {"anonymize": ["true"]}),
    "wado-rs-instance": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}", {}),
    "wado-rs-study-metadata": (f"{RS}/metadata", {}),
    "wado-rs-series-metadata": (f"{RS}/series/{{SERIES}}/metadata", {}),
    "wado-rs-instance-metadata": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/metadata", {}),
    "wado-rs-frames": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/frames/{{FRAMES}}", {}),
    "wado-rs-bulk": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/bulk/{{PATH}}", {}),
    "wado-rs-study-rendered": (f"{RS}/rendered", {}),
    "wado-rs-series-rendered": (f"{RS}/series/{{SERIES}}/rendered", {"window": ["40,400"]}),
    "wado-rs-instance-rendered": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/rendered", {}),
    "wado-rs-frames-rendered": (
        f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/frames/{{FRAMES}}/rendered",
        {"viewport": ["256,256"]},
    ),
    "wado-rs-study-thumbnail": (f"{RS}/thumbnail", {}),
    "wado-rs-series-thumbnail": (f"{RS}/series/{{SERIES}}/thumbnail", {}),
    "wado-rs-instance-thumbnail": (f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/thumbnail", {}),
    "wado-rs-frames-thumbnail": (
        f"{RS}/series/{{SERIES}}/instances/{{INSTANCE}}/frames/{{FRAMES}}/thumbnail",
        {},
    ),
    "wado-uri": (
        f"{BASE}/wado",
        {
            "requestType": ["WADO"],
            "studyUID": ["{STUDY}"],
            "seriesUID": ["{SERIES}"],
            "objectUID": ["{INSTANCE}"],
            "contentType": ["application/dicom"],
        },
    ),
}


# Further WADO-URI requests on the same route: a rendered thumbnail and a transcoded file.
WADO_URI_VARIANTS = {
    "wado-uri-rendered": (
        "image/jpeg",
        {"windowCenter": ["40"], "windowWidth": ["400"], "rows": ["256"]},
    ),
    "wado-uri-transcoded": (
        "application/dicom",
        {"contentType": ["application/dicom"], "transferSyntax": ["1.2.840.10008.1.2.4.90"]},
    ),
}


def _wado_uri_variant(
    base: dict[str, Any], accept: str, query: dict[str, list[str]], request_id: str
) -> dict[str, Any]:
    """A copy of the WADO-URI event (the same trace and extended request ids) with another
    Accept, query and request id."""
    event: dict[str, Any] = json.loads(json.dumps(base))
    uids = {k: v for k, v in base["multiValueQueryStringParameters"].items() if k != "contentType"}
    multi = {**uids, **query}
    event["multiValueQueryStringParameters"] = multi
    event["queryStringParameters"] = {k: v[-1] for k, v in multi.items()}
    event["headers"]["Accept"] = accept
    event["multiValueHeaders"]["Accept"] = [accept]
    event["requestContext"]["requestId"] = request_id
    return event


# What each WADO-RS resource's client accepts (default: Part 10 instances).
_ACCEPT = {
    "metadata": "application/dicom+json",
    "frames": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "bulk": 'multipart/related; type="application/octet-stream"',
    "rendered": "image/jpeg",
    "thumbnail": "image/jpeg",
}


def _wado_accept(name: str) -> str:
    if name == "wado-uri":
        return "application/dicom"
    return _ACCEPT.get(name.rsplit("-", 1)[-1], 'multipart/related; type="application/dicom"')


def wado_events(uids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """GETs of the WADO routes and their preflights."""
    uids = {**uids, "FRAMES": "1", "PATH": "7FE00010"}
    events: dict[str, dict[str, Any]] = {}
    for number, (name, (resource, query)) in enumerate(WADO_ROUTES.items(), start=1):
        params = {k: v for k, v in uids.items() if "{" + k + "}" in resource}
        filled = {k: [v.format(**uids) for v in vs] for k, vs in query.items()}
        events[f"{name}.json"] = qido_event(
            resource,
            params or None,
            filled,
            f"c0ffee00-0000-4000-8000-0000000003{number:02d}",
            accept=_wado_accept(name),
        )
        events[f"{name}-preflight.json"] = qido_preflight_event(
            resource, params, f"c0ffee00-0000-4000-8000-0000000004{number:02d}"
        )
    for number, (name, (accept, query)) in enumerate(WADO_URI_VARIANTS.items(), start=1):
        events[f"{name}.json"] = _wado_uri_variant(
            events["wado-uri.json"],
            accept,
            query,
            f"c0ffee00-0000-4000-8000-0000000005{number:02d}",
        )
    return events


UPLOADS = f"{BASE}/stowRsListener/{{CALLING_AET}}/uploads"
UPLOAD = f"{UPLOADS}/{{UPLOAD_ID}}"
UPLOAD_COMPLETE = f"{UPLOAD}/complete"
UPLOAD_ID = "5f0c2a9e41d84b7c9a3e6d1f27b80c44"


def upload_events() -> dict[str, dict[str, Any]]:
    """The upload path's routes (JSON bodies) and the ingest function's two events."""
    params = {"CALLING_AET": CALLING_AET, "UPLOAD_ID": UPLOAD_ID}
    json_headers = {
        "Accept": "application/json",
        "Authorization": EXAMPLE_KEY,
        "Content-Type": "application/json",
    }
    requests = {
        "uploads-create": Request(
            "POST", UPLOADS, {"CALLING_AET": CALLING_AET}, json_headers, b'{"size": 157286400}'
        ),
        "uploads-list": Request("GET", UPLOADS, {"CALLING_AET": CALLING_AET}, json_headers),
        "uploads-status": Request("GET", UPLOAD, params, json_headers),
        "uploads-complete": Request(
            "POST",
            UPLOAD_COMPLETE,
            params,
            json_headers,
            b'{"parts": [{"partNumber": 1, "etag": "\\"9b2cf535f27731c974343645a3985328\\""}]}',
        ),
    }
    events = {}
    for number, (name, request) in enumerate(requests.items(), start=1):
        events[f"{name}.json"] = rest_event(
            request, authorized=True, request_id=f"c0ffee00-0000-4000-8000-0000000005{number:02d}"
        )
    preflight_headers = {
        "Accept": "*/*",
        "Access-Control-Request-Headers": "authorization,content-type",
        "Access-Control-Request-Method": "POST",
        "Origin": ORIGIN,
    }
    for number, (name, resource) in enumerate(
        {"uploads": UPLOADS, "uploads-status": UPLOAD, "uploads-complete": UPLOAD_COMPLETE}.items(),
        start=1,
    ):
        events[f"{name}-preflight.json"] = rest_event(
            Request("OPTIONS", resource, params, preflight_headers),
            authorized=False,
            request_id=f"c0ffee00-0000-4000-8000-0000000006{number:02d}",
        )
    events["ingest-object-created.json"] = {
        "version": "0",
        "id": "c0ffee00-0000-4000-8000-000000000701",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-11-25T12:00:00Z",
        "region": REGION,
        "resources": ["arn:aws:s3:::dicomweb-dicombucket-example"],
        "detail": {
            "version": "0",
            "bucket": {"name": "dicomweb-dicombucket-example"},
            "object": {"key": f"incoming/uploads/{UPLOAD_ID}", "size": 157286400},
            "reason": "CompleteMultipartUpload",
        },
    }
    events["ingest-sweep.json"] = {
        "version": "0",
        "id": "c0ffee00-0000-4000-8000-000000000702",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-11-25T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/dicomweb-IngestFunctionSweep"],
        "detail": {},
    }
    return events


LIFECYCLE_ROUTES = {
    "delete-study": ("DELETE", "/rs/studies/{STUDY}"),
    "delete-series": ("DELETE", "/rs/studies/{STUDY}/series/{SERIES}"),
    "delete-instance": ("DELETE", "/rs/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}"),
    "restore-study": ("POST", "/rs/restore/studies/{STUDY}"),
    "restore-series": ("POST", "/rs/restore/studies/{STUDY}/series/{SERIES}"),
    "restore-instance": (
        "POST",
        "/rs/restore/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}",
    ),
    "list-rejected": ("GET", "/iocm/rejected"),
    "bulk-update": ("POST", "/rs/studies/$bulkUpdate"),
    "operation-status": ("GET", "/operations/{OPERATION}"),
    "list-versions": (
        "GET",
        "/versions/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}",
    ),
    "read-version": (
        "GET",
        "/versions/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/{VERSION}",
    ),
}
#: A made-up operation id and version id for the sample events.
EXAMPLE_OPERATION = "01930000-0000-7000-8000-000000000001"
EXAMPLE_VERSION = "0" * 63 + "1"


def lifecycle_events(uids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """An admin key's DELETE and restore of a study, a series and an instance, its listing
    of what rejection notes named, and its update (a patient merge), operation status and
    versions."""
    headers = {"Accept": "application/json", "Authorization": EXAMPLE_KEY}
    uids = {**uids, "OPERATION": EXAMPLE_OPERATION, "VERSION": EXAMPLE_VERSION}
    update = json.dumps(
        {
            "studyInstanceUids": [uids["STUDY"]],
            "changeDataset": {
                "00100020": {"vr": "LO", "Value": ["PATIENT-0002"]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Example^Patient"}]},
            },
        }
    ).encode()
    events = {}
    for number, (name, (method, tail)) in enumerate(LIFECYCLE_ROUTES.items(), start=1):
        resource = f"{BASE}{tail}"
        params = {k: v for k, v in uids.items() if "{" + k + "}" in resource}
        body = update if name == "bulk-update" else None
        sent = {**headers, "Content-Type": "application/json"} if body else headers
        event = rest_event(
            Request(method, resource, params or None, sent, body),
            authorized=True,
            request_id=f"c0ffee00-0000-4000-8000-0000000008{number:02d}",
        )
        context = event["requestContext"]
        context["authorizer"] = {**context["authorizer"], "scopes": "admin"}
        events[f"{name}.json"] = event
    events["lifecycle-finish.json"] = {
        "version": "0",
        "id": "c0ffee00-0000-4000-8000-000000000901",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-11-25T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/dicomweb-LifecycleFinishDeletions"],
        "detail": {},
    }
    return events


def authorizer_event() -> dict[str, Any]:
    """The TOKEN authorizer's input for a STOW request."""
    return {
        "type": "TOKEN",
        "authorizationToken": EXAMPLE_KEY,
        "methodArn": (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/POST"
            f"{BASE}/stowRsListener/{CALLING_AET}/studies"
        ),
    }


def all_events() -> dict[str, dict[str, Any]]:
    """Return every sample event by file name."""
    data, study_uid = sample_dicom()
    series_uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SeriesInstanceUID)
    body = multipart_related([data])
    qido: dict[str, dict[str, Any]] = {}
    for number, (name, (resource, query)) in enumerate(QIDO_ROUTES.items(), start=1):
        params = qido_params(resource, study_uid, series_uid)
        qido[f"{name}.json"] = qido_event(
            resource, params, query, f"c0ffee00-0000-4000-8000-0000000001{number:02d}"
        )
        qido[f"{name}-preflight.json"] = qido_preflight_event(
            resource, params, f"c0ffee00-0000-4000-8000-0000000002{number:02d}"
        )
    sop_uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    wado = wado_events({"STUDY": study_uid, "SERIES": series_uid, "INSTANCE": sop_uid})
    return {
        **qido,
        **wado,
        **upload_events(),
        **lifecycle_events({"STUDY": study_uid, "SERIES": series_uid, "INSTANCE": sop_uid}),
        "stow-studies.json": stow_event(
            STUDIES, study_uid, body, "c0ffee00-0000-4000-8000-000000000001"
        ),
        "stow-study.json": stow_event(
            STUDY, study_uid, body, "c0ffee00-0000-4000-8000-000000000002"
        ),
        "stow-root-studies.json": stow_event(
            f"{BASE}/rs/studies", study_uid, body, "c0ffee00-0000-4000-8000-000000000005"
        ),
        "stow-root-study.json": stow_event(
            f"{BASE}/rs/studies/{{STUDY}}", study_uid, body, "c0ffee00-0000-4000-8000-000000000006"
        ),
        "stow-preflight.json": preflight_event(
            STUDIES, study_uid, "c0ffee00-0000-4000-8000-000000000003"
        ),
        "stow-study-preflight.json": preflight_event(
            STUDY, study_uid, "c0ffee00-0000-4000-8000-000000000004"
        ),
        "authorizer-token.json": authorizer_event(),
    }


def render(event: dict[str, Any]) -> str:
    """Serialise an event the way the files are written."""
    return json.dumps(event, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the events, or with --check report the files that are missing or differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    stale = []
    for name, event in all_events().items():
        target = EVENTS / name
        text = render(event)
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print("out of date (run python -m tools.make_events): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
