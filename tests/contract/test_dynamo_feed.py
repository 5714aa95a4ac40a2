"""The change feed's sequencer on DynamoDB (moto): one gap-free sequence over the sharded
change log, whatever the writers' clocks, the readers' pages and the sequencers' races.

The log entries are written by the write side's own code (``_log_items``, the items each
change's transaction carries); the feed is read through ``DynamoInstanceIndex.changes``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local import template as local_template
from shared.adapters.dynamo_feed import BATCH, DynamoFeed
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_keys import CHANGE_SHARDS, change_shard
from shared.ports import Change

TABLE = "feed-table"
#: Studies whose changes fall in distinct shards (the first few shards).
STUDIES = tuple(
    {change_shard(f"1.2.3.{n}"): f"1.2.3.{n}" for n in range(200)}[shard] for shard in range(4)
)


def _table() -> None:
    client = boto3.client("dynamodb")
    client.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)


class _OneCallAtATime:
    """A client whose calls are each atomic, as DynamoDB's are (moto in-process is not
    thread-safe); threads interleave between calls."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                return method(**kwargs)

        return call


def _index(skew_s: float = 0.0) -> DynamoInstanceIndex:
    """A writer (and reader) whose clock is ``skew_s`` seconds ahead."""
    client = _OneCallAtATime(boto3.client("dynamodb"))
    index = DynamoInstanceIndex(client, TABLE, sleep=lambda _: None)
    index._last_id = int(index._next_id()) + int(skew_s * 1e6)
    return index


_counter = iter(range(10**9))


def _commit(writer: DynamoInstanceIndex, study: str) -> str:
    """Commit one change's log entry as the write side does (in its transaction); its SOP."""
    sop = f"{study}.9.{next(_counter)}"
    change = Change("add", study, f"{study}.1", sop, f"dicom/{study}/{sop}.dcm", at="t")
    while True:
        try:
            writer._client.transact_write_items(TransactItems=writer._log_items(change))
            return sop
        except writer._client.exceptions.TransactionCanceledException:
            writer._saw_counter(study)


def _read_all(reader: DynamoInstanceIndex, cursor: str = "", limit: int = 100) -> list[Change]:
    out: list[Change] = []
    while True:
        page = reader.changes(cursor, limit)
        if not page.changes:
            return out
        out += page.changes
        cursor = page.cursor


@pytest.fixture
def table(mocked_aws: None) -> Iterator[None]:
    _table()
    yield


def test_numbers_are_one_two_three_in_commit_order_per_study(table: None) -> None:
    writer = _index()
    committed = [_commit(writer, STUDIES[n % 3]) for n in range(7)]
    feed = _read_all(_index(), limit=3)
    assert [c.sequence for c in feed] == list(range(1, 8))
    assert sorted(c.sop_instance_uid for c in feed) == sorted(committed)
    for study in STUDIES[:3]:
        assert [c.sop_instance_uid for c in feed if c.study_uid == study] == [
            s for s in committed if s.startswith(study + ".9.")
        ]


def test_a_reader_numbers_only_what_its_page_needs(table: None) -> None:
    writer = _index()
    for n in range(10):
        _commit(writer, STUDIES[n % 2])
    page = _index().changes("", 4)
    assert [c.sequence for c in page.changes] == [1, 2, 3, 4]
    assert DynamoFeed(boto3.client("dynamodb"), TABLE).state().last == 4
    assert _index().latest_change() is not None
    assert DynamoFeed(boto3.client("dynamodb"), TABLE).state().last == 10


def test_a_late_commit_below_the_numbered_ids_gets_the_next_number(table: None) -> None:
    ahead, behind = _index(skew_s=60), _index()
    first = _commit(ahead, STUDIES[0])
    assert [c.sop_instance_uid for c in _read_all(_index())] == [first]
    late = _commit(behind, STUDIES[1])  # its id is a minute below the first's
    (after,) = _index().changes("1").changes
    assert (after.sop_instance_uid, after.sequence) == (late, 2)


