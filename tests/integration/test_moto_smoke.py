"""Every route once on the moto backend (cloud fidelity: S3, DynamoDB, Secrets Manager as
boto3 sees them); the whole HTTP suite runs on the embedded backend."""

from __future__ import annotations

import io
import time

import pydicom
import pytest
import requests

from local.stack import LocalStack
from tests.support import dicom_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stored(moto_stack: LocalStack) -> tuple[str, str, str]:
    data = dicom_files.with_new_uids("CT_small.dcm", patient_id="SMOKE1")
    response = requests.post(
        f"{moto_stack.base_url}/stowRsListener/SMOKE/studies",
        data=data,
        headers={"Authorization": moto_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


ROUTES = [
    ("qido/SMOKE/patients", {"PatientID": "{pid}"}),
    ("qido/SMOKE/studies", {"StudyInstanceUID": "{study}"}),
    ("qido/SMOKE/series", {"SeriesInstanceUID": "{series}"}),
    ("qido/SMOKE/instances", {"SOPInstanceUID": "{sop}"}),
    ("qido/SMOKE/studies/{study}/series", {}),
    ("qido/SMOKE/studies/{study}/instances", {}),
    ("qido/SMOKE/studies/{study}/series/{series}/instances", {}),
    ("rs/studies", {"StudyInstanceUID": "{study}"}),
    ("rs/series", {"SeriesInstanceUID": "{series}"}),
    ("rs/instances", {"SOPInstanceUID": "{sop}"}),
    ("rs/studies/{study}/series", {}),
    ("rs/studies/{study}/instances", {}),
    ("rs/studies/{study}/series/{series}/instances", {}),
    ("rs/studies/{study}", {}),
    ("rs/studies/{study}/series/{series}", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}", {}),
    ("rs/studies/{study}/metadata", {}),
    ("rs/studies/{study}/series/{series}/metadata", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/metadata", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/frames/1", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/bulk/7FE00010", {}),
    ("rs/studies/{study}/rendered", {}),
    ("rs/studies/{study}/series/{series}/rendered", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/rendered", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/frames/1/rendered", {}),
    ("rs/studies/{study}/thumbnail", {}),
    ("rs/studies/{study}/series/{series}/thumbnail", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/thumbnail", {}),
    ("rs/studies/{study}/series/{series}/instances/{sop}/frames/1/thumbnail", {}),
    ("changefeed", {"offset": "0", "limit": "100"}),
    ("changefeed/latest", {}),
    ("stowRsListener/SMOKE/uploads", {"prefix": "uploads/"}),
    ("iocm/rejected", {"StudyInstanceUID": "{study}"}),
    ("stowRsListener/SMOKE/uploads/{upload}", {}),
    ("operations/{operation}", {}),
    ("versions/studies/{study}/series/{series}/instances/{sop}", {}),
    ("versions/studies/{study}/series/{series}/instances/{sop}/{version}", {}),
    (
        "wado",
        {
            "requestType": "WADO",
            "studyUID": "{study}",
            "seriesUID": "{series}",
            "objectUID": "{sop}",
        },
    ),
]


@pytest.fixture(scope="module")
def upload(moto_stack: LocalStack) -> str:
    """An upload asked for (nothing sent to it yet: pending)."""
    response = requests.post(
        f"{moto_stack.base_url}/stowRsListener/SMOKE/uploads",
        json={"size": 1000},
        headers={"Authorization": moto_stack.api_key},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["uploadId"])


@pytest.fixture(scope="module")
def updated(moto_stack: LocalStack, stored: tuple[str, str, str]) -> tuple[str, str]:
    """A metadata update of the stored study, run to its end by the Operations function on
    S3 + DynamoDB: its operation id and the id of the version it replaced."""
    study, series, sop = stored
    headers = {"Authorization": moto_stack.api_key}
    change = {"00081030": {"vr": "LO", "Value": ["SMOKE_UPDATED"]}}
    response = requests.post(
        f"{moto_stack.base_url}/rs/studies/$bulkUpdate",
        json={"studyInstanceUids": [study], "changeDataset": change},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 202, response.text
    href = response.json()["href"]
    deadline = time.monotonic() + 120
    while (status := requests.get(href, headers=headers, timeout=60).json())["status"] == "running":
        assert time.monotonic() < deadline, "the update did not finish"
        time.sleep(0.3)
    assert status["status"] == "succeeded", status
    listed = requests.get(
        f"{moto_stack.base_url}/versions/studies/{study}/series/{series}/instances/{sop}",
        headers=headers,
        timeout=60,
    ).json()["versions"]
    assert [v["current"] for v in listed] == [True, False]
    return str(status["id"]), str(listed[1]["versionId"])


@pytest.mark.parametrize(("path", "params"), ROUTES, ids=[r[0] for r in ROUTES])
def test_route_answers_on_moto(  # noqa: PLR0917 - the route and every fixture it names
    moto_stack: LocalStack,
    stored: tuple[str, str, str],
    upload: str,
    updated: tuple[str, str],
    path: str,
    params: dict[str, str],
) -> None:
    study, series, sop = stored
    names = {"study": study, "series": series, "sop": sop, "pid": "SMOKE1", "upload": upload}
    names |= {"operation": updated[0], "version": updated[1]}
    response = requests.get(
        f"{moto_stack.base_url}/{path.format(**names)}",
        params={k: v.format(**names) for k, v in params.items()}
        | ({"seriesUID": series} if path == "wado" else {}),
        headers={"Authorization": moto_stack.api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.content


def test_every_get_route_of_the_template_is_smoked() -> None:
    import re

    from local import template

    smoked = [path for path, _ in ROUTES]
    for route in template.load().routes:
        if route.method.upper() == "GET":
            pattern = re.sub(r"\{[^}]*\}", "[^/]+", route.path.removeprefix("/o3-dpacs-wado/"))
            assert any(re.fullmatch(pattern, p) for p in smoked), route.path


def test_the_change_feed_on_dynamodb_lists_the_stored_instance(
    moto_stack: LocalStack, stored: tuple[str, str, str]
) -> None:
    study, series, sop = stored
    response = requests.get(
        f"{moto_stack.base_url}/changefeed",
        params={"limit": "100"},
        headers={"Authorization": moto_stack.api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    entries = [e for e in response.json() if e["SOPInstanceUID"] == sop]
    # Created, then updated when the module's update (fixture ``updated``) ran first.
    assert [(e["Action"], e["StudyInstanceUID"], e["SeriesInstanceUID"]) for e in entries][:1] == [
        ("create", study, series)
    ]
    assert {e["Action"] for e in entries[1:]} <= {"update"}
    assert isinstance(entries[0]["Sequence"], int)
    assert entries[-1]["Metadata"]["00080018"]["Value"] == [sop]  # the current version's


def test_metadata_on_dynamodb_is_read_from_the_index(
    moto_stack: LocalStack, stored: tuple[str, str, str]
) -> None:
    study, series, sop = stored
    catalog = moto_stack.archive.catalog
    (row,) = catalog.instances_by_uid([sop])
    assert row.metadata  # kept in the instance item (binary attribute "meta")
    response = requests.get(
        f"{moto_stack.base_url}/rs/studies/{study}/series/{series}/metadata",
        headers={"Authorization": moto_stack.api_key},
        timeout=60,
    )
    (document,) = response.json()
    assert document["7FE00010"]["BulkDataURI"].startswith(moto_stack.base_url)
