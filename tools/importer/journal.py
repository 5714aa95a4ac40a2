"""A local record of the SOP Instance UIDs an archive has confirmed, so that a second run
(or a run after a crash) skips them without asking the archive."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


def default_path(base_url: str) -> Path:
    """``$XDG_STATE_HOME/dicomweb-import/<hash of the URL>.jsonl``: one journal per archive."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return state / "dicomweb-import" / f"{name}.jsonl"


class Journal:
    """Append-only JSON lines ``{"sopInstanceUID": ..., "status": ...}``; a torn last line
    (the process killed while writing) is ignored on reading."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._uids: set[str] = set()
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("sopInstanceUID"), str):
                    self._uids.add(record["sopInstanceUID"])

    def __contains__(self, uid: str) -> bool:
        """Whether the archive confirmed ``uid`` in this or an earlier run."""
        return uid in self._uids

    def record(self, uid: str, status: str) -> None:
        """Remember that the archive holds ``uid``."""
        if not uid:
            return
        with self._lock:
            if uid in self._uids:
                return
            self._uids.add(uid)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"sopInstanceUID": uid, "status": status}) + "\n")
