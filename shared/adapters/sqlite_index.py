"""The hierarchical index in one SQLite database: the embedded backend (``local``).

One transaction per instance gives exactly the outcomes of the DynamoDB transaction
(``dynamo_index``): the instance row is inserted only if its SOP Instance UID is new; an
identical re-send reads back as ``ALREADY_STORED``, other bytes as ``DIFFERENT_CONTENT``; a
study stored with another PatientID refuses it (``PATIENT_MISMATCH``); series, study and
patient rows and their counters change in the same transaction. The read side is
``sqlite_catalog``.

The database runs in WAL mode with ``synchronous=FULL``: a committed instance survives a
crash of the process or of the machine, and readers never wait for the writer. Several
processes may share the file (SQLite locks it; writers wait up to ``BUSY_TIMEOUT_S``).
Connections are per thread. The schema carries a version; :func:`open_database` migrates an
older file on start.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.adapters.dynamo_keys import instance_sk, study_sort_key
from shared.dicom.normalize import person_name_key
from shared.dicom.uid_map import UidMap
from shared.dicomweb.substring import TEXT_KEYS, merge_terms, part_matches, study_terms
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, InstanceRecord

SCHEMA_VERSION = 6
BUSY_TIMEOUT_S = 30.0
#: The file's first bytes a connection reads through the OS page cache (memory-mapped):
#: SQLite's build maximum (SQLITE_MAX_MMAP_SIZE), about 2 GB. Pages past it go through the
#: connection's own cache (SQLite's default, 2 MB). Limits: docs/decisions/0006-*.md.
MMAP_BYTES = 0x7FFF0000
#: Before and after each column's text as the trigram index reads it: the separator
#: :mod:`shared.dicomweb.substring` puts between values, so every value sits between two.
TEXT_EDGE = "\x1f"
#: An item DynamoDB would refuse (400 KB) is refused here too, so both backends agree.
MAX_ENTRY_BYTES = 400 * 1024

_SCHEMA_V1 = """
CREATE TABLE instances (
    sop TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    series TEXT NOT NULL,
    sk TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    ts TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    key TEXT NOT NULL,
    aet TEXT NOT NULL,
    received TEXT NOT NULL,
    attrs TEXT NOT NULL,
    series_attrs TEXT NOT NULL,
    study_attrs TEXT NOT NULL
);
CREATE UNIQUE INDEX instances_in_study ON instances (study, sk);
CREATE TABLE series (
    study TEXT NOT NULL,
    series TEXT NOT NULL,
    attrs TEXT NOT NULL,
    study_attrs TEXT NOT NULL,
    sdt TEXT NOT NULL,
    modality TEXT,
    n_instances INTEGER NOT NULL,
    PRIMARY KEY (study, series)
) WITHOUT ROWID;
CREATE INDEX series_by_uid ON series (series);
CREATE INDEX series_by_modality ON series (modality, sdt);
CREATE TABLE studies (
    study TEXT PRIMARY KEY,
    attrs TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    pid TEXT,
    accession TEXT,
    sdt TEXT NOT NULL,
    name_key TEXT,
    n_instances INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX studies_by_date ON studies (sdt);
CREATE INDEX studies_by_patient ON studies (pid, sdt);
CREATE INDEX studies_by_accession ON studies (accession, sdt);
CREATE INDEX studies_by_name ON studies (name_key);
CREATE TABLE study_modalities (
    study TEXT NOT NULL, modality TEXT NOT NULL, PRIMARY KEY (study, modality)
) WITHOUT ROWID;
CREATE TABLE study_sop_classes (
    study TEXT NOT NULL, sop_class TEXT NOT NULL, PRIMARY KEY (study, sop_class)
) WITHOUT ROWID;
CREATE TABLE patients (
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    attrs TEXT NOT NULL,
    list_key TEXT NOT NULL,
    name_key TEXT,
    n_instances INTEGER NOT NULL,
    PRIMARY KEY (patient_id, issuer)
) WITHOUT ROWID;
CREATE INDEX patients_by_list ON patients (list_key);
CREATE INDEX patients_by_name ON patients (name_key);
CREATE TABLE patient_studies (
    patient_id TEXT NOT NULL, issuer TEXT NOT NULL, study TEXT NOT NULL,
    PRIMARY KEY (patient_id, issuer, study)
) WITHOUT ROWID;
CREATE TABLE patient_series (
    patient_id TEXT NOT NULL, issuer TEXT NOT NULL, series TEXT NOT NULL,
    PRIMARY KEY (patient_id, issuer, series)
) WITHOUT ROWID;
"""
# Version 2: the whole instance's DICOM JSON, compressed (NULL for instances stored before:
# WADO-RS metadata builds theirs from the Part 10 file).
_SCHEMA_V2 = "ALTER TABLE instances ADD COLUMN meta BLOB"
# Version 3: the de-identified Study, Series and SOP Instance UIDs (``shared.dicom.uid_map``,
# the deployment key), each to its original, for the read-deidentified view. Filled at store
# time; rows stored before (or with another key) are filled by ``_sync_deidentified`` when
# the database is opened with the key.
_SCHEMA_V3 = """
CREATE TABLE deid_uids (
    level TEXT NOT NULL, duid TEXT NOT NULL, uid TEXT NOT NULL, PRIMARY KEY (level, duid)
) WITHOUT ROWID
"""
#: The meta row naming the key (its fingerprint) the de-identified UIDs were made with.
_DEID_KEY = "deid_key"
_TERM_COLUMNS = ", ".join(TEXT_KEYS.values())
# Version 4: substring search (issue 13). ``study_terms`` holds the normalised text of each
# study's PatientName, PatientID, AccessionNumber, StudyDescription and ReferringPhysicianName
# (:func:`shared.dicomweb.substring.study_terms`); ``study_text`` indexes every trigram of it
# (FTS5, external content: the text is kept once, in study_terms). ``_add`` rewrites both only
# when a study is created or one of these values changes.
_SCHEMA_V4 = f"""
CREATE TABLE study_terms (
    id INTEGER PRIMARY KEY,
    study TEXT NOT NULL UNIQUE,
    {", ".join(f"{c} TEXT NOT NULL" for c in TEXT_KEYS.values())}
);
CREATE VIRTUAL TABLE study_text USING fts5(
    {_TERM_COLUMNS}, content='study_terms', content_rowid='id',
    tokenize='trigram case_sensitive 1'
)
"""


def _migrate_to_4(connection: sqlite3.Connection) -> None:
    """Create the substring index and fill it from the studies already stored (the text as
    version 4 kept it: version 6 wraps it)."""
    _run_script(connection, _SCHEMA_V4)
    marks = ",".join("?" * (len(TEXT_KEYS) + 1))
    rows = connection.execute("SELECT study, attrs FROM studies").fetchall()
    connection.executemany(
        f"INSERT INTO study_terms (study, {_TERM_COLUMNS}) VALUES ({marks})",
        [(study, *study_terms(json.loads(attrs))) for study, attrs in rows],
    )
    connection.execute("INSERT INTO study_text (study_text) VALUES ('rebuild')")


# Version 5: every series row carries its study's current ``sdt`` (``_add`` rewrites them
# when a study's date or time changes), so that the modality index (modality, sdt) lists
# series study by study, newest study first. Older files may hold a series with the date of
# an earlier instance of its study.
_SCHEMA_V5 = """
UPDATE series SET sdt = (SELECT s.sdt FROM studies s WHERE s.study = series.study)
WHERE sdt <> (SELECT s.sdt FROM studies s WHERE s.study = series.study)
"""

# Version 6 (docs/decisions/0006-qido-latency-at-scale.md):
# * studies, series and patients become rowid tables. As WITHOUT ROWID tables their rows
#   (about 1 KB of DICOM JSON) sat in the primary key's B-tree, whose interior pages hold
#   whole rows: three studies to a page, eight levels at 100,000 studies, and an overflow
#   page per series row. The key is now a small unique index, the rows sit in the rowid
#   B-tree (hundreds of children per interior page), copied in date order; secondary
#   indexes name what a search reads after them (study, sdt), so they stay covering.
# * study_terms keeps its study's sdt, indexed with the text: a search on common text walks
#   that index newest first, a scan instead of a lookup per study.
# * the trigram index reads each column's text between two separators (the view
#   study_text_source), so that the first and last characters of a value are trigrams of
#   their own: ``abc*def`` looks up "\x1fabc" and "def\x1f", the values that start and
#   end so, not every value holding "abc" and "def".
_SCHEMA_V6 = """
CREATE TABLE studies_v6 (
    study TEXT PRIMARY KEY,
    attrs TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    pid TEXT,
    accession TEXT,
    sdt TEXT NOT NULL,
    name_key TEXT,
    n_instances INTEGER NOT NULL
);
INSERT INTO studies_v6 (study, attrs, patient_id, pid, accession, sdt, name_key, n_instances)
SELECT study, attrs, patient_id, pid, accession, sdt, name_key, n_instances FROM studies
ORDER BY sdt;
DROP TABLE studies;
ALTER TABLE studies_v6 RENAME TO studies;
CREATE INDEX studies_by_date ON studies (sdt, study);
CREATE INDEX studies_by_patient ON studies (pid, sdt, study);
CREATE INDEX studies_by_accession ON studies (accession, sdt, study);
CREATE INDEX studies_by_name ON studies (name_key, sdt, study);
CREATE TABLE series_v6 (
    study TEXT NOT NULL,
    series TEXT NOT NULL,
    attrs TEXT NOT NULL,
    study_attrs TEXT NOT NULL,
    sdt TEXT NOT NULL,
    modality TEXT,
    n_instances INTEGER NOT NULL,
    PRIMARY KEY (study, series)
);
INSERT INTO series_v6 (study, series, attrs, study_attrs, sdt, modality, n_instances)
SELECT study, series, attrs, study_attrs, sdt, modality, n_instances FROM series
ORDER BY sdt, study, series;
DROP TABLE series;
ALTER TABLE series_v6 RENAME TO series;
CREATE INDEX series_by_uid ON series (series);
CREATE INDEX series_by_modality ON series (modality, sdt, study, series);
CREATE TABLE patients_v6 (
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    attrs TEXT NOT NULL,
    list_key TEXT NOT NULL,
    name_key TEXT,
    n_instances INTEGER NOT NULL,
    PRIMARY KEY (patient_id, issuer)
);
INSERT INTO patients_v6 (patient_id, issuer, attrs, list_key, name_key, n_instances)
SELECT patient_id, issuer, attrs, list_key, name_key, n_instances FROM patients
ORDER BY list_key;
DROP TABLE patients;
ALTER TABLE patients_v6 RENAME TO patients;
CREATE INDEX patients_by_list ON patients (list_key);
CREATE INDEX patients_by_name ON patients (name_key);
ALTER TABLE study_terms ADD COLUMN sdt TEXT;
UPDATE study_terms SET sdt = (SELECT s.sdt FROM studies s WHERE s.study = study_terms.study);
CREATE INDEX study_terms_by_date ON study_terms (sdt, study, {columns});
DROP TABLE study_text;
CREATE VIEW study_text_source AS SELECT id, {edged} FROM study_terms;
CREATE VIRTUAL TABLE study_text USING fts5(
    {columns}, content='study_text_source', content_rowid='id',
    tokenize='trigram case_sensitive 1'
);
INSERT INTO study_text (study_text) VALUES ('rebuild')
""".format(
    columns=_TERM_COLUMNS,
    edged=", ".join(
        f"CASE WHEN {c} = '' THEN '' ELSE char(31) || {c} || char(31) END AS {c}"
        for c in TEXT_KEYS.values()
    ),
)

Migration = str | Callable[[sqlite3.Connection], None]
# Each entry upgrades a database from the version before it (index: the version reached):
# SQL statements separated by semicolons, or a function given the connection.
MIGRATIONS: dict[int, Migration] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _SCHEMA_V3,
    4: _migrate_to_4,
    5: _SCHEMA_V5,
    6: _SCHEMA_V6,
}


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def open_database(path: Path, uid_map: UidMap | None = None) -> sqlite3.Connection:
    """A connection to the index at ``path``, created or migrated to :data:`SCHEMA_VERSION`;
    with ``uid_map``, its de-identified UIDs brought up to date with that key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path)
    _migrate(connection, uid_map)
    return connection


