"""Run every benchmark: ``python -m bench [--instances N]``."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench import bench_imports, bench_stow

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200, help="STOW instances per run")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    machine = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    report = {
        "machine": machine,
        "stow": bench_stow.run(args.instances),
        "imports": bench_imports.run(),
    }
    out = RESULTS / "bench.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
