"""Run the benchmarks: ``python -m bench [--instances N] [--qido-sizes 1000,10000]``
[--only stow,imports,qido,qido-scale,wado,render,viewer,ohif,multipart,memory,uploads,fuzz,import,
feed,gateway,delete,update,pack-codecs] [--feed-entries 100000] [--delete-instances 1000]
[--update-instances 500]
[--import-files N] [--qido-scale-sizes 10000,100000] [--qido-scale-kinds lookups,ohif]
[--qido-scale-keep DIR] [--qido-scale-warm] [--qido-scale-moto 10000].

Results go to bench/results/bench.json; a partial run (``--only``) updates its own sections
and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    bench_delete,
    bench_feed,
    bench_gateway,
    bench_import,
    bench_imports,
    bench_memory,
    bench_multipart,
    bench_ohif,
    bench_pack_codecs,
    bench_qido,
    bench_qido_scale,
    bench_render,
    bench_stow,
    bench_update,
    bench_uploads,
    bench_viewer,
    bench_wado,
    fuzz,
)

RESULTS = Path(__file__).parent / "results"
PARTS = (
    "stow",
    "imports",
    "qido",
    "qido-scale",
    "wado",
    "render",
    "viewer",
    "ohif",
    "multipart",
    "memory",
    "uploads",
    "fuzz",
    "import",
    "feed",
    "gateway",
    "delete",
    "update",
    "pack-codecs",
)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are integers separated by commas") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give at least one positive size")
    return sizes


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(PARTS)}")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200, help="STOW instances per run")
    parser.add_argument(
        "--qido-sizes",
        type=_sizes,
        default=[1000, 10000],
        help="QIDO archive sizes in studies, comma-separated (default 1000,10000)",
    )
    parser.add_argument(
        "--import-files", type=int, default=1000, help="files per import run (default 1000)"
    )
    parser.add_argument(
        "--qido-scale-sizes",
        type=_sizes,
        default=list(bench_qido_scale.SIZES),
        help="qido-scale: SQLite archive sizes in studies (default 10000,100000)",
    )
    parser.add_argument(
        "--qido-scale-kinds",
        type=lambda text: tuple(w.strip() for w in text.split(",") if w.strip()),
        default=(),
        help="qido-scale: only these kinds: groups (lookups, ohif) or parts of names,"
        " comma-separated (default: every kind)",
    )
    parser.add_argument(
        "--qido-scale-keep",
        type=Path,
        default=None,
        help="qido-scale: keep the SQLite indexes in this directory and reuse them",
    )
    parser.add_argument(
        "--qido-scale-warm",
        action="store_true",
        help="qido-scale: read each index once into the OS page cache before measuring it",
    )
    parser.add_argument(
        "--qido-scale-moto",
        type=int,
        default=0,
        help="qido-scale: also load this many studies into moto's DynamoDB (0: none)",
    )
    parser.add_argument(
        "--feed-entries",
        type=int,
        default=bench_feed.ENTRIES,
        help=f"feed: entries written then read (default {bench_feed.ENTRIES})",
    )
    parser.add_argument(
        "--delete-instances",
        type=int,
        default=1000,
        help="delete: instances of the study deleted on SQLite (default 1000; moto: 200)",
    )
    parser.add_argument(
        "--update-instances",
        type=int,
        default=500,
        help="update: instances of the study updated on SQLite (default 500; moto: 100)",
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        help=f"run only these benchmarks, comma-separated ({', '.join(PARTS)})",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runners: dict[str, Callable[[], Any]] = {
        "stow": lambda: bench_stow.run(args.instances),
        "imports": bench_imports.run,
        "qido": lambda: bench_qido.run(args.qido_sizes),
        "qido-scale": lambda: bench_qido_scale.run(
            tuple(args.qido_scale_sizes),
            args.qido_scale_moto,
            args.qido_scale_kinds,
            args.qido_scale_keep,
            args.qido_scale_warm,
        ),
        "wado": bench_wado.run,
        "render": bench_render.run,
        "viewer": bench_viewer.run,
        "ohif": bench_ohif.run,
        "multipart": bench_multipart.run,
        "memory": bench_memory.run,
        "uploads": bench_uploads.run,
        "fuzz": fuzz.run,
        "import": lambda: bench_import.run(args.import_files),
        "feed": lambda: bench_feed.run(args.feed_entries),
        "gateway": bench_gateway.run,  # side by side with Orthanc (installed as root if missing)
        "delete": lambda: bench_delete.run(args.delete_instances),
        "update": lambda: bench_update.run(args.update_instances),
        "pack-codecs": bench_pack_codecs.run,  # lossless codecs for native pixels in packs
    }
    out = RESULTS / "bench.json"
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    report["machine"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    for part in PARTS:
        if part in args.only:
            report[part] = runners[part]()
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