def _connect(path: Path) -> sqlite3.Connection:
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


def _migrate(connection: sqlite3.Connection, uid_map: UidMap | None = None) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the index was written by a newer version (schema {version} > {SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[target]
            if isinstance(step, str):
                _run_script(connection, step)
            else:
                step(connection)
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
        if uid_map is not None:
            _sync_deidentified(connection, uid_map)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _sync_deidentified(connection: sqlite3.Connection, uid_map: UidMap) -> None:
    """Backfill: every stored study, series and instance gets its de-identified UID, unless
    the lookup was already complete for this key (a meta row holds the key's fingerprint;
    a write without the key removes it). One pass over the three tables when needed."""
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (_DEID_KEY,)).fetchone()
    if row is not None and row[0] == uid_map.fingerprint:
        return
    connection.create_function("deid_uid", 1, uid_map, deterministic=True)
    connection.execute("DELETE FROM deid_uids")
    for level, column, table in (
        ("STUDY", "study", "studies"),
        ("SERIES", "series", "series"),
        ("INSTANCE", "sop", "instances"),
    ):
        connection.execute(
            "INSERT OR IGNORE INTO deid_uids (level, duid, uid)"
            f" SELECT ?, deid_uid({column}), {column} FROM {table}",
            (level,),
        )
    connection.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_DEID_KEY, uid_map.fingerprint),
    )