def test_a_sequencer_that_lost_the_race_numbers_nothing_twice(table: None) -> None:
    writer = _index()
    for n in range(5):
        _commit(writer, STUDIES[n % 4])
    client = boto3.client("dynamodb")
    slow, fast = DynamoFeed(client, TABLE), DynamoFeed(client, TABLE)
    state = slow.state()
    found = slow._pending(state, BATCH)
    assert fast.sequence() == 5
    assert slow._number(state, found) is False  # the state it read is gone
    _commit(writer, STUDIES[0])
    assert slow.sequence() == 6
    feed = _read_all(_index())
    assert [c.sequence for c in feed] == list(range(1, 7))
    assert len({c.sop_instance_uid for c in feed}) == 6


def test_more_entries_than_one_transaction_and_one_partition(
    table: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.adapters.dynamo_feed.FEED_PARTITION", 7)
    monkeypatch.setattr("shared.adapters.dynamo_keys.FEED_PARTITION", 7)
    writer = _index()
    committed = [_commit(writer, STUDIES[n % 4]) for n in range(BATCH + 30)]
    feed = _read_all(_index(), limit=100)
    assert [c.sequence for c in feed] == list(range(1, len(committed) + 1))
    assert sorted(c.sop_instance_uid for c in feed) == sorted(committed)
    assert [c.sequence for c in _index().changes("95", 10).changes] == list(range(96, 106))


def test_concurrent_writers_and_readers(table: None) -> None:
    """Four writers with skewed clocks and two readers, in threads: each reader's pages
    hold each committed change once, numbered 1, 2, 3..., each study in commit order."""
    committed: dict[str, list[str]] = {s: [] for s in STUDIES}
    lock = threading.Lock()
    done = threading.Event()
    seen: list[list[Change]] = [[], []]

    def write(n: int) -> None:
        writer = _index(skew_s=n * 0.5)
        study = STUDIES[n]
        for _ in range(15):
            with lock:  # one study's commits in a known order
                committed[study].append(_commit(writer, study))

    def read(n: int) -> None:
        reader, cursor, finished = _index(), "", False
        while not finished:
            finished = done.is_set()
            page = reader.changes(cursor, 1 + n * 6)
            seen[n] += page.changes
            cursor = page.cursor
        seen[n] += _read_all(reader, cursor)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join(timeout=60)
    total = sum(len(v) for v in committed.values())
    for feed in seen:
        assert [c.sequence for c in feed] == list(range(1, total + 1))
        for study, sops in committed.items():
            assert [c.sop_instance_uid for c in feed if c.study_uid == study] == sops
    assert [c.sop_instance_uid for c in seen[0]] == [c.sop_instance_uid for c in seen[1]]


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, len(STUDIES) - 1)),
        st.tuples(st.just("read"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("race"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=_steps, skews=st.lists(st.sampled_from([-30.0, 0.0, 0.5, 30.0]), min_size=3, max_size=3)
)
def test_the_feed_is_the_history_of_commits(
    mocked_aws: None, steps: list[tuple[str, int, int]], skews: list[float]
) -> None:
    """Any interleaving of writers (clocks up to 30 s apart), paging readers and racing
    sequencers: a follower's pages hold every committed change once, numbered without a
    gap, each study in its commit order."""
    _table()
    try:
        writers = [_index(skew_s=s) for s in skews]
        reader = _index()
        committed: dict[str, list[str]] = {s: [] for s in STUDIES}
        followed: list[Change] = []
        cursor = ""
        for op, a, b in steps:
            if op == "write":
                committed[STUDIES[b]].append(_commit(writers[a], STUDIES[b]))
            elif op == "read":
                page = reader.changes(cursor, a)
                followed += page.changes
                cursor = page.cursor
            else:
                client = boto3.client("dynamodb")
                slow = DynamoFeed(client, TABLE)
                state = slow.state()
                found = slow._pending(state, BATCH)
                DynamoFeed(client, TABLE).sequence()
                if found:
                    assert slow._number(state, found) is False
        followed += _read_all(reader, cursor, 3)
        total = sum(len(v) for v in committed.values())
        assert [c.sequence for c in followed] == list(range(1, total + 1))
        for study, sops in committed.items():
            assert [c.sop_instance_uid for c in followed if c.study_uid == study] == sops
        assert len(STUDIES) <= CHANGE_SHARDS
    finally:
        boto3.client("dynamodb").delete_table(TableName=TABLE)
