"""Hostile requests over HTTP through the local stack: no answer >= 500, none slower than
10 s, and always an answer.

2,000 seeded requests per run (``tests/support/fuzz.py``): paths with backticks, encoded
slashes and NULs, very long or non-UTF-8 segments; query strings with repeated, empty, huge and
malformed keys and values; odd Accept and Content-Type headers, bad keys and keys of every
scope, non-ASCII headers and heads around API Gateway's 10,240 bytes; mutated DICOM, random
bytes and hostile JSON as bodies; lying Content-Length and broken chunked framing. They go
to every route, the upload routes included. Half of them name objects stored first, so that
they reach the WADO rendering and transcoding code with hostile parameters. Then 500
hostile requests to the object server, made from the upload path's presigned URLs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import keys
from tests.support import dicom_files, fuzz
from tests.support.served import Served, served

pytestmark = pytest.mark.integration

CASES = 2_000
OBJECT_CASES = 500
SLOW_S = 10.0


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Served]:
    """A stack of its own (a process): the mutants it stores must not meet other tests'."""
    key, _ = keys.generate("fuzz")
    with served(tmp_path, key) as stack:
        yield stack


def test_hostile_requests_get_an_answer_below_500_in_time(own_stack: Served) -> None:
    stack = own_stack
    corpus = [dicom_files.data(n) for n in dicom_files.part10_files(max_size=100_000)[:40]]
    hunt = fuzz.prepare(stack.base_url, stack.api_key, stack.data_dir)
    statuses: Counter[int] = Counter()
    failures = []
    for case in fuzz.http_cases(7, CASES, hunt.keys, corpus, hunt.stored, hunt.uploads):
        status, elapsed = fuzz.send_raw(stack.port, case.raw)
        statuses[status] += 1
        if status >= 500 or status == 0 or elapsed > SLOW_S:
            failures.append(f"{status} in {elapsed:.1f} s: {case.label}")
    assert not failures, failures[:20]
    # The requests reach the functions, not only the gateway's own answers.
    assert statuses[200] > 20 and statuses[400] > 100, statuses
    assert statuses[201] > 0 and statuses[404] > 0, statuses  # uploads created, others' unseen


def test_hostile_requests_to_presigned_urls_get_an_answer_below_500_in_time(
    own_stack: Served,
) -> None:
    stack = own_stack
    hunt = fuzz.prepare(stack.base_url, stack.api_key, stack.data_dir)
    port = fuzz.object_port(hunt)
    statuses: Counter[int] = Counter()
    failures = []
    for case in fuzz.object_cases(11, OBJECT_CASES, hunt.object_urls):
        status, elapsed = fuzz.send_raw(port, case.raw)
        statuses[status] += 1
        if status >= 500 or status == 0 or elapsed > SLOW_S:
            failures.append(f"{status} in {elapsed:.1f} s: {case.label}")
    assert not failures, failures[:20]
    assert statuses[403] > 50 and statuses[200] > 0, statuses
