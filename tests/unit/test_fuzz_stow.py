"""Seeded fuzzing of the STOW-RS handler in-process: no answer >= 500, none slower than 10 s.

20,000 mutations of the real corpus per run (bit flips, truncation, corrupted lengths and
VRs, lying group lengths, deep nesting, deflate and pixel bombs, lying fragment tables: see
``tests/support/fuzz.py``), in chunks of 1,000 so that pytest-xdist spreads them. Every
instance the handler accepted is then anonymized, rendered and transcoded: those may refuse
it (4xx), never fail otherwise. ``python -m bench.fuzz`` runs the same runner
(``tests/support/fuzz_stow.py``) at any count.
"""

from __future__ import annotations

import pytest

from tests.support.fuzz_stow import run

CHUNKS, CASES_PER_CHUNK = 20, 1_000


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_no_mutated_file_gets_a_server_error_or_hangs(chunk: int) -> None:
    found = run(seed=chunk, count=CASES_PER_CHUNK)
    assert found.cases == CASES_PER_CHUNK
    assert not found.server_errors, found.server_errors[:10]
    assert not found.slow, found.slow
    assert not found.retrieve_errors, found.retrieve_errors[:10]
    # The cases reach past parsing: some mutants are still stored, most are refused.
    assert found.by_status.get(200, 0) + found.by_status.get(409, 0) > CASES_PER_CHUNK // 2
