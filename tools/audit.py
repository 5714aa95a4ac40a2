"""Who accessed a study: read the audit trail (docs/audit.md).

    dicomweb-audit --study 1.2.3            # the local stack's trail
    dicomweb-audit --study 1.2.3 --json     # the records themselves, one per line
    dicomweb-audit --study 1.2.3 --insights # the CloudWatch Logs Insights query

Locally the trail is ``{data dir}/audit.jsonl``, the data directory chosen as
``dicomweb-serve`` chooses it (``DICOMWEB_DATA_DIR``, else the checkout's ``.local-data``;
:mod:`local.settings`) unless ``--data-dir`` names one. In AWS the records are in the
functions' log groups, found by the printed Logs Insights query.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from local import settings
from shared.bootstrap import AUDIT_FILE
from shared.dicomweb.uids import valid_uid

INSIGHTS = """fields @timestamp, keyId, keyLabel, sourceIp, event, action, status, method, route
| filter ispresent(audit) and @message like '"{uid}"'
| sort @timestamp desc
| limit 1000"""


def records(path: Path, study: str) -> Iterator[dict[str, Any]]:
    """Audit records that name ``study``, oldest first (unreadable lines are skipped)."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as trail:
        for line in trail:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and study in (record.get("studies") or []):
                yield record


def _row(record: dict[str, Any]) -> str:
    who = f"{record.get('keyId', '')} ({record.get('keyLabel', '')})"
    return (
        f"{record.get('time', '')[:19]}  {who:28}  {record.get('sourceIp', ''):15}  "
        f"{record.get('event', '')} [{record.get('action', '')}]  {record.get('status', '')}  "
        f"{record.get('method', '')} {record.get('route', '')}  {record.get('bytes', 0)} B"
    )


def main(argv: list[str] | None = None) -> int:
    """Print who accessed the study; the exit status is 1 when nobody did."""
    parser = argparse.ArgumentParser(prog="dicomweb-audit", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="Study Instance UID")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir(os.environ),
        help="the local stack's data directory (default: DICOMWEB_DATA_DIR, else .local-data)",
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the records as JSON lines")
    shape.add_argument("--insights", action="store_true", help="print the AWS query")
    args = parser.parse_args(argv)
    if not valid_uid(args.study):
        parser.error("--study must be a UID")
    if args.insights:
        print(INSIGHTS.format(uid=args.study))
        return 0
    found = list(records(args.data_dir / AUDIT_FILE, args.study))
    for record in found:
        print(json.dumps(record) if args.json else _row(record))
    if not found:
        print(f"no request named study {args.study}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
