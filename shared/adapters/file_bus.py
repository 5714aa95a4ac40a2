"""The change feed's events on the local stack: one JSON object a line, appended to a file
(``.local-data/events.jsonl``) and flushed to disk before the publisher moves on."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from shared.errors import StorageUnavailable


class JsonLinesBus:
    """Appends each event as one line; a reader tails the file (``tail -f``)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def put(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        try:
            with self._lock:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(lines)
                    out.flush()
                    os.fsync(out.fileno())
        except OSError as exc:
            raise StorageUnavailable("the events file cannot be written") from exc
