"""The de-identified UID lookup (port ``DeidentifiedLookup``), on SQLite and on DynamoDB
(moto): written at store time in the instance's own transaction, resolved by level, and
backfilled for instances stored before (SQLite: when the index is opened with the key)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters import sqlite_index, sqlite_schema
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.uid_map import UidMap, map_uid
from shared.dicom.validate import validate
from shared.services.store import _record
from tests.support import dicom_files

TABLE = "index-table"
KEY = b"lookup contract key"


def _record_of(data: bytes):
    return _record(validate(data), "AE1", datetime.now(UTC))


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> tuple[Any, Any]:
    """(index, lookup) writing and reading de-identified UIDs with KEY."""
    if request.param == "sqlite":
        path = tmp_path / "index.sqlite3"
        return SqliteIndex(path, UidMap(KEY)), SqliteCatalog(path, UidMap(KEY))
    dynamodb = boto3.client("dynamodb")
    stack = local_template.load()
    dynamodb.create_table(TableName=TABLE, **stack.tables["IndexTable"].create_args)
    index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None, uid_map=UidMap(KEY))
    return index, DynamoSearch(dynamodb, TABLE)


def test_each_level_resolves_its_own_deidentified_uids(backend) -> None:
    index, lookup = backend
    study, series = "1.2.3.4.100", "1.2.3.4.101"
    records = [_record_of(dicom_files.with_new_uids(study=study, series=series)) for _ in range(2)]
    for record in records:
        index.add(record)
    deid = {uid: map_uid(uid, KEY) for uid in (study, series)}
    assert lookup.original_uids("STUDY", [deid[study]]) == {deid[study]: study}
    assert lookup.original_uids("SERIES", [deid[series]]) == {deid[series]: series}
    sops = {map_uid(r.sop_instance_uid, KEY): r.sop_instance_uid for r in records}
    assert lookup.original_uids("INSTANCE", list(sops)) == sops
    # Another level's UID, an original UID, an unknown one: nothing.
    assert lookup.original_uids("SERIES", [deid[study]]) == {}
    assert lookup.original_uids("STUDY", [study, "2.25.1"]) == {}


def test_sqlite_backfills_instances_stored_before_and_after_a_write_without_the_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "index.sqlite3"
    before = _record_of(dicom_files.with_new_uids())
    SqliteIndex(path).add(before)  # no key: nothing written, the lookup is marked incomplete
    deid = map_uid(before.sop_instance_uid, KEY)
    assert SqliteCatalog(path).original_uids("INSTANCE", [deid]) == {}
    catalog = SqliteCatalog(path, UidMap(KEY))  # opened with the key: backfilled
    assert catalog.original_uids("INSTANCE", [deid]) == {deid: before.sop_instance_uid}
    study = map_uid(before.study_uid, KEY)
    assert catalog.original_uids("STUDY", [study]) == {study: before.study_uid}


def test_sqlite_rebuilds_the_lookup_for_another_key(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    record = _record_of(dicom_files.with_new_uids())
    SqliteIndex(path, UidMap(KEY)).add(record)
    other = b"a rotated key"
    catalog = SqliteCatalog(path, UidMap(other))
    assert catalog.original_uids("INSTANCE", [map_uid(record.sop_instance_uid, KEY)]) == {}
    mapped = map_uid(record.sop_instance_uid, other)
    assert catalog.original_uids("INSTANCE", [mapped]) == {mapped: record.sop_instance_uid}


def test_a_version_2_index_migrates_and_backfills(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "index.sqlite3"
    record = _record_of(dicom_files.with_new_uids())
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_schema, "SCHEMA_VERSION", 2)
        patched.setattr(sqlite_index, "_add_deidentified", lambda *_: None)
        patched.setattr(sqlite_index, "_filed_text", lambda *_: (None, None))  # version 4's
        patched.setattr(sqlite_index, "_write_terms", lambda *_: None)
        patched.setattr(sqlite_index, "_log", lambda *_: None)  # version 7's
        SqliteIndex(path).add(record)
    assert sqlite_schema.schema_version(path) == 2
    catalog = SqliteCatalog(path, UidMap(KEY))
    assert sqlite_schema.schema_version(path) == sqlite_schema.SCHEMA_VERSION
    mapped = map_uid(record.series_uid, KEY)
    assert catalog.original_uids("SERIES", [mapped]) == {mapped: record.series_uid}
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM deid_uids").fetchone()
    assert count == 3  # one study, one series, one instance


def test_dynamodb_items_stored_before_are_found_once_backfilled(mocked_aws: None) -> None:
    from shared.adapters.dynamo_backfill import backfill
    from tools import deid_backfill

    dynamodb = boto3.client("dynamodb")
    stack = local_template.load()
    dynamodb.create_table(TableName=TABLE, **stack.tables["IndexTable"].create_args)
    record = _record_of(dicom_files.with_new_uids())
    DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None).add(record)  # before the view
    search = DynamoSearch(dynamodb, TABLE)
    wanted = {
        "STUDY": record.study_uid,
        "SERIES": record.series_uid,
        "INSTANCE": record.sop_instance_uid,
    }
    for level, uid in wanted.items():
        assert search.original_uids(level, [map_uid(uid, KEY)]) == {}  # not found yet
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="anon", SecretString=KEY.decode())
    assert deid_backfill.main(["--table", TABLE, "--secret-id", "anon"]) == 0
    for level, uid in wanted.items():
        mapped = map_uid(uid, KEY)
        assert search.original_uids(level, [mapped]) == {mapped: uid}, level
    assert backfill(dynamodb, TABLE, UidMap(KEY)) == 0  # nothing left to do
