"""The SQLite index's schema: its tables, its version and the migrations from each older
version, run when a file is opened (:func:`prepare`). The write path is ``sqlite_index``,
the read side ``sqlite_catalog``; both lease connections from ``sqlite_connections``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from shared.adapters.sqlite_connections import connect
from shared.dicom.uid_map import UidMap
from shared.dicomweb.substring import TEXT_KEYS, study_terms

SCHEMA_VERSION = 7
#: Before and after each column's text as the trigram index reads it: the separator
#: :mod:`shared.dicomweb.substring` puts between values, so every value sits between two.
TEXT_EDGE = "\x1f"

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
DEID_KEY = "deid_key"
TERM_COLUMNS = ", ".join(TEXT_KEYS.values())
# Version 4: substring search. ``study_terms`` holds the normalised text of each
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
    {TERM_COLUMNS}, content='study_terms', content_rowid='id',
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
        f"INSERT INTO study_terms (study, {TERM_COLUMNS}) VALUES ({marks})",
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
    columns=TERM_COLUMNS,
    edged=", ".join(
        f"CASE WHEN {c} = '' THEN '' ELSE char(31) || {c} || char(31) END AS {c}"
        for c in TEXT_KEYS.values()
    ),
)

# Version 7: the change log. One row per committed change (an instance added, removed or
# replaced), written in the change's transaction; ``seq`` never repeats, even once rows are
# dropped. Changes committed before the log existed are not in it.
_SCHEMA_V7 = """
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    study TEXT NOT NULL,
    series TEXT NOT NULL,
    sop TEXT NOT NULL,
    key TEXT NOT NULL,
    previous_key TEXT NOT NULL,
    at TEXT NOT NULL
)
"""

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
    7: _SCHEMA_V7,
}


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def open_database(path: Path, uid_map: UidMap | None = None) -> sqlite3.Connection:
    """A connection to the index at ``path``, created or migrated to :data:`SCHEMA_VERSION`;
    with ``uid_map``, its de-identified UIDs brought up to date with that key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = connect(path)
    migrate(connection, uid_map)
    return connection


def migrate(connection: sqlite3.Connection, uid_map: UidMap | None = None) -> None:
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
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (DEID_KEY,)).fetchone()
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
        (DEID_KEY, uid_map.fingerprint),
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


def prepare(path: Path, uid_map: UidMap | None = None) -> None:
    """Create or migrate the index at ``path`` once, before its connections are leased."""
    open_database(path, uid_map).close()
