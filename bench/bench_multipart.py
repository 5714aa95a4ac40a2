"""multipart/related parsing throughput: one 4.5 MB part, and 100,000 tiny parts in 4.5 MB.

The parser is linear in the body whatever the number of parts (a parser that copied the rest
of the body for every part would be quadratic; figures in docs/limits.md). Medians of 5 runs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from shared.dicomweb.multipart import build_related, parse_related

BODY_BYTES = 4_500_000
RUNS = 5


def _one_part() -> bytes:
    return build_related([(b"\x00" * (BODY_BYTES - 200), "application/dicom")], "b")


def _tiny_parts(count: int) -> bytes:
    header_and_frame = len(build_related([(b"", "application/dicom")], "b")) - len(b"--b--\r\n")
    size = max(1, BODY_BYTES // count - header_and_frame)
    return build_related([(b"x" * size, "application/dicom")] * count, "b")


def _measure(body: bytes) -> dict[str, Any]:
    times = []
    parts = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        parts = len(parse_related(body, "b", max_parts=None))
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "parts": parts,
        "bytes": len(body),
        "median_s": round(median, 4),
        "mb_per_s": round(len(body) / 1e6 / median, 1),
    }


def run() -> dict[str, Any]:
    """Parse each body RUNS times; report the median and MB/s."""
    results = {"one_part": _measure(_one_part()), "100k_parts": _measure(_tiny_parts(100_000))}
    for name, figures in results.items():
        print(
            f"multipart {name:>10}: {figures['parts']:>6} parts, {figures['bytes']:,} B,"
            f" median {figures['median_s'] * 1000:.1f} ms = {figures['mb_per_s']} MB/s"
        )
    return results
