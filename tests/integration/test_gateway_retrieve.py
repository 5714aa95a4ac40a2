"""C-GET and C-MOVE through ``dicomweb-gateway`` with dcmtk's ``getscu``, ``movescu`` and
``storescp`` (Debian dcmtk) in front and the local stack behind.

* What a workstation receives is the archive's instance: the data set byte for byte (the
  receiver writes its own File Meta Information) when no transcoding was needed.
* A receiver that does not accept the stored (compressed) syntax gets the instance in
  Explicit VR Little Endian, transcoded by the archive, with the same pixel values.
* An unknown move destination is 0xA801; an AE limited to ``find`` may not retrieve.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from shared import keys
from shared.dicom.pixels import decode_frame
from shared.dicomweb.multipart import parse_related
from tests.support import dicom_files
from tests.support.debian_tools import require_debian_tool
from tests.support.gateway_run import GATEWAY_AE, gateway, stow
from tests.support.served import Served, free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.tools, pytest.mark.xdist_group("gateway")]

WORKSTATION, RECEIVER, FINDER = "WORKSTATION", "RECEIVER", "FINDER"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


@dataclass
class Site:
    stack: Served
    port: int
    receiver_port: int
    workdir: Path
    study: str  # 2 series: 4 CT, 2 MR
    ct_series: str
    instances: list[str]
    compressed_study: str  # one JPEG Lossless SV1 instance


def body(part10: bytes) -> bytes:
    """The data set of a Part 10 file: what follows the File Meta Information."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("gateway-retrieve")
    key, _ = keys.generate("gateway-retrieve")
    (workdir / "stack").mkdir()
    with served(workdir / "stack", key) as stack:
        study, ct, mr = (pydicom.uid.generate_uid() for _ in range(3))
        files = [
            dicom_files.with_new_uids(
                "CT_small.dcm",
                study=study,
                series=ct,
                patient_id="P-RET",
                PatientName="Retrieve^Test",
                InstanceNumber=n,
            )
            for n in range(4)
        ] + [
            dicom_files.with_new_uids(
                "MR_small.dcm",
                study=study,
                series=mr,
                patient_id="P-RET",
                PatientName="Retrieve^Test",
                InstanceNumber=n,
            )
            for n in range(2)
        ]
        compressed = dicom_files.with_new_uids(dicom_files.BY_TRANSFER_SYNTAX[JPEG_LOSSLESS])
        stow(stack.base_url, key, [*files, compressed])
        read = [pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True) for f in files]
        compressed_study = str(pydicom.dcmread(io.BytesIO(compressed)).StudyInstanceUID)
        port, receiver_port = free_port(), free_port()
        with gateway(
            workdir,
            stack.base_url,
            key,
            port,
            workdir / "spool",
            allow=(WORKSTATION, f"{FINDER}:find"),
            extra=["--destination", f"{RECEIVER}=127.0.0.1:{receiver_port}"],
        ):
            yield Site(
                stack,
                port,
                receiver_port,
                workdir,
                study,
                ct,
                [str(ds.SOPInstanceUID) for ds in read],
                compressed_study,
            )


def archived(site: Site, study: str) -> dict[str, bytes]:
    """The study's instances as the archive holds them, by SOP Instance UID."""
    reply = requests.get(
        f"{site.stack.base_url}/rs/studies/{study}",
        headers={"Authorization": site.stack.api_key},
        timeout=60,
    )
    assert reply.status_code == 200
    boundary = reply.headers["Content-Type"].split("boundary=")[1].strip('"')
    found = {}
    for part in parse_related(reply.content, boundary):
        ds = pydicom.dcmread(io.BytesIO(part.content), stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = part.content
    return found


def received(folder: Path) -> dict[str, bytes]:
    found = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        found[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return found


def status_of(done: subprocess.CompletedProcess[str]) -> str:
    statuses = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-f]{4})", done.stdout + done.stderr)
    return statuses[-1] if statuses else ""


