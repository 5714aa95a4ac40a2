"""STOW-RS end to end over HTTP: emulator -> authorizer -> STOW Lambda -> moto S3/DynamoDB."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared.dicomweb.multipart import build_related, new_boundary
from shared.ports import InstanceRow, StudyRow
from tests.support import dicom_files

pytestmark = pytest.mark.integration

MULTIPART = 'multipart/related; type="application/dicom"; boundary={b}'


def stow(
    stack: LocalStack,
    *datas: bytes,
    study: str | None = None,
    content_type: str | None = None,
    key: str | None = None,
    aet: str = "MODALITY1",
) -> requests.Response:
    boundary = new_boundary()
    url = f"{stack.base_url}/stowRsListener/{aet}/studies" + (f"/{study}" if study else "")
    headers = {"Content-Type": content_type or MULTIPART.format(b=boundary)}
    if key is not None:
        headers["Authorization"] = key
    else:
        headers["Authorization"] = stack.api_key
    body = build_related([(d, "application/dicom") for d in datas], boundary)
    return requests.post(url, data=body, headers=headers, timeout=60)


def study_row(stack: LocalStack, study_uid: str) -> StudyRow:
    """The study as the stack's index holds it (read through the Catalog port)."""
    (row,) = stack.archive.catalog.studies_by_uid([study_uid])
    return row


def instance_row(stack: LocalStack, sop_uid: str) -> InstanceRow:
    (row,) = stack.archive.catalog.instances_by_uid([sop_uid])
    return row


def referenced(response: requests.Response) -> list[dict[str, Any]]:
    return list(response.json().get("00081199", {}).get("Value", []))


def failed(response: requests.Response) -> list[dict[str, Any]]:
    return list(response.json().get("00081198", {}).get("Value", []))


@pytest.mark.parametrize(("ts", "name"), sorted(dicom_files.BY_TRANSFER_SYNTAX.items()))
def test_every_transfer_syntax_stores(local_stack: LocalStack, ts: str, name: str) -> None:
    data = dicom_files.data(name)
    response = stow(local_stack, data)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    (item,) = referenced(response)
    sop_uid = item["00081155"]["Value"][0]
    retrieve = item["00081190"]["Value"][0]
    assert retrieve.startswith(f"{local_stack.base_url}/rs/studies/")
    assert retrieve.endswith(f"/instances/{sop_uid}")
    # The stored object is byte-identical to what was sent.
    sha = hashlib.sha256(data).hexdigest()
    key = instance_row(local_stack, sop_uid).blob_key
    assert key.endswith(f"/{sop_uid}.{sha}.dcm")
    assert local_stack.archive.objects.get(key) == data


@pytest.mark.parametrize("case", dicom_files.REJECTED, ids=lambda c: c.name)
def test_broken_and_non_dicom_files_get_409_with_reason(local_stack: LocalStack, case) -> None:
    response = stow(local_stack, dicom_files.data(case.name))
    assert response.status_code == 409
    assert failed(response)[0]["00081197"]["Value"] == [case.reason]


def test_two_instances_in_one_request(local_stack: LocalStack) -> None:
    study = "1.2.826.0.1.3680043.8.498.1001"
    response = stow(
        local_stack, dicom_files.with_new_uids(study=study), dicom_files.with_new_uids(study=study)
    )
    assert response.status_code == 200
    assert len(referenced(response)) == 2
    assert response.json()["00081190"]["Value"] == [f"{local_stack.base_url}/rs/studies/{study}"]
    assert study_row(local_stack, study).n_instances == 2


def test_one_good_one_truncated_is_202(local_stack: LocalStack) -> None:
    response = stow(local_stack, dicom_files.with_new_uids(), dicom_files.data("MR_truncated.dcm"))
    assert response.status_code == 202
    assert len(referenced(response)) == 1 and len(failed(response)) == 1


