"""The upload path as a client drives it (tests and benchmarks): ask, PUT, complete, wait."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from local.stack import LocalStack
from local.template import PROJECT_ROOT
from tests.support import dicom_files

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def send(stack: LocalStack, data: bytes, aet: str = "UPLOADER", **declared: Any) -> dict:
    """Ask for an upload, PUT the object (or its parts), complete, and wait for the result."""
    headers = {"Authorization": stack.api_key}
    answer = ask(stack, len(data), aet, **declared)
    put_object(answer, data, headers)
    return wait(answer["statusUrl"], headers)


def ask(stack: LocalStack, size: int, aet: str = "UPLOADER", **declared: Any) -> dict:
    """POST .../uploads: the 201 answer (where to send the object)."""
    created = requests.post(
        f"{stack.base_url}/stowRsListener/{aet}/uploads",
        json={"size": size, **declared},
        headers={"Authorization": stack.api_key},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    answer: dict = created.json()
    return answer


def put_object(answer: dict, data: bytes, headers: dict[str, str]) -> None:
    """Send the object where the upload's answer says: one PUT, or the parts then complete."""
    if "upload" in answer:
        put = requests.put(
            answer["upload"]["url"], data=data, headers=answer["upload"]["headers"], timeout=300
        )
        assert put.status_code == 200, put.text
        return
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


def large_multiframe(path: Path, size: int) -> Path:
    """A multi-frame CT of at least ``size`` bytes nobody stored (512 x 512 x 16 bit frames,
    from CT_small's attributes, fresh UIDs)."""
    frames = size // (512 * 512 * 2) + 1
    ds = pydicom.dcmread(dicom_files.path("CT_small.dcm"))
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(512 * 512 * frames, dtype=np.uint16) % 4096).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ingest_alone(path: Path, workdir: Path) -> dict[str, Any]:
    """Ingest ``path`` from ``incoming/`` in a warm process of its own (files + SQLite):
    its outcome, seconds, and the memory it added: the peak resident set (VmHWM, reset
    once the libraries are loaded) over the resident set before, in MB."""
    objects = workdir / "objects"
    (objects / "incoming").mkdir(parents=True)
    (objects / "incoming" / path.name).hardlink_to(path)
    script = textwrap.dedent(
        f"""
        import json, re, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from shared.adapters.file_blobs import FileBlobStore
        from shared.adapters.sqlite_index import SqliteIndex
        from shared.services import ingest
        import numpy, pydicom  # loaded first, as in a warm function

        def kib(field):
            with open("/proc/self/status") as status:
                return int(re.search(field + r":\\s+(\\d+)", status.read()).group(1))

        store = FileBlobStore(Path({str(objects)!r}))
        index = SqliteIndex(Path({str(workdir / "index.sqlite3")!r}))
        with open("/proc/self/clear_refs", "w") as reset:
            reset.write("5")  # the peak resident set starts again from here
        before = kib("VmRSS")
        started = time.perf_counter()
        outcome = ingest.ingest("incoming/{path.name}", store=store, index=index,
                                inflate_limit=1 << 28)
        seconds = time.perf_counter() - started
        print(json.dumps({{"status": outcome.status, "s": seconds,
                           "added_mb": (kib("VmHWM") - before) / 1024}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    found: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return found
