"""DELETE and restore on the moto backend (S3 and DynamoDB as boto3 sees them): the same
answers as on the embedded backend (tests/integration/test_lifecycle_http.py)."""

from __future__ import annotations

import io

import pydicom
import pytest
import requests

from local.stack import LocalStack
from tests.support import dicom_files

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.7400"
SERIES = (f"{STUDY}.1", f"{STUDY}.2")


def _call(stack: LocalStack, method: str, path: str, **params: str) -> requests.Response:
    return requests.request(
        method,
        f"{stack.base_url}/{path}",
        params=params,
        headers={"Authorization": stack.api_key},
        timeout=60,
    )


def _count(stack: LocalStack) -> int:
    found = _call(
        stack,
        "GET",
        "qido/M/studies",
        StudyInstanceUID=STUDY,
        includefield="NumberOfStudyRelatedInstances",
    )
    assert found.status_code in (200, 204), found.text
    rows = found.json() if found.status_code == 200 else []
    return int(rows[0]["00201208"]["Value"][0]) if rows else 0


def test_delete_and_restore_on_dynamodb_and_s3(moto_stack: LocalStack) -> None:
    datas = [
        dicom_files.with_new_uids(study=STUDY, series=s, PatientID="MOTO-LC", PatientName="Qwrt^M")
        for s in (SERIES[0], SERIES[0], SERIES[1])
    ]
    for data in datas:
        response = requests.post(
            f"{moto_stack.base_url}/stowRsListener/M/studies",
            data=data,
            headers={"Authorization": moto_stack.api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
    sops = [str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in datas]
    assert _count(moto_stack) == 3

    assert _call(moto_stack, "DELETE", f"rs/studies/{STUDY}/series/{SERIES[1]}").status_code == 204
    assert _count(moto_stack) == 2
    gone = f"rs/studies/{STUDY}/series/{SERIES[1]}/instances/{sops[2]}"
    assert _call(moto_stack, "GET", gone).status_code == 404
    assert _call(moto_stack, "GET", f"{gone}/metadata").status_code == 404

    assert _call(moto_stack, "DELETE", f"rs/studies/{STUDY}").status_code == 204
    assert _call(moto_stack, "DELETE", f"rs/studies/{STUDY}").status_code == 404
    assert _count(moto_stack) == 0
    substring = _call(moto_stack, "GET", "qido/M/studies", PatientName="*wrt*")
    assert STUDY not in substring.text

    restored = _call(moto_stack, "POST", f"rs/restore/studies/{STUDY}")
    assert restored.status_code == 200, restored.text
    assert restored.json()["restored"] == 3
    assert _count(moto_stack) == 3
    assert STUDY in _call(moto_stack, "GET", "qido/M/studies", PatientName="*wrt*").text
    for data, sop in zip(datas, sops, strict=True):
        ds = pydicom.dcmread(io.BytesIO(data))
        response = _call(
            moto_stack,
            "GET",
            "wado",
            requestType="WADO",
            studyUID=STUDY,
            seriesUID=str(ds.SeriesInstanceUID),
            objectUID=sop,
            contentType="application/dicom",
        )
        assert response.status_code == 200 and response.content == data