def getscu(
    site: Site, out: Path, *keys_: str, calling: str = WORKSTATION
) -> subprocess.CompletedProcess[str]:
    binary = require_debian_tool("getscu", "dcmtk")
    out.mkdir(exist_ok=True)
    return subprocess.run(
        [
            binary,
            "-d",
            "+B",  # bit-preserving: the data set as received, not re-encoded by dcmtk
            "-S",
            "-aet",
            calling,
            "-aec",
            GATEWAY_AE,
            "-od",
            str(out),
            *[arg for key in keys_ for arg in ("-k", key)],
            "127.0.0.1",
            str(site.port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def movescu(
    site: Site, out: Path, destination: str, *keys_: str, calling: str = WORKSTATION
) -> subprocess.CompletedProcess[str]:
    """``movescu`` receiving on the destination's port itself (its built-in storage SCP)."""
    binary = require_debian_tool("movescu", "dcmtk")
    out.mkdir(exist_ok=True)
    return subprocess.run(
        [
            binary,
            "-d",
            "+B",  # bit-preserving: the data set as received, not re-encoded by dcmtk
            "-S",
            "-aet",
            calling,
            "-aec",
            GATEWAY_AE,
            "-aem",
            destination,
            "+P",
            str(site.receiver_port),
            "-od",
            str(out),
            *[arg for key in keys_ for arg in ("-k", key)],
            "127.0.0.1",
            str(site.port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=out,  # movescu +B writes where it runs, whatever -od says
    )


def test_getscu_receives_the_archives_bytes(site: Site, tmp_path: Path) -> None:
    done = getscu(
        site, tmp_path / "got", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={site.study}"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(done) == "0x0000"
    got, stored = received(tmp_path / "got"), archived(site, site.study)
    assert sorted(got) == sorted(stored)
    assert len(got) == 6
    for uid, data in stored.items():
        assert hashlib.sha256(body(got[uid])).digest() == hashlib.sha256(body(data)).digest()


def test_getscu_of_some_images(site: Site, tmp_path: Path) -> None:
    wanted = site.instances[1:3]
    done = getscu(
        site,
        tmp_path / "got",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={site.study}",
        f"SeriesInstanceUID={site.ct_series}",
        "SOPInstanceUID=" + "\\".join(wanted),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(received(tmp_path / "got")) == sorted(wanted)


def test_movescu_receives_the_archives_bytes(site: Site, tmp_path: Path) -> None:
    done = movescu(
        site,
        tmp_path / "moved",
        RECEIVER,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={site.study}",
        f"SeriesInstanceUID={site.ct_series}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(done) == "0x0000"
    got, stored = received(tmp_path / "moved"), archived(site, site.study)
    assert sorted(got) == sorted(site.instances[:4]), done.stdout + done.stderr
    for uid, data in got.items():
        assert body(data) == body(stored[uid])


def test_a_receiver_without_the_stored_syntax_gets_it_transcoded(
    site: Site, tmp_path: Path
) -> None:
    """getscu proposes the uncompressed syntaxes only (its default): the JPEG Lossless
    instance arrives in Explicit VR Little Endian with the same pixel values."""
    done = getscu(
        site,
        tmp_path / "got",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={site.compressed_study}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [(uid, data)] = received(tmp_path / "got").items()
    original = pydicom.dcmread(io.BytesIO(archived(site, site.compressed_study)[uid]))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert original.file_meta.TransferSyntaxUID == JPEG_LOSSLESS
    assert ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert np.array_equal(decode_frame(ds, 0).array, decode_frame(original, 0).array)


def test_movescu_with_its_own_storescp_as_destination(site: Site, tmp_path: Path) -> None:
    """A separate ``storescp`` as the destination (the workstation's usual setup)."""
    storescp = require_debian_tool("storescp", "dcmtk")
    movescu_binary = require_debian_tool("movescu", "dcmtk")
    out = tmp_path / "store"
    out.mkdir()
    receiver = subprocess.Popen(
        [storescp, "+B", "-aet", RECEIVER, "-od", str(out), str(site.receiver_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        done = subprocess.run(
            [
                movescu_binary,
                "-d",
                "-S",
                "-aet",
                WORKSTATION,
                "-aec",
                GATEWAY_AE,
                "-aem",
                RECEIVER,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={site.study}",
                "127.0.0.1",
                str(site.port),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(done) == "0x0000"
    assert sorted(received(out)) == sorted(archived(site, site.study))


def test_an_unknown_destination_is_a801(site: Site, tmp_path: Path) -> None:
    done = movescu(
        site,
        tmp_path / "none",
        "NOBODY",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={site.study}",
    )
    assert status_of(done) == "0xa801", done.stdout + done.stderr
    assert not list((tmp_path / "none").iterdir())


def test_a_find_only_ae_may_not_retrieve(site: Site, tmp_path: Path) -> None:
    done = getscu(
        site,
        tmp_path / "got",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={site.study}",
        calling=FINDER,
    )
    assert status_of(done) == "0x0124", done.stdout + done.stderr
    assert not list((tmp_path / "got").iterdir())


def test_a_retrieve_without_its_unique_key_is_a900(site: Site, tmp_path: Path) -> None:
    done = getscu(
        site, tmp_path / "got", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={site.study}"
    )
    assert status_of(done) == "0xa900", done.stdout + done.stderr
