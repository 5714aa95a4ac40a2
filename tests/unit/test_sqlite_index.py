"""The SQLite index file: created with its schema version, migrated, refused when newer.

Its outcomes and reads are held to DynamoDB's by the contract suites in tests/contract/.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import sqlite_index, sqlite_schema
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.adapters.sqlite_schema import SCHEMA_VERSION
from shared.dicom.validate import validate
from shared.ports import AddOutcome
from shared.services.store import _record
from tests.support import dicom_files


def _record_of(data: bytes):
    return _record(validate(data), "AE", datetime.now(UTC))


def test_a_new_file_gets_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    SqliteIndex(path)
    assert sqlite_schema.schema_version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    record = _record_of(dicom_files.with_new_uids())
    assert SqliteIndex(path).add(record) is AddOutcome.STORED
    assert SqliteIndex(path).add(record) is AddOutcome.ALREADY_STORED
    (row,) = SqliteCatalog(path).studies_by_uid([record.study_uid])
    assert row.n_instances == 1


def test_an_older_file_is_migrated_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "index.sqlite3"
    SqliteIndex(path)  # the current version
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(
        sqlite_schema.MIGRATIONS,
        SCHEMA_VERSION + 1,
        "ALTER TABLE instances ADD COLUMN note TEXT;"
        " CREATE INDEX instances_by_note ON instances (note)",
    )
    SqliteIndex(path)
    assert sqlite_schema.schema_version(path) == SCHEMA_VERSION + 1
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(instances)")]
    assert "note" in columns


def test_a_file_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    SqliteIndex(path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer version"):
        SqliteIndex(path)


def test_an_entry_over_dynamodbs_item_limit_is_rejected_as_there(tmp_path: Path) -> None:
    import dataclasses

    record = dataclasses.replace(
        _record_of(dicom_files.with_new_uids()), instance_json='{"x":"' + "a" * 420_000 + '"}'
    )
    assert SqliteIndex(tmp_path / "i.sqlite3").add(record) is AddOutcome.REJECTED


def test_a_version_1_index_gains_metadata_and_keeps_its_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    path = tmp_path / "index.sqlite3"
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", 1)
    old = dataclasses.replace(_record_of(dicom_files.with_new_uids()), metadata=b"")
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_index, "_add", _add_version_1)
        assert SqliteIndex(path).add(old) is AddOutcome.STORED
    assert sqlite_schema.schema_version(path) == 1
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", SCHEMA_VERSION)
    new = _record_of(dicom_files.with_new_uids())
    assert SqliteIndex(path).add(new) is AddOutcome.STORED
    assert sqlite_schema.schema_version(path) == SCHEMA_VERSION
    catalog = SqliteCatalog(path)
    (before,) = catalog.instances_by_uid([old.sop_instance_uid])
    (after,) = catalog.instances_by_uid([new.sop_instance_uid])
    assert before.metadata == b""  # built from the Part 10 file when asked for
    assert after.metadata == new.metadata != b""


def _add_version_1(c: sqlite3.Connection, r: Any, *_: Any) -> AddOutcome:
    """What version 1 wrote: no metadata column."""
    c.execute(
        "INSERT INTO instances (sop, study, series, sk, sop_class, ts, sha256, size, key, aet,"
        " received, attrs, series_attrs, study_attrs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (r.sop_instance_uid, r.study_uid, r.series_uid, "INSTANCE#x#1#y", r.sop_class_uid,
         r.transfer_syntax, r.sha256, r.size, r.blob_key, r.calling_aet, r.received,
         r.instance_json, r.series_json, r.study_json),
    )  # fmt: skip
    return AddOutcome.STORED


def test_one_connection_serves_one_thread_after_another(tmp_path: Path) -> None:
    # A server that starts a thread per request (the local stack's) reuses it: no
    # connection opened per request, its page cache kept.
    import threading

    path = tmp_path / "index.sqlite3"
    record = _record_of(dicom_files.with_new_uids())
    assert SqliteIndex(path).add(record) is AddOutcome.STORED
    catalog = SqliteCatalog(path)
    found = []
    for _ in range(5):
        thread = threading.Thread(
            target=lambda: found.extend(catalog.studies_by_uid([record.study_uid]))
        )
        thread.start()
        thread.join()
    assert len(found) == 5
    assert len(catalog._db._idle) == 1