def schema_version(path: Path) -> int:
    """The schema version of the index file at ``path`` (0 when there is none)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as connection:
        try:
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0]) if row else 0


class _Connections:
    """Connections to one database file, kept for reuse whichever thread asks: a call
    takes an idle one (or opens one) and puts it back, so a server that starts a thread
    per request (the local stack's) does not open a connection per request, and each
    connection keeps its page cache and compiled schema. There are as many as calls ever
    ran at once."""

    def __init__(self, path: Path, uid_map: UidMap | None = None) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        open_database(path, uid_map).close()  # create or migrate once, up front

    @contextlib.contextmanager
    def lease(self) -> Iterator[sqlite3.Connection]:
        """A connection for the caller alone until the block ends (the last one put back
        first: the warmest cache)."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = _connect(self.path)  # migrated by the constructor
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


class SqliteIndex:
    """InstanceIndex on SQLite (port :class:`shared.ports.InstanceIndex`).

    With ``uid_map`` (the deployment key), each instance's de-identified UIDs are written in
    its transaction (``deid_uids``: one row per new instance, series and study)."""

    def __init__(self, path: Path, uid_map: UidMap | None = None) -> None:
        self._db = _Connections(path, uid_map)
        self._uid_map = uid_map

    def add(self, record: InstanceRecord) -> AddOutcome:
        """Add an instance and update its parents, all or nothing."""
        if _entry_size(record) > MAX_ENTRY_BYTES:
            return AddOutcome.REJECTED
        outcome: AddOutcome = self._db.run(lambda c: _add(c, record, self._uid_map))
        return outcome

    def add_many(self, records: Iterable[InstanceRecord]) -> list[AddOutcome]:
        """Add instances in one transaction, each exactly as :meth:`add` would (bulk loads:
        one commit instead of one per instance); an entry too large is REJECTED alone."""

        def work(c: sqlite3.Connection) -> list[AddOutcome]:
            return [
                AddOutcome.REJECTED
                if _entry_size(r) > MAX_ENTRY_BYTES
                else _add(c, r, self._uid_map)
                for r in records
            ]

        outcomes: list[AddOutcome] = self._db.run(work)
        return outcomes

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the instance's entry points at ``blob_key``."""
        rows = self._db.query("SELECT key FROM instances WHERE sop = ?", (sop_instance_uid,))
        return bool(rows) and rows[0]["key"] == blob_key


def _entry_size(r: InstanceRecord) -> int:
    return len(r.instance_json) + len(r.series_json) + len(r.study_json) + len(r.metadata)


def _add(c: sqlite3.Connection, r: InstanceRecord, uid_map: UidMap | None) -> AddOutcome:
    existing = c.execute("SELECT sha256 FROM instances WHERE sop = ?", (r.sop_instance_uid,))
    found = existing.fetchone()
    if found is not None:
        return AddOutcome.ALREADY_STORED if found[0] == r.sha256 else AddOutcome.DIFFERENT_CONTENT
    study = c.execute(
        "SELECT patient_id, sdt FROM studies WHERE study = ?", (r.study_uid,)
    ).fetchone()
    if study is not None and study[0] != r.patient_id:
        return AddOutcome.PATIENT_MISMATCH
    sdt = study_sort_key(r.study_date, r.study_time, r.study_uid)
    if study is not None and study[1] != sdt:  # the study moves: its series with it
        c.execute("UPDATE series SET sdt = ? WHERE study = ?", (sdt, r.study_uid))
    c.execute(
        "INSERT INTO instances (sop, study, series, sk, sop_class, ts, sha256, size, key, aet,"
        " received, attrs, series_attrs, study_attrs, meta)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            r.sop_instance_uid,
            r.study_uid,
            r.series_uid,
            instance_sk(r.series_uid, r.instance_number, r.sop_instance_uid),
            r.sop_class_uid,
            r.transfer_syntax,
            r.sha256,
            r.size,
            r.blob_key,
            r.calling_aet,
            r.received,
            r.instance_json,
            r.series_json,
            r.study_json,
            r.metadata or None,
        ),
    )
    c.execute(
        "INSERT INTO series (study, series, attrs, study_attrs, sdt, modality, n_instances)"
        " VALUES (?,?,?,?,?,?,1) ON CONFLICT (study, series) DO UPDATE SET"
        " attrs = excluded.attrs, study_attrs = excluded.study_attrs, sdt = excluded.sdt,"
        " modality = COALESCE(excluded.modality, series.modality),"
        " n_instances = series.n_instances + 1",
        (r.study_uid, r.series_uid, r.series_json, r.study_json, sdt, r.modality or None),
    )
    name_key = person_name_key(r.patient_name)
    c.execute(
        "INSERT INTO studies (study, attrs, patient_id, pid, accession, sdt, name_key,"
        " n_instances) VALUES (?,?,?,?,?,?,?,1) ON CONFLICT (study) DO UPDATE SET"
        " attrs = excluded.attrs, pid = COALESCE(excluded.pid, studies.pid),"
        " accession = COALESCE(excluded.accession, studies.accession), sdt = excluded.sdt,"
        " name_key = COALESCE(excluded.name_key, studies.name_key),"
        " n_instances = studies.n_instances + 1",
        (
            r.study_uid,
            r.study_json,
            r.patient_id,
            r.patient_id or None,
            r.accession_number or None,
            sdt,
            f"{name_key}#{r.study_uid}" if name_key else None,
        ),
    )
    c.execute(
        "INSERT OR IGNORE INTO study_sop_classes (study, sop_class) VALUES (?, ?)",
        (r.study_uid, r.sop_class_uid),
    )
    if r.modality:
        c.execute(
            "INSERT OR IGNORE INTO study_modalities (study, modality) VALUES (?, ?)",
            (r.study_uid, r.modality),
        )
    if r.patient_id:
        _add_to_patient(c, r, name_key)
    _add_deidentified(c, r, uid_map)
    _update_terms(c, r)
    return AddOutcome.STORED


