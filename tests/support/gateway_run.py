"""``python -m tools.gateway`` as a process of its own in front of a local stack, and
instances stored into that stack by STOW-RS (for the gateway's integration tests and
benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from shared.dicomweb.multipart import build_related, new_boundary

GATEWAY_AE, MODALITY_AE = "GATEWAY", "MODALITY"


@contextmanager
def gateway(
    workdir: Path,
    url: str,
    key: str,
    port: int,
    spool: Path,
    *,
    allow: tuple[str, ...] = (MODALITY_AE, "ECHOSCU"),
    extra: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m tools.gateway`` on ``port``; ready once it prints its listening line."""
    log = workdir / f"gateway-{time.monotonic_ns()}.log"
    allowed = [argument for title in allow for argument in ("--allow", title)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.gateway",
                "--url",
                url,
                "--ae-title",
                GATEWAY_AE,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                *allowed,
                "--spool",
                str(spool),
                "--audit-dir",
                str(workdir / "audit"),
                "--retries",
                "2",
                "--verbose",
                *extra,
            ],
            env={**os.environ, "DICOMWEB_API_KEY": key},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b"listening on" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the gateway did not start: {log.read_text()}")
        time.sleep(0.1)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def stow(base_url: str, key: str, files: Iterable[bytes], aet: str = "LOADER") -> None:
    """Store Part 10 files in the archive, 50 to a request."""
    batch: list[bytes] = []
    for data in [*files, None]:
        if data is not None:
            batch.append(data)
        if batch and (data is None or len(batch) == 50):
            boundary = new_boundary()
            reply = requests.post(
                f"{base_url}/stowRsListener/{aet}/studies",
                data=build_related([(b, "application/dicom") for b in batch], boundary),
                headers={
                    "Authorization": key,
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                    "Accept": "application/dicom+json",
                },
                timeout=300,
            )
            assert reply.status_code == 200, reply.text
            batch = []
