"""``dicomweb-gateway`` with dcmtk's ``storescu``/``echoscu`` (Debian dcmtk, installed on
demand by tests/support/debian_tools.py) in front and the local stack behind, each in its
own process.

* C-ECHO answers for an allowed calling AE; another AE is rejected at association.
* Without ``--allow``: ``storescu -aet ..`` (``.``, ``CT/1``: titles the archive's URL cannot
  carry) is rejected at association, an odd but usable title (``CT 1&(x)``) is stored and
  forwarded, and the spool keeps nothing outside its AE folders.
* A folder sent with ``storescu`` (one file per transfer syntax of the corpus) ends with every
  instance retrievable from the archive, and the spool empty.
* The gateway killed with SIGKILL in the middle of a transfer loses nothing: every instance
  ``storescu`` saw acknowledged is in the archive once a new gateway has forwarded the spool.
"""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from shared import keys
from tests.support import dicom_files
from tests.support.debian_tools import require_debian_tool
from tests.support.gateway_run import GATEWAY_AE, MODALITY_AE, gateway
from tests.support.served import Served, free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.tools, pytest.mark.xdist_group("gateway")]


def spooled(spool: Path) -> list[Path]:
    return sorted((spool / "ready").rglob("*.dcm"))


def wait_forwarded(spool: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while spooled(spool):
        assert time.monotonic() < deadline, f"still spooled: {len(spooled(spool))}"
        time.sleep(0.2)


def retrieve(stack: Served, data: bytes) -> requests.Response:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return requests.get(
        f"{stack.base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom",
        },
        headers={"Authorization": stack.api_key},
        timeout=60,
    )


def same_instance(stored: bytes, sent: bytes) -> bool:
    """The archive holds the instance the modality sent. The gateway writes its own file
    meta, and dcmsend may decompress a file on the way, so compare the identity and the
    attributes outside the pixel data."""
    a = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True)
    b = pydicom.dcmread(io.BytesIO(sent), stop_before_pixels=True)
    keys = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows")
    return all(a.get(k) == b.get(k) for k in keys)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Served]:
    key, _ = keys.generate("gateway-test")
    folder = tmp_path / "stack"
    folder.mkdir()
    with served(folder, key) as running:
        yield running


