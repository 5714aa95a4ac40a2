"""Mutated DICOM files sent through the STOW-RS handler in-process, on fakes.

:func:`run` sends ``count`` cases of :func:`tests.support.fuzz.cases` (seeded) to the STOW
handler, recording answers by status, answers of 500 or more, crashes and slow answers; then
it anonymizes, renders and transcodes some of what the handler stored: those may refuse an
instance (a 4xx), never fail otherwise. The fuzz test runs it in chunks of 1,000;
``python -m bench.fuzz`` at any count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from shared import bootstrap, config
from tests.fakes import FakeBlobStore, FakeIndex
from tests.support import dicom_files, fuzz
from tests.support.handlers import Context, load, quiet, rest_event

SLOW_S = 10.0
CORPUS_MAX_BYTES = 300_000
RETRIEVED_PER_CHUNK = 40
RESOURCE = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies"


@cache
def corpus() -> list[bytes]:
    """Every corpus Part 10 file up to 300 KB (most of them; bigger ones only cost time)."""
    return [dicom_files.data(n) for n in dicom_files.part10_files(max_size=CORPUS_MAX_BYTES)]


@dataclass
class Findings:
    """What a run found: cases sent, answers by status, failures and the slowest answer."""

    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slow: list[str] = field(default_factory=list)
    retrieved: int = 0
    retrieve_errors: list[str] = field(default_factory=list)


def _event(data: bytes) -> dict[str, Any]:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    return rest_event(
        "POST",
        RESOURCE,
        "/o3-dpacs-wado/stowRsListener/FUZZ/studies",
        body=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        path_parameters={"CALLING_AET": "FUZZ"},
    )


def run(seed: int, count: int, retrieve_limit: int = RETRIEVED_PER_CHUNK) -> Findings:
    """Send ``count`` mutated files through the STOW handler; then retrieve what it took."""
    module = load("stow")
    handler = module.lambda_handler
    blobs, index = FakeBlobStore(), FakeIndex()
    found = Findings()
    fakes = bootstrap.build(config.settings(), objects=blobs, index=index)
    with module.archive.using(fakes), quiet(module):
        for name, data in fuzz.cases(seed, count, corpus()):
            started = time.perf_counter()
            try:
                status = int(handler(_event(data), Context())["statusCode"])
            except Exception as exc:  # noqa: BLE001 - a crash is what we look for
                status = 599
                found.server_errors.append(f"{name}: raised {type(exc).__name__}")
            elapsed = time.perf_counter() - started
            found.cases += 1
            found.by_status[status] = found.by_status.get(status, 0) + 1
            found.slowest = max(found.slowest, elapsed)
            if status >= 500 and status != 599:
                found.server_errors.append(f"{name}: {status}")
            if elapsed > SLOW_S:
                found.slow.append(f"{name}: {elapsed:.1f} s")
    for data in _stored(blobs, retrieve_limit):
        found.retrieved += 1
        found.retrieve_errors += _retrieve_errors(data)
    return found


def _stored(blobs: FakeBlobStore, limit: int) -> Iterator[bytes]:
    yield from list(blobs.objects.values())[:limit]


def _retrieve_errors(data: bytes) -> list[str]:
    """What WADO would do with a stored object: anonymize, render, transcode. Refusals are
    DicomWebErrors (4xx); anything else would be a 500."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    from shared.dicom import anonymize, render, transcode
    from shared.dicom.render_params import RenderParameters
    from shared.errors import DicomWebError

    steps = {
        "anonymize": lambda: anonymize.anonymize(data, b"fuzz"),
        "render": lambda: render.render_bytes(data, RenderParameters()),
        "native": lambda: transcode.transcode_bytes(data, str(ExplicitVRLittleEndian)),
        "j2k": lambda: transcode.transcode_bytes(data, str(JPEG2000Lossless)),
    }
    errors = []
    for step, call in steps.items():
        try:
            call()
        except (DicomWebError, anonymize.NotPart10, anonymize.BurnedInAnnotation):
            pass
        except Exception as exc:  # noqa: BLE001 - a crash is what we look for
            errors.append(f"{step}: {type(exc).__name__}: {str(exc)[:120]}")
    return errors
