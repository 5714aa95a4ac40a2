"""Hostile requests over HTTP through the local stack: no answer >= 500, none slower than
10 s, and always an answer.

2,000 seeded requests per run (``tests/fuzz.py``): paths with backticks, encoded slashes and
NULs, very long or non-UTF-8 segments; query strings with repeated, empty, huge and
malformed keys and values; odd Accept and Content-Type headers, bad keys, non-ASCII headers;
mutated DICOM and random bytes as bodies; lying Content-Length and broken chunked framing.
Half of them name objects stored first, so that they reach the WADO rendering and
transcoding code with hostile parameters.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from shared import keys
from tests import dicom_files, fuzz
from tests.served import Served, served

pytestmark = pytest.mark.integration

CASES = 2_000
SLOW_S = 10.0
STORED = (
    "CT_small.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_rle.dcm",
    "test-SR.dcm",
    "emri_small.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
    "liver_1frame.dcm",
)


def _store(stack: Served) -> list[tuple[str, str, str]]:
    stored = []
    for name in STORED:
        data = dicom_files.with_new_uids(name)
        response = requests.post(
            f"{stack.base_url}/stowRsListener/FUZZ/studies",
            data=data,
            headers={"Authorization": stack.api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        ds = pydicom.dcmread(io.BytesIO(data))
        stored.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return stored


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Served]:
    """A stack of its own (a process): the mutants it stores must not meet other tests'."""
    key, _ = keys.generate("fuzz")
    with served(tmp_path, key) as stack:
        yield stack


def test_hostile_requests_get_an_answer_below_500_in_time(own_stack: Served) -> None:
    local_stack = own_stack
    corpus = [dicom_files.data(n) for n in dicom_files.part10_files(max_size=100_000)[:40]]
    stored = _store(local_stack)
    statuses: Counter[int] = Counter()
    failures = []
    for case in fuzz.http_cases(7, CASES, local_stack.api_key, corpus, stored):
        status, elapsed = fuzz.send_raw(local_stack.port, case.raw)
        statuses[status] += 1
        if status >= 500 or status == 0 or elapsed > SLOW_S:
            failures.append(f"{status} in {elapsed:.1f} s: {case.label}")
    assert not failures, failures[:20]
    # The requests reach the functions, not only the gateway's own answers.
    assert statuses[200] > 20 and statuses[400] > 100, statuses
