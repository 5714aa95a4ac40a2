"""The change feed (shared/services/changefeed.py) on every backend: the in-memory fake,
SQLite and DynamoDB (moto). Its entries are the history of the committed changes, in
commit order, with increasing Sequences a client pages by; what was refused writes none."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.ports import AddOutcome, ReplaceOutcome
from shared.services import changefeed
from shared.services.changefeed import FeedRequest
from tests.fakes import FakeIndex, FakeSearchCatalog
from tests.support import dicom_files

TABLE = "changefeed-table"
STUDIES = ("1.2.826.0.1.3680043.8.498.2311", "1.2.826.0.1.3680043.8.498.2312")


@dataclass
class Backend:
    index: Any
    catalog: Callable[[], Any]


@pytest.fixture(params=["fake", "sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> Backend:
    if request.param == "fake":
        fake = FakeIndex()
        return Backend(fake, lambda: FakeSearchCatalog(fake))
    if request.param == "sqlite":
        path = tmp_path / "index.sqlite3"
        return Backend(SqliteIndex(path), lambda: SqliteCatalog(path))
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
    return Backend(index, lambda: DynamoSearch(dynamodb, TABLE))


def _history(backend: Backend) -> list[tuple[str, str, str]]:
    """Stores, refusals, a replacement and removals over two studies (two shards on
    DynamoDB, as their hashes fall); the (Action, SOP, State) the feed must answer."""
    a = [dicom_files.with_new_uids(study=STUDIES[0], patient_id="P-1") for _ in range(2)]
    b = [dicom_files.with_new_uids(study=STUDIES[1], patient_id="P-2") for _ in range(2)]
    a0, a1, b0, b1 = (dicom_files.record_of(d).sop_instance_uid for d in (*a, *b))
    for data in (a[0], b[0], a[1], b[1]):
        assert backend.index.add(dicom_files.record_of(data)) is AddOutcome.STORED
    assert backend.index.add(dicom_files.record_of(a[0])) is AddOutcome.ALREADY_STORED
    assert backend.index.add(
        dicom_files.record_of(dicom_files.changed(b[0], SeriesDescription="x"))
    ) is (AddOutcome.DIFFERENT_CONTENT)
    update = dicom_files.record_of(dicom_files.changed(a[1], StudyDescription="UPDATED"))
    assert backend.index.replace(update).outcome is ReplaceOutcome.REPLACED
    backend.index.remove(STUDIES[1])
    return [
        ("create", a0, "current"),
        ("create", b0, "deleted"),
        ("create", a1, "replaced"),
        ("create", b1, "deleted"),
        ("update", a1, "current"),
        *sorted([("delete", b0, "deleted"), ("delete", b1, "deleted")]),
    ]


def test_entries_are_the_committed_changes_in_commit_order(backend: Backend) -> None:
    expected = _history(backend)
    entries = changefeed.read(backend.index, backend.catalog(), FeedRequest(0, 100, False)).entries
    got = [(e["Action"], e["SOPInstanceUID"], e["State"]) for e in entries]
    assert got[:5] == expected[:5]
    assert sorted(got[5:]) == expected[5:]  # a study's removals: in the index's own order
    sequences = [e["Sequence"] for e in entries]
    assert all(isinstance(s, int) and s > 0 for s in sequences)
    assert sequences == sorted(set(sequences))  # strictly increasing
    assert all(e["Timestamp"] for e in entries)


def test_paging_by_the_last_sequence_equals_one_read(backend: Backend) -> None:
    _history(backend)
    catalog = backend.catalog()
    everything = changefeed.read(backend.index, catalog, FeedRequest(0, 100, False)).entries
    paged: list[dict[str, Any]] = []
    offset = 0
    while page := changefeed.read(backend.index, catalog, FeedRequest(offset, 2, False)).entries:
        paged += page
        offset = page[-1]["Sequence"]
    assert paged == everything
    (latest,) = changefeed.latest(backend.index, catalog, False).entries
    assert latest == everything[-1]


def test_metadata_of_the_current_entries(backend: Backend) -> None:
    _history(backend)
    entries = changefeed.read(backend.index, backend.catalog(), FeedRequest(0, 100, True)).entries
    for entry in entries:
        assert ("Metadata" in entry) == (entry["State"] == "current")
        if "Metadata" in entry:
            assert entry["Metadata"]["00080018"]["Value"] == [entry["SOPInstanceUID"]]


def test_an_empty_log(backend: Backend) -> None:
    assert changefeed.read(backend.index, backend.catalog(), FeedRequest()).entries == []
    assert backend.index.latest_change() is None


def test_a_late_commit_in_another_shard_is_not_skipped_on_dynamodb(mocked_aws: None) -> None:
    """The gap of part 1 (docs/decisions/0008-change-feed.md): a commit with a lower log
    id, in another shard, after a reader passed that id. It gets the next number."""
    from shared.adapters.dynamo_keys import change_shard

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    ahead = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
    behind = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
    ahead._last_id = time.time_ns() // 1000 + 10**9  # a clock ahead (ids: microseconds)
    first = dicom_files.with_new_uids(study=STUDIES[0], patient_id="P-1")
    other = next(
        f"{STUDIES[1]}.{n}"
        for n in range(100)
        if change_shard(f"{STUDIES[1]}.{n}") != change_shard(STUDIES[0])
    )
    late = dicom_files.with_new_uids(study=other, patient_id="P-2")
    assert ahead.add(dicom_files.record_of(first)) is AddOutcome.STORED
    catalog = DynamoSearch(dynamodb, TABLE)
    (seen,) = changefeed.read(ahead, catalog, FeedRequest(0, 100, False)).entries
    assert behind.add(dicom_files.record_of(late)) is AddOutcome.STORED  # commits after, id below
    later = changefeed.read(ahead, catalog, FeedRequest(seen["Sequence"], 100, False)).entries
    assert [e["StudyInstanceUID"] for e in later] == [other]
    assert [e["Sequence"] for e in later] == [seen["Sequence"] + 1]


def test_a_restored_instance_is_a_restore_entry(backend: Backend) -> None:
    """An index add marked ``restored`` (the restore's ``store.commit``) is listed as
    ``restore``, current; an ordinary add stays ``create``."""
    data = dicom_files.with_new_uids(study=STUDIES[0], patient_id="P-1")
    record = dicom_files.record_of(data)
    assert backend.index.add(record) is AddOutcome.STORED
    backend.index.remove(STUDIES[0])
    assert backend.index.add(record, restored=True) is AddOutcome.STORED
    entries = changefeed.read(backend.index, backend.catalog(), FeedRequest(0, 100, False)).entries
    assert [(e["Action"], e["State"]) for e in entries] == [
        ("create", "replaced"),
        ("delete", "replaced"),
        ("restore", "current"),
    ]