def _add_deidentified(c: sqlite3.Connection, r: InstanceRecord, uid_map: UidMap | None) -> None:
    if uid_map is None:  # the lookup is incomplete: the next open with the key backfills
        c.execute("DELETE FROM meta WHERE key = ?", (_DEID_KEY,))
        return
    for level, uid in (
        ("STUDY", r.study_uid),
        ("SERIES", r.series_uid),
        ("INSTANCE", r.sop_instance_uid),
    ):
        c.execute(
            "INSERT OR IGNORE INTO deid_uids (level, duid, uid) VALUES (?, ?, ?)",
            (level, uid_map(uid), uid),
        )


def _update_terms(c: sqlite3.Connection, r: InstanceRecord) -> None:
    """The study's substring index entry, rewritten only when it gains a value; its date
    follows the study's.

    The entry keeps every value the study has had, not only the latest: series and
    instance rows carry their study's attributes as of their own latest instance, so a
    search at those levels may match a value the study no longer has.
    """
    sdt = study_sort_key(r.study_date, r.study_time, r.study_uid)
    terms = study_terms(json.loads(r.study_json))
    row = c.execute(
        f"SELECT id, sdt, {_TERM_COLUMNS} FROM study_terms WHERE study = ?", (r.study_uid,)
    ).fetchone()
    if row is not None:
        kept = tuple(row[2:])
        terms = tuple(merge_terms(old, new) for old, new in zip(kept, terms, strict=True))
        if kept == terms:
            if row[1] != sdt:
                c.execute("UPDATE study_terms SET sdt = ? WHERE id = ?", (sdt, row[0]))
            return
    _write_terms(c, r.study_uid, sdt, terms, row)


