"""The upload path over HTTP, as a client drives it: instances of any size in, byte-identical
out; quarantine, duplicates, bulk drops; on the embedded backend and on moto."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from local.stack import LocalStack
from local.template import PROJECT_ROOT
from shared.dicom import failures
from tests import dicom_files

pytestmark = pytest.mark.integration

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
LARGE_BYTES = 150 * 1000 * 1000


def send(stack: LocalStack, data: bytes, aet: str = "UPLOADER", **declared: Any) -> dict:
    """Ask for an upload, PUT the object (or its parts), complete, and wait for the result."""
    headers = {"Authorization": stack.api_key}
    root = f"{stack.base_url}/stowRsListener/{aet}/uploads"
    created = requests.post(root, json={"size": len(data), **declared}, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    answer = created.json()
    if "upload" in answer:
        put = requests.put(
            answer["upload"]["url"], data=data, headers=answer["upload"]["headers"], timeout=300
        )
        assert put.status_code == 200, put.text
    else:
        multipart, parts = answer["multipart"], []
        size = multipart["partSize"]
        for part in multipart["parts"]:
            start = (part["partNumber"] - 1) * size
            put = requests.put(part["url"], data=data[start : start + size], timeout=300)
            assert put.status_code == 200, put.text
            parts.append({"partNumber": part["partNumber"], "etag": put.headers["ETag"]})
        done = requests.post(
            multipart["completeUrl"], json={"parts": parts}, headers=headers, timeout=300
        )
        assert done.status_code == 202, done.text
    return wait(answer["statusUrl"], headers)


def wait(url: str, headers: dict[str, str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = requests.get(url, headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        found: dict = reply.json()
        if found["status"] != "pending":
            return found
        assert time.monotonic() < deadline, "the upload was not ingested in time"
        time.sleep(0.2)


def retrieve(stack: LocalStack, url: str) -> bytes:
    """The stored instance as stored (WADO-RS, following the 303 to the object)."""
    reply = requests.get(
        url, headers={"Authorization": stack.api_key, "Accept": AS_STORED}, timeout=300
    )
    assert reply.status_code == 200, reply.text[:200]
    boundary = reply.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    body = reply.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(f"\r\n--{boundary}--".encode())
    return body[start:end]


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 150 MB multi-frame CT nobody stored (512 x 512 x 16 bit, 286 frames)."""
    frames = LARGE_BYTES // (512 * 512 * 2) + 1
    ds = pydicom.dcmread(dicom_files.path("CT_small.dcm"))
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    pixels = np.arange(512 * 512 * frames, dtype=np.uint16) % 4096
    ds.PixelData = pixels.tobytes()
    path = tmp_path_factory.mktemp("large") / "large.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


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
    found = send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert retrieve(local_stack, found["retrieveUrl"]) == data


def test_a_150_mb_multiframe_goes_through_multipart_byte_identical(
    local_stack: LocalStack, large_instance: Path
) -> None:
    data = large_instance.read_bytes()
    found = send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert retrieve(local_stack, found["retrieveUrl"]) == data
    again = send(local_stack, data)
    assert again["status"] == "duplicate"


def test_a_corrupt_upload_ends_quarantined_with_its_reason(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("MR_small.dcm")
    found = send(local_stack, data[: len(data) - 100])
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
    found = send(moto_stack, data)
    assert found["status"] == "stored", found
    assert retrieve(moto_stack, found["retrieveUrl"]) == data


def test_ingesting_150_mb_needs_far_less_memory_than_the_object(
    large_instance: Path, tmp_path: Path
) -> None:
    """Peak memory of ingesting the 150 MB object, in a process of its own (ru_maxrss),
    against the same process's peak before it: values stay on disk."""
    objects = tmp_path / "objects"
    (objects / "incoming").mkdir(parents=True)
    (objects / "incoming" / "large.dcm").hardlink_to(large_instance)
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        from pathlib import Path
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from shared.adapters.file_blobs import FileBlobStore
        from shared.adapters.sqlite_index import SqliteIndex
        from shared.services import ingest
        import pydicom, numpy  # loaded before the baseline, as in a warm function
        store = FileBlobStore(Path({str(objects)!r}))
        index = SqliteIndex(Path({str(tmp_path / "index.sqlite3")!r}))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome = ingest.ingest("incoming/large.dcm", store=store, index=index,
                                inflate_limit=1 << 28)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"status": outcome.status, "peak_kib": after - before}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["status"] == "stored"
    assert found["peak_kib"] * 1024 < 48 << 20, found  # 150 MB object, < 48 MB more memory
