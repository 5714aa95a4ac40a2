"""The ``Lease`` port on the embedded backend: a table in a small SQLite file of its own,
taken inside an immediate (write-locked) transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from shared.errors import StorageUnavailable


class SqliteLease:
    """Leases as rows (port :class:`shared.ports.Lease`)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path, self._clock = path, clock
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS leases"
                " (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=30, isolation_level=None)

    def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take or extend the lease; False when another holder's has not ended."""
        now = self._clock()
        try:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT holder, until FROM leases WHERE name = ?", (name,)
                ).fetchone()
                if row is not None and row[0] != holder and row[1] >= now:
                    db.execute("ROLLBACK")
                    return False
                db.execute(
                    "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                    " until = excluded.until",
                    (name, holder, now + seconds),
                )
                db.execute("COMMIT")
                return True
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc

    def release(self, name: str, holder: str) -> None:
        """Delete the lease's row if ``holder`` still has it."""
        try:
            db = self._connect()
            try:
                db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