def test_echo_and_the_calling_ae_policy(tmp_path: Path, stack: Served) -> None:
    echoscu = require_debian_tool("echoscu", "dcmtk")
    port = free_port()
    with gateway(tmp_path, stack.base_url, stack.api_key, port, tmp_path / "spool"):
        allowed = subprocess.run(
            [echoscu, "-aet", MODALITY_AE, "-aec", GATEWAY_AE, "127.0.0.1", str(port)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        stranger = subprocess.run(
            [echoscu, "-aet", "STRANGER", "-aec", GATEWAY_AE, "127.0.0.1", str(port)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert allowed.returncode == 0, allowed.stderr
    assert stranger.returncode != 0
    assert b"Rejected" in stranger.stderr + stranger.stdout


def storescu_run(
    storescu: str, port: int, folder: Path, calling: str = MODALITY_AE
) -> subprocess.CompletedProcess[bytes]:
    """``storescu`` of a folder (``+sd``) in one association."""
    return subprocess.run(
        [
            storescu,
            "-aet",
            calling,
            "-aec",
            GATEWAY_AE,
            "127.0.0.1",
            str(port),
            "+sd",
            str(folder),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_dot_titles_are_rejected_and_odd_ones_kept_inside_the_spool(
    tmp_path: Path, stack: Served
) -> None:
    storescu = require_debian_tool("storescu", "dcmtk")
    folder = tmp_path / "modality"
    folder.mkdir()
    data = dicom_files.with_new_uids("CT_small.dcm")
    (folder / "1.dcm").write_bytes(data)
    port, spool = free_port(), tmp_path / "spool"
    with gateway(tmp_path, stack.base_url, stack.api_key, port, spool, allow=()) as running:
        for title in ("..", ".", "CT/1"):
            refused = storescu_run(storescu, port, folder, calling=title)
            assert refused.returncode != 0, title
            assert b"Calling AE Title Not Recognized" in refused.stderr + refused.stdout
        stored = storescu_run(storescu, port, folder, calling="CT 1&(x)")
        assert stored.returncode == 0, stored.stderr
        wait_forwarded(spool)
        running.terminate()
        running.wait(timeout=30)
    assert sorted(p.name for p in spool.iterdir()) == ["failed", "incoming", "ready", "receiving"]
    assert not list((spool / "receiving").iterdir())
    assert not list(spool.glob("*.dcm"))
    assert not list((spool / "ready").glob("*.dcm"))
    assert not list((spool / "failed").iterdir())
    reply = retrieve(stack, data)
    assert reply.status_code == 200
    assert same_instance(reply.content, data)
    log = next(tmp_path.glob("gateway-*.log")).read_text()
    assert "no --allow" in log


def test_storescu_folder_ends_retrievable(tmp_path: Path, stack: Served) -> None:
    """A folder of CT and MR slices sent by ``storescu``, then a folder with one file per
    transfer syntax of the corpus sent by dcmtk's ``dcmsend`` (storescu 3.6.7 proposes
    a compressed syntax only in some cases; dcmsend proposes each file's own)."""
    storescu = require_debian_tool("storescu", "dcmtk")
    dcmsend = require_debian_tool("dcmsend", "dcmtk")
    folder, singles = tmp_path / "modality", tmp_path / "singles"
    folder.mkdir()
    singles.mkdir()
    sent = []
    for number in range(20):
        data = dicom_files.with_new_uids("CT_small.dcm" if number % 2 else "MR_small.dcm")
        (folder / f"{number:02d}.dcm").write_bytes(data)
        sent.append(data)
    # dcmtk 3.6.7 cannot send 693_J2KI.dcm and rtdose_rle.dcm (odd-length pixel data)
    names = {
        **dicom_files.BY_TRANSFER_SYNTAX,
        "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
        "1.2.840.10008.1.2.5": "SC_rgb_rle.dcm",
    }
    for number, name in enumerate(names.values()):
        data = dicom_files.with_new_uids(name)
        (singles / f"{number:02d}.dcm").write_bytes(data)
        sent.append(data)
    port, spool = free_port(), tmp_path / "spool"
    with gateway(tmp_path, stack.base_url, stack.api_key, port, spool):
        done = storescu_run(storescu, port, folder)
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [
                dcmsend,
                "-aet",
                MODALITY_AE,
                "-aec",
                GATEWAY_AE,
                "127.0.0.1",
                str(port),
                "+sd",
                str(singles),
            ],
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        wait_forwarded(spool)
    assert not list((spool / "failed").iterdir())
    for data in sent:
        reply = retrieve(stack, data)
        assert reply.status_code == 200
        assert same_instance(reply.content, data)


def test_sigkill_mid_transfer_loses_nothing(tmp_path: Path, stack: Served) -> None:
    """The first gateway forwards to a port where nothing listens, so what it acknowledged
    stays in its spool; it is killed while ``storescu`` is still sending. A second gateway on
    the same spool forwards every acknowledged instance."""
    storescu = require_debian_tool("storescu", "dcmtk")
    folder = tmp_path / "modality"
    folder.mkdir()
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = {}
    for number in range(80):
        path = folder / f"{number:03d}.dcm"
        data = dicom_files.with_new_uids("CT_small.dcm", study=study, series=series)
        path.write_bytes(data)
        files[str(path)] = data
    port, spool = free_port(), tmp_path / "spool"
    nowhere = f"http://127.0.0.1:{free_port()}/o3-dpacs-wado"
    with gateway(tmp_path, nowhere, stack.api_key, port, spool) as first:
        sender = subprocess.Popen(
            [
                storescu,
                "-v",
                "-aet",
                MODALITY_AE,
                "-aec",
                GATEWAY_AE,
                "+sd",
                "127.0.0.1",
                str(port),
                str(folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert sender.stdout is not None
        lines, successes = [], 0
        for line in sender.stdout:
            lines.append(line)
            successes += "Received Store Response (Success)" in line
            if successes == 25:
                first.send_signal(signal.SIGKILL)
                break
        lines += sender.stdout.readlines()
        sender.wait(timeout=60)
    acknowledged, current = [], ""
    for line in lines:
        if line.startswith("I: Sending file: "):
            current = line.removeprefix("I: Sending file: ").strip()
        elif "Received Store Response (Success)" in line:
            acknowledged.append(current)
    assert 25 <= len(acknowledged) < len(files), "the kill did not land mid-transfer"
    assert sender.returncode != 0
    assert len(spooled(spool)) >= len(acknowledged)

    with gateway(tmp_path, stack.base_url, stack.api_key, free_port(), spool):
        wait_forwarded(spool)
    for path in acknowledged:
        reply = retrieve(stack, files[path])
        assert reply.status_code == 200, path
        assert same_instance(reply.content, files[path])
    assert not list((spool / "incoming").iterdir())