def test_study_in_url_must_match_the_dataset(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids(study="1.2.826.0.1.3680043.8.498.1002")
    response = stow(local_stack, data, study="1.2.826.0.1.3680043.8.498.1003")
    assert response.status_code == 409
    assert failed(response)[0]["00081197"]["Value"] == [0xC409]
    assert stow(local_stack, data, study="1.2.826.0.1.3680043.8.498.1002").status_code == 200


def test_duplicates_identical_and_different(local_stack: LocalStack) -> None:
    study = "1.2.826.0.1.3680043.8.498.1004"
    original = dicom_files.with_new_uids(study=study)
    assert stow(local_stack, original).status_code == 200
    assert stow(local_stack, original).status_code == 200  # idempotent
    assert study_row(local_stack, study).n_instances == 1
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(original))
    ds.StudyDescription = "other content"
    other = io.BytesIO()
    ds.save_as(other, enforce_file_format=True)
    response = stow(local_stack, other.getvalue())
    assert response.status_code == 409
    assert failed(response)[0]["00081197"]["Value"] == [0x0111]
    assert study_row(local_stack, study).n_instances == 1


def test_twenty_concurrent_stows_into_one_study_leave_exact_counts(local_stack: LocalStack) -> None:
    study = "1.2.826.0.1.3680043.8.498.1005"
    datas = [
        dicom_files.with_new_uids(study=study, series=f"{study}.{i % 4}", patient_id="CONC1")
        for i in range(20)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda d: stow(local_stack, d), datas + datas[:5]))
    assert [r.status_code for r in responses] == [200] * 25
    # Each reply names the instance its own request carried (concurrent invocations share
    # one process in the local stack: none may read another's request).
    sent = [_sop(d) for d in datas + datas[:5]]
    answered = [[r["00081155"]["Value"][0] for r in referenced(x)] for x in responses]
    assert answered == [[sop] for sop in sent]
    row = study_row(local_stack, study)
    assert row.n_instances == 20
    assert row.n_series == 4
    for data in datas:
        assert instance_row(local_stack, _sop(data)).study_uid == study


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_calling_aet_is_recorded(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids()
    response = stow(local_stack, data, aet="CT_SCANNER_7")
    assert response.status_code == 200
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    assert instance_row(local_stack, ds.SOPInstanceUID).calling_aet == "CT_SCANNER_7"


@pytest.mark.parametrize("key", ["", "wrong-key-0123456789"])
def test_missing_or_wrong_key_is_401(local_stack: LocalStack, key: str) -> None:
    response = stow(local_stack, dicom_files.with_new_uids(), key=key)
    assert response.status_code == 401
    assert "message" in response.json()
    assert response.headers.get("Access-Control-Allow-Origin")


def test_wrong_content_type_is_415(local_stack: LocalStack) -> None:
    response = stow(local_stack, dicom_files.with_new_uids(), content_type="application/json")
    assert response.status_code == 415
    assert response.json()["message"]


def test_malformed_multipart_is_400(local_stack: LocalStack) -> None:
    response = requests.post(
        f"{local_stack.base_url}/stowRsListener/AE/studies",
        data=b"garbage without delimiters",
        headers={"Authorization": local_stack.api_key, "Content-Type": MULTIPART.format(b="zzz")},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["message"]


def test_body_over_inline_limit_is_413_with_guidance(local_stack: LocalStack) -> None:
    big = dicom_files.with_new_uids() + b"\0" * 4_600_000
    response = stow(local_stack, big)
    assert response.status_code == 413
    assert "at most" in response.json()["message"]


def test_chunked_request_body(local_stack: LocalStack) -> None:
    boundary = new_boundary()
    body = build_related([(dicom_files.with_new_uids(), "application/dicom")], boundary)

    def chunks():
        for i in range(0, len(body), 7000):
            yield body[i : i + 7000]

    response = requests.post(
        f"{local_stack.base_url}/stowRsListener/AE/studies",
        data=chunks(),
        headers={
            "Authorization": local_stack.api_key,
            "Content-Type": MULTIPART.format(b=boundary),
        },
        timeout=30,
    )
    assert response.status_code == 200


def test_dicomweb_client_store_instances(local_stack: LocalStack) -> None:
    import io

    import pydicom
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(
        url=local_stack.base_url,
        stow_url_prefix="stowRsListener/PYCLIENT",
        headers={"Authorization": local_stack.api_key},
    )
    study = "1.2.826.0.1.3680043.8.498.1006"
    datasets = [
        pydicom.dcmread(io.BytesIO(dicom_files.with_new_uids(study=study))) for _ in range(3)
    ]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 3
    # dicomweb-client sends Host without the port; the URLs must still lead back here.
    assert result.ReferencedSOPSequence[0].RetrieveURL.startswith(local_stack.base_url)
    assert study_row(local_stack, study).n_instances == 3
    result = client.store_instances(datasets[:1], study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 1