def _edged(text: str) -> str:
    """A column's text as the trigram index reads it (``study_text_source``): its values
    between separators."""
    return f"{TEXT_EDGE}{text}{TEXT_EDGE}" if text else ""


def _write_terms(
    c: sqlite3.Connection,
    study: str,
    sdt: str,
    terms: tuple[str, ...],
    old: tuple[Any, ...] | None,
) -> None:
    """Write a study's text, its date and its trigram index entry; ``old``: its row (id,
    sdt, text...) when it has one."""
    marks = ",".join("?" * len(terms))
    if old is None:
        cursor = c.execute(
            f"INSERT INTO study_terms (study, sdt, {_TERM_COLUMNS}) VALUES (?, ?, {marks})",
            (study, sdt, *terms),
        )
        row_id = cursor.lastrowid
    else:
        row_id = old[0]
        c.execute(
            f"INSERT INTO study_text (study_text, rowid, {_TERM_COLUMNS})"
            f" VALUES ('delete', ?, {marks})",
            (row_id, *map(_edged, old[2:])),
        )
        assignments = ", ".join(f"{column} = ?" for column in TEXT_KEYS.values())
        c.execute(
            f"UPDATE study_terms SET sdt = ?, {assignments} WHERE id = ?", (sdt, *terms, row_id)
        )
    c.execute(
        f"INSERT INTO study_text (rowid, {_TERM_COLUMNS}) VALUES (?, {marks})",
        (row_id, *map(_edged, terms)),
    )


def _add_to_patient(c: sqlite3.Connection, r: InstanceRecord, name_key: str) -> None:
    patient = (r.patient_id, r.issuer_of_patient_id)
    list_key = f"{name_key}#{r.patient_id}\\{r.issuer_of_patient_id}"
    c.execute(
        "INSERT INTO patients (patient_id, issuer, attrs, list_key, name_key, n_instances)"
        " VALUES (?,?,?,?,?,1) ON CONFLICT (patient_id, issuer) DO UPDATE SET"
        " attrs = excluded.attrs, list_key = excluded.list_key,"
        " name_key = COALESCE(excluded.name_key, patients.name_key),"
        " n_instances = patients.n_instances + 1",
        (*patient, r.patient_json, list_key, list_key if name_key else None),
    )
    c.execute(
        "INSERT OR IGNORE INTO patient_studies (patient_id, issuer, study) VALUES (?,?,?)",
        (*patient, r.study_uid),
    )
    c.execute(
        "INSERT OR IGNORE INTO patient_series (patient_id, issuer, series) VALUES (?,?,?)",
        (*patient, r.series_uid),
    )
