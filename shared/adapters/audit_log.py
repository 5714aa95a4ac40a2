"""Where audit records go (port :class:`shared.ports.AuditSink`).

* :class:`LogAuditSink` (AWS): one JSON line on stdout, which Lambda writes to the
  function's CloudWatch Logs group (retention: the template's ``LogRetentionDays``); the
  ``"audit": true`` field finds them (docs/audit.md has the Logs Insights queries).
* :class:`FileAuditSink` (embedded backend): appended to a JSON-lines file, one ``write``
  per record on a descriptor opened with ``O_APPEND``, so the local stack's worker
  processes never interleave lines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

#: ``json.dumps(record, separators=(",", ":"), ensure_ascii=False)``, one encoder for all.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _line(record: dict[str, Any]) -> bytes:
    return (_JSON.encode(record) + "\n").encode()


class LogAuditSink:
    """Audit records to the function's log stream."""

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line on stdout."""
        sys.stdout.buffer.write(_line(record))
        sys.stdout.flush()


class FileAuditSink:
    """Audit records appended to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one line (atomically with respect to other appenders)."""
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, _line(record))
        finally:
            os.close(descriptor)
