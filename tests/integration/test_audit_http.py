"""The audit trail through the local stack: every request leaves one JSON line naming the
key and the studies it touched, and no patient name or ID."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
import requests

from local.stack import LocalStack
from tests.support import dicom_files
from tools import audit as audit_tool

pytestmark = pytest.mark.integration


def test_store_search_and_retrieve_are_audited_without_patient_data(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    name, patient_id = "AUDITPATIENT^SECRET", "PID-AUDIT-4711"
    data = dicom_files.with_new_uids(PatientName=name, patient_id=patient_id)
    ds = pydicom.dcmread(io.BytesIO(data))
    study = str(ds.StudyInstanceUID)
    headers = {"Authorization": local_stack.api_key}
    base = local_stack.base_url
    trail = local_stack.data_dir / "audit.jsonl"
    before = len(trail.read_text().splitlines()) if trail.exists() else 0
    stored = requests.post(
        f"{base}/stowRsListener/AUDIT/studies",
        data=data,
        headers={**headers, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert stored.status_code == 200
    found = requests.get(
        f"{base}/qido/AUDIT/studies",
        params={"PatientName": "AUDITPATIENT*"},
        headers=headers,
        timeout=60,
    )
    assert found.status_code == 200 and found.json()
    assert requests.get(f"{base}/rs/studies/{study}/metadata", headers=headers, timeout=60).ok
    assert (
        requests.get(
            f"{base}/rs/studies/{study}",
            headers={"Authorization": "o3k_wrong-key-0000000"},
            timeout=60,
        ).status_code
        == 401
    )

    lines = trail.read_text().splitlines()[before:]
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if study in r["studies"]]
    assert [(r["event"], r["action"], r["status"]) for r in mine] == [
        ("DICOM Instances Transferred", "C", 200),
        ("Query", "E", 200),
        ("DICOM Instances Accessed", "R", 200),
    ]
    assert all(r["keyId"] and r["sourceIp"] for r in mine)
    assert mine[1]["queryKeys"] == ["PatientName"]
    text = "\n".join(lines)
    for secret in ("AUDITPATIENT", "SECRET", patient_id):
        assert secret not in text

    capsys.readouterr()  # what the stack printed (its logs and metrics)
    assert audit_tool.main(["--study", study, "--data-dir", str(local_stack.data_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
