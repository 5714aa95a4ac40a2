"""Connections to one SQLite database file (the embedded backend's index), reused by
whichever thread asks, and the transaction every write runs in.

The database runs in WAL mode with ``synchronous=FULL``: a committed change survives a
crash of the process or of the machine, and readers never wait for the writer. Several
processes may share the file (SQLite locks it; writers wait up to ``BUSY_TIMEOUT_S``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.dicomweb.substring import part_matches
from shared.errors import StorageUnavailable

BUSY_TIMEOUT_S = 30.0
#: The file's first bytes a connection reads through the OS page cache (memory-mapped):
#: SQLite's build maximum (SQLITE_MAX_MMAP_SIZE), about 2 GB. Pages past it go through the
#: connection's own cache (SQLite's default, 2 MB). Limits: docs/decisions/0006-*.md.
MMAP_BYTES = 0x7FFF0000


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fully synced."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    # Reads through the OS page cache, shared by every connection and worker process
    # (each connection's own cache would start cold).
    connection.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    # Wildcard matching of substring-index text in SQL (sqlite_catalog).
    connection.create_function("qido_match", 2, part_matches, deterministic=True)
    return connection


class Connections:
    """Connections to one database file, kept for reuse whichever thread asks: a call
    takes an idle one (or opens one) and puts it back, so a server that starts a thread
    per request (the local stack's) does not open a connection per request, and each
    connection keeps its page cache and compiled schema. There are as many as calls ever
    ran at once. The file must exist with its schema (``sqlite_schema.prepare``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[sqlite3.Connection]:
        """A connection for the caller alone until the block ends (the last one put back
        first: the warmest cache)."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = connect(self.path)
        try:
            yield connection
        finally:
            with self._lock:
                self._idle.append(connection)

    def run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` in one immediate transaction; a locked database is a 503."""
        with self.lease() as connection:
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageUnavailable("the index is busy, retry later") from exc
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            try:
                connection.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise StorageUnavailable("the index is busy, retry later") from exc
            return result

    def query(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self.lease() as connection:
            return _rows(connection, sql, parameters)

    def query_with(
        self, sql: str, parameters: Iterable[Any], name: str, function: Callable[[Any], Any]
    ) -> list[sqlite3.Row]:
        """:meth:`query` with ``function`` (of one argument) callable as ``name`` in ``sql``,
        for that statement only."""
        with self.lease() as connection:
            connection.create_function(name, 1, function)
            try:
                return _rows(connection, sql, parameters)
            finally:
                connection.create_function(name, 1, None)


def _rows(connection: sqlite3.Connection, sql: str, parameters: Iterable[Any]) -> list[sqlite3.Row]:
    connection.row_factory = sqlite3.Row
    try:
        return list(connection.execute(sql, tuple(parameters)))
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable("the index is busy, retry later") from exc
