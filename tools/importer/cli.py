"""Command line of ``dicomweb-import``.

Exit status: 0 when nothing failed, 1 when some files failed, 2 when the run stopped (wrong
key, wrong URL) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tools.gateway import aetitle
from tools.importer import journal as journal_module
from tools.importer.run import import_paths
from tools.importer.sender import Retry, Sender

DEFAULT_URL = "http://127.0.0.1:3000/o3-dpacs-wado"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomweb-import",
        description="Store DICOM files, folders, zip/tar archives and DICOMDIRs in the archive "
        "(STOW-RS batches under the payload limit, the upload path for large files).",
    )
    p.add_argument("paths", nargs="+", type=Path, help="files, folders, archives, DICOMDIRs")
    p.add_argument(
        "--url",
        default=os.environ.get("DICOMWEB_URL", DEFAULT_URL),
        help="archive base URL, up to /o3-dpacs-wado (env DICOMWEB_URL; default %(default)s)",
    )
    p.add_argument("--key", help="API key (default: the DICOMWEB_API_KEY environment variable)")
    p.add_argument("--aet", default="IMPORT", help="calling AE title recorded as the source")
    p.add_argument("--workers", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--report", type=Path, help="write the full report as JSON to this file")
    p.add_argument(
        "--journal",
        type=Path,
        help="journal of stored SOP Instance UIDs (default: one per archive URL under "
        "$XDG_STATE_HOME/dicomweb-import/)",
    )
    p.add_argument("--no-journal", action="store_true", help="keep no local journal")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not ask the archive (QIDO-RS) which instances it already has",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (off anyway when not a TTY)"
    )
    p.add_argument(
        "--poll-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for a large upload to be stored (default 600)",
    )
    p.add_argument("--retries", type=int, default=6, help="attempts per request on 429/5xx")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = args.key or os.environ.get("DICOMWEB_API_KEY", "")
    if not key:
        print("dicomweb-import: give --key or set DICOMWEB_API_KEY", file=sys.stderr)
        return 2
    if args.workers < 1 or args.retries < 1:
        print("dicomweb-import: --workers and --retries must be at least 1", file=sys.stderr)
        return 2
    unusable = aetitle.problem(args.aet) or aetitle.path_problem(args.aet)
    if unusable:
        print(f"dicomweb-import: --aet is not a usable AE title: {unusable}", file=sys.stderr)
        return 2
    sender = Sender(
        args.url, key, args.aet, retry=Retry(attempts=args.retries), poll_timeout=args.poll_timeout
    )
    path = None if args.no_journal else args.journal or journal_module.default_path(args.url)
    journal = journal_module.Journal(path)
    report = import_paths(
        args.paths,
        sender,
        journal,
        workers=args.workers,
        check_archive=not args.no_check,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    if args.report:
        report.write(args.report)
    print(report.summary())
    if report.aborted:
        return 2
    return 1 if report.counts["failed"] else 0
