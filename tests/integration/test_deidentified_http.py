"""The read-deidentified view end to end over HTTP on the local stack (emulator -> TOKEN
authorizer and its policy -> functions -> files and SQLite): a key with only
``read-deidentified`` searches and retrieves by de-identified UIDs, gets de-identified
answers, cannot store, and reaches nothing by original UIDs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.adapters.local_secrets import secret
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from shared.dicom.uid_map import map_uid
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

pytestmark = pytest.mark.integration

NAME, PATIENT_ID = "Qwzxtrvb^Plmkjhn", "DEIDHTTP0042"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str]]:
    data_dir: Path = tmp_path_factory.mktemp("deid-http")
    deid_key, entry = keys.generate("research partner", (keys.READ_DEIDENTIFIED,))
    FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).add(entry)
    full_key, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with LocalStack(port=0, api_key=full_key, data_dir=data_dir) as running:
        yield running, deid_key


def test_a_deidentified_key_sees_only_deidentified_data(stack) -> None:
    running, deid_key = stack
    data = dicom_files.with_new_uids(PatientName=NAME, PatientID=PATIENT_ID)
    ds = pydicom.dcmread(io.BytesIO(data))
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    boundary = new_boundary()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    stored = requests.post(
        f"{running.base_url}/stowRsListener/AE/studies",
        data=build_related([(data, "application/dicom")], boundary),
        headers={"Content-Type": content_type, "Authorization": running.api_key},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    refused = requests.post(
        f"{running.base_url}/stowRsListener/AE/studies",
        data=build_related([(data, "application/dicom")], boundary),
        headers={"Content-Type": content_type, "Authorization": deid_key},
        timeout=60,
    )
    assert refused.status_code == 403  # the authorizer's policy: no store scope

    key = secret(running.data_dir / SECRETS_DIR / "anonymization.key")
    d_study, d_series, d_sop = (map_uid(u, key) for u in (study, series, sop))
    headers = {"Authorization": deid_key}
    found = requests.get(
        f"{running.base_url}/qido/AE/studies",
        params={"StudyInstanceUID": d_study, "includefield": "all"},
        headers=headers,
        timeout=60,
    )
    assert found.status_code == 200, found.text
    (result,) = found.json()
    assert result["0020000D"]["Value"] == [d_study]
    for text in (study, series, sop, PATIENT_ID, "Qwzxtrvb", "Plmkjhn"):
        assert text not in found.text
    assert (
        requests.get(
            f"{running.base_url}/qido/AE/studies",
            params={"PatientID": PATIENT_ID},
            headers=headers,
            timeout=60,
        ).status_code
        == 400
    )
    by_original = requests.get(
        f"{running.base_url}/qido/AE/studies",
        params={"StudyInstanceUID": study},
        headers=headers,
        timeout=60,
    )
    assert by_original.status_code in (200, 204) and by_original.content in (b"", b"[]")

    instance = f"{running.base_url}/rs/studies/{d_study}/series/{d_series}/instances/{d_sop}"
    metadata = requests.get(instance + "/metadata", headers=headers, timeout=60)
    assert metadata.status_code == 200, metadata.text
    (document,) = json.loads(metadata.content)
    assert document["00080018"]["Value"] == [d_sop]
    for text in (study, series, sop, PATIENT_ID, "Qwzxtrvb"):
        assert text.encode() not in metadata.content
    original = f"{running.base_url}/rs/studies/{study}/series/{series}/instances/{sop}"
    assert requests.get(original + "/metadata", headers=headers, timeout=60).status_code == 404
    uri = requests.get(
        f"{running.base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": d_study,
            "seriesUID": d_series,
            "objectUID": d_sop,
            "contentType": "application/dicom",
        },
        headers=headers,
        timeout=60,
    )
    assert uri.status_code == 200
    assert pydicom.dcmread(io.BytesIO(uri.content)).SOPInstanceUID == d_sop
