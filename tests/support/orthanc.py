"""Debian's Orthanc (1.10, with its DICOMweb plugin) as a peer: for tests and benchmarks.

``running(workdir, binary)`` starts it on free ports of 127.0.0.1, storage in ``workdir``,
no authentication, and yields its HTTP root once ``/system`` answers; it stops it on exit.
The binary and the plugin come from ``tests.support.debian_tools`` (tests) or
``bench.bench_peer``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.served import free_port

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_TIMEOUT_S = 60


class OrthancDidNotStart(RuntimeError):
    """Orthanc exited or did not answer in time; the message holds its log's end."""


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its HTTP root (``http://127.0.0.1:PORT``) and DICOM port."""

    url: str
    dicom_port: int

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"


@contextmanager
def running(
    workdir: Path,
    binary: str,
    *,
    dicomweb: dict[str, Any] | None = None,
    dicom_port: int | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[Orthanc]:
    """Orthanc with the DICOMweb plugin; ``dicomweb`` adds or replaces options of the
    plugin's section (``{"Servers": {...}}``, ``{"StudiesMetadata": "Full"}``), ``config``
    top-level options (``{"DicomModalities": {...}}``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, dicom = free_port(), dicom_port or free_port()
    config = {
        "Name": "peer",
        "StorageDirectory": str(workdir / "db"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": port,
        "DicomPort": dicom,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "HttpThreadsCount": 50,
        "Plugins": [PLUGIN],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "MainDicomTags",
            **(dicomweb or {}),
        },
        **(config or {}),
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, str(workdir / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(f"{base}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise OrthancDidNotStart(log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.2)
        yield Orthanc(base, dicom)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
