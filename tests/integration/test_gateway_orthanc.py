"""Orthanc (Debian's 1.10), a PACS nobody here wrote, uses the gateway as a DICOM modality:
it queries the archive through it (C-FIND) and retrieves a study into itself (C-MOVE with
Orthanc as the destination). What Orthanc then holds is the archive's data set, byte for
byte."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pydicom
import pytest
import requests

from shared import keys
from tests.support import dicom_files
from tests.support import orthanc as peer
from tests.support.debian_tools import ORTHANC_DICOMWEB_PLUGIN, require_debian_tool
from tests.support.gateway_run import GATEWAY_AE, gateway, stow
from tests.support.served import free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.tools, pytest.mark.xdist_group("gateway")]

ORTHANC_AE = "ORTHANC"


def body(part10: bytes) -> bytes:
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def test_orthanc_finds_and_retrieves_through_the_gateway(tmp_path: Path) -> None:
    binary = require_debian_tool("Orthanc", "orthanc")
    require_debian_tool(ORTHANC_DICOMWEB_PLUGIN, "orthanc-dicomweb")
    key, _ = keys.generate("gateway-orthanc")
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = [
        dicom_files.with_new_uids(
            "CT_small.dcm",
            study=study,
            series=series,
            patient_id="P-ORTHANC",
            PatientName="Peer^Orthanc",
            InstanceNumber=n,
        )
        for n in range(5)
    ]
    sent = {
        str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID): f
        for f in files
    }
    (tmp_path / "stack").mkdir()
    gateway_port, orthanc_dicom = free_port(), free_port()
    modalities = {"gateway": [GATEWAY_AE, "127.0.0.1", gateway_port]}
    with served(tmp_path / "stack", key) as stack:
        stow(stack.base_url, key, files)
        with (
            gateway(
                tmp_path,
                stack.base_url,
                key,
                gateway_port,
                tmp_path / "spool",
                allow=(ORTHANC_AE,),
                extra=["--destination", f"{ORTHANC_AE}=127.0.0.1:{orthanc_dicom}"],
            ),
            peer.running(
                tmp_path / "orthanc",
                binary,
                dicom_port=orthanc_dicom,
                config={"DicomAet": ORTHANC_AE, "DicomModalities": modalities},
            ) as orthanc,
        ):
            http = requests.Session()
            reply = http.post(
                f"{orthanc.url}/modalities/gateway/query",
                json={"Level": "Study", "Query": {"PatientID": "P-ORTHANC", "StudyDate": ""}},
                timeout=60,
            )
            reply.raise_for_status()
            query = reply.json()["ID"]
            answers = http.get(f"{orthanc.url}/queries/{query}/answers", timeout=60).json()
            assert len(answers) == 1
            content = http.get(
                f"{orthanc.url}/queries/{query}/answers/0/content?simplify", timeout=60
            ).json()
            assert content["StudyInstanceUID"] == study
            assert content["PatientID"] == "P-ORTHANC"
            reply = http.post(
                f"{orthanc.url}/queries/{query}/retrieve",
                json={"TargetAet": ORTHANC_AE, "Synchronous": True},
                timeout=300,
            )
            assert reply.ok, reply.text
            deadline = time.monotonic() + 60
            while len(http.get(f"{orthanc.url}/instances", timeout=60).json()) < len(files):
                assert time.monotonic() < deadline, "Orthanc did not receive the study"
                time.sleep(0.5)
            held = {}
            for instance in http.get(f"{orthanc.url}/instances", timeout=60).json():
                data = http.get(f"{orthanc.url}/instances/{instance}/file", timeout=60).content
                uid = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
                held[str(uid)] = data
    assert sorted(held) == sorted(sent)
    for uid, data in held.items():
        assert body(data) == body(sent[uid]), uid
