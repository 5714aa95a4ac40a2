"""The upload path over HTTP, as a client drives it: instances of any size in, byte-identical
out; quarantine, duplicates, bulk drops; on the embedded backend and on moto."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from local.stack import LocalStack
from shared.dicom import failures
from tests import dicom_files, uploads

pytestmark = pytest.mark.integration

LARGE_BYTES = 150 * 1000 * 1000


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 150 MB multi-frame CT nobody stored."""
    return uploads.large_multiframe(tmp_path_factory.mktemp("large") / "large.dcm", LARGE_BYTES)


def test_a_radiograph_over_stow_s_limit_is_stored_and_retrieved_byte_identical(
    local_stack: LocalStack,
) -> None:
    data = dicom_files.with_new_uids("RG1_UNCR.dcm")  # 7.2 MB: STOW answers 413
    stow = requests.post(
        f"{local_stack.base_url}/stowRsListener/UPLOADER/studies",
        data=data,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert stow.status_code == 413  # by API Gateway: the event would exceed Lambda's 6 MB
    just_over = requests.post(  # a body STOW's function still sees: its 413 names the path
        f"{local_stack.base_url}/stowRsListener/UPLOADER/studies",
        data=data[:4_600_000],
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert just_over.status_code == 413
    assert "/uploads" in just_over.json()["message"]
    found = uploads.send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert uploads.retrieve(local_stack, found["retrieveUrl"]) == data


def test_a_150_mb_multiframe_goes_through_multipart_byte_identical(
    local_stack: LocalStack, large_instance: Path
) -> None:
    data = large_instance.read_bytes()
    found = uploads.send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert uploads.retrieve(local_stack, found["retrieveUrl"]) == data
    again = uploads.send(local_stack, data)
    assert again["status"] == "duplicate"


def test_a_corrupt_upload_ends_quarantined_with_its_reason(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("MR_small.dcm")
    found = uploads.send(local_stack, data[: len(data) - 100])
    assert found["status"] == "failed"
    assert found["failureReason"] == failures.CANNOT_UNDERSTAND
    quarantined = local_stack.data_dir / "objects" / found["quarantineKey"]
    assert quarantined.read_bytes() == data[: len(data) - 100]


def test_files_dropped_under_incoming_are_ingested_and_listed(local_stack: LocalStack) -> None:
    prefix = f"drop-{generate_uid()[-12:]}/"
    folder = local_stack.data_dir / "objects" / "incoming" / prefix
    folder.mkdir(parents=True)
    names = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"]
    for i, name in enumerate(names):
        (folder / f"{i}.dcm").write_bytes(dicom_files.with_new_uids(name))
    (folder / "notes.txt").write_text("not DICOM")
    headers = {"Authorization": local_stack.api_key}
    url = f"{local_stack.base_url}/stowRsListener/ANY/uploads"
    deadline = time.monotonic() + 60
    while True:
        listed = requests.get(url, params={"prefix": prefix}, headers=headers, timeout=30).json()
        if len(listed["results"]) == 4:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)
    statuses = {r["key"].rsplit("/", 1)[1]: r["status"] for r in listed["results"]}
    assert statuses == {
        "0.dcm": "stored",
        "1.dcm": "stored",
        "2.dcm": "stored",
        "notes.txt": "failed",
    }
    assert not any(folder.iterdir())
    for result in listed["results"][:3]:
        assert (
            requests.head(result["retrieveUrl"], headers=headers, timeout=30).status_code
            in (
                200,
                405,
            )
            or requests.get(
                result["retrieveUrl"] + "/metadata", headers=headers, timeout=30
            ).status_code
            == 200
        )


def test_the_upload_path_works_on_moto(moto_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("RG1_UNCR.dcm")
    found = uploads.send(moto_stack, data)
    assert found["status"] == "stored", found
    assert uploads.retrieve(moto_stack, found["retrieveUrl"]) == data


def test_ingesting_150_mb_needs_far_less_memory_than_the_object(
    large_instance: Path, tmp_path: Path
) -> None:
    """Values stay on disk: the peak resident set grows by far less than the object."""
    found = uploads.ingest_alone(large_instance, tmp_path)
    assert found["status"] == "stored"
    assert found["added_mb"] < 48, found  # a 150 MB object
