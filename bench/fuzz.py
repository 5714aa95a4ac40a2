"""Seeded fuzzing at any count: ``python -m bench.fuzz --cases 200000 --http 20000``.

The same cases as the test suite (``tests/support/fuzz.py``, ``fuzz_stow.py`` and
``gateway_peer.py``): mutated corpus files through the STOW handler in-process (chunks of
1,000 on every core, each followed by anonymizing, rendering and transcoding what was
stored); hostile requests over HTTP through ``python -m local`` to
every route (uploads included, keys of every scope) and to the object server's presigned
URLs; hostile associations and PDUs to the C-STORE gateway (``bench/fuzz_gateway.py``).
Reports cases, answers by status, answers >= 500 or none, the slowest answer and retrieval
errors.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path
from typing import Any

CHUNK = 1_000


def _chunk(seed: int) -> dict[str, Any]:
    from tests.support.fuzz_stow import run

    found = run(seed=seed, count=CHUNK)
    return {
        "cases": found.cases,
        "by_status": found.by_status,
        "server_errors": found.server_errors,
        "slowest_s": found.slowest,
        "retrieved": found.retrieved,
        "retrieve_errors": found.retrieve_errors,
    }


def in_process(cases: int, first_seed: int = 1000) -> dict[str, Any]:
    """``cases`` mutated files through the STOW handler, on every core."""
    seeds = range(first_seed, first_seed + max(1, cases // CHUNK))
    started = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        results = pool.map(_chunk, seeds)
    statuses: Counter[int] = Counter()
    for result in results:
        statuses.update({int(k): v for k, v in result["by_status"].items()})
    errors = [e for r in results for e in r["server_errors"]]
    retrieve_errors = [e for r in results for e in r["retrieve_errors"]]
    return {
        "cases": sum(r["cases"] for r in results),
        "by_status": dict(sorted(statuses.items())),
        "answers_500_or_more": len(errors),
        "examples": errors[:10],
        "slowest_s": round(max(r["slowest_s"] for r in results), 3),
        "retrieved": sum(r["retrieved"] for r in results),
        "retrieve_errors": len(retrieve_errors),
        "retrieve_examples": retrieve_errors[:10],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def over_http(cases: int, seed: int = 7, object_cases: int | None = None) -> dict[str, Any]:
    """``cases`` hostile requests through ``python -m local`` started for the run, to every
    route with keys of every scope, then ``object_cases`` (default a quarter) to the object
    server's presigned URLs."""
    from shared import keys
    from tests.support import dicom_files, fuzz
    from tests.support.served import served

    key, _ = keys.generate("fuzz")
    corpus = [dicom_files.data(n) for n in dicom_files.part10_files(max_size=100_000)[:40]]
    statuses: Counter[int] = Counter()
    object_statuses: Counter[int] = Counter()
    failures: list[str] = []
    slowest = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work, served(Path(work), key) as stack:
        hunt = fuzz.prepare(stack.base_url, stack.api_key, stack.data_dir)
        for case in fuzz.http_cases(seed, cases, hunt.keys, corpus, hunt.stored, hunt.uploads):
            status, elapsed = fuzz.send_raw(stack.port, case.raw)
            statuses[status] += 1
            slowest = max(slowest, elapsed)
            if status >= 500 or status == 0:
                failures.append(f"{status}: {case.label}")
        count = cases // 4 if object_cases is None else object_cases
        port = fuzz.object_port(hunt)
        for case in fuzz.object_cases(seed, count, hunt.object_urls):
            status, elapsed = fuzz.send_raw(port, case.raw)
            object_statuses[status] += 1
            slowest = max(slowest, elapsed)
            if status >= 500 or status == 0:
                failures.append(f"objects {status}: {case.label}")
    return {
        "cases": cases,
        "by_status": dict(sorted(statuses.items())),
        "object_cases": count,
        "object_by_status": dict(sorted(object_statuses.items())),
        "answers_500_or_more_or_none": len(failures),
        "examples": failures[:10],
        "slowest_s": round(slowest, 3),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def gateway(count: int, seed: int = 0) -> dict[str, Any]:
    """``count`` hostile associations and PDUs to the C-STORE gateway (bench/fuzz_gateway)."""
    from bench import fuzz_gateway

    return fuzz_gateway.run(count, seed)


def run(cases: int = 20_000, http: int = 2_000, dimse: int = 500) -> dict[str, Any]:
    """All three, with a line each on stdout."""
    report = {
        "in_process": in_process(cases),
        "http": over_http(http),
        "gateway": gateway(dimse),
    }
    for name, figures in report.items():
        print(
            f"fuzz {name}: " + json.dumps({k: v for k, v in figures.items() if "examples" not in k})
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20_000, help="in-process STOW cases")
    parser.add_argument("--http", type=int, default=2_000, help="hostile HTTP requests")
    parser.add_argument(
        "--gateway", type=int, default=500, help="hostile connections to the C-STORE gateway"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/fuzz.json"))
    args = parser.parse_args()
    report = run(args.cases, args.http, args.gateway)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
