"""The local stack's S3 "Object Created" events and schedules (what EventBridge does)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from local import events, template
from shared.adapters.file_blobs import FileBlobStore


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, function: str, event: dict[str, Any]) -> None:
        self.calls.append((function, event))
        if self.fail:
            self.fail -= 1
            raise RuntimeError("handler failed")

    @property
    def keys(self) -> list[str]:
        return [
            e["detail"]["object"]["key"] for _, e in self.calls if "object" in e.get("detail", {})
        ]


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path)


def source(store: FileBlobStore, invoke: Recorder, settle: bool = True) -> events.EventSource:
    return events.EventSource(template.load(), store, invoke, "bucket", settle=settle)


def test_the_template_routes_incoming_objects_to_the_ingest_function(store) -> None:
    """And an update's marker to the Operations function."""
    assert sorted(source(store, Recorder()).targets) == [
        ("IngestFunction", "incoming/"),
        ("OperationsFunction", "jobs/operations/"),
    ]


def test_an_announced_object_is_delivered_at_once_as_eventbridge_shapes_it(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    store.put("incoming/uploads/a", b"x")
    events_.created("incoming/uploads/a")
    assert events_.poll() == 1
    function, event = invoke.calls[0]
    assert function == "IngestFunction"
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert event["detail"]["bucket"]["name"] == "bucket"
    assert event["detail"]["object"] == {"key": "incoming/uploads/a", "size": 1}
    assert events_.poll() == 0  # once


def test_a_file_dropped_on_disk_waits_until_it_settles(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    store.put("incoming/site/a.dcm", b"partial")
    assert events_.poll() == 0  # first seen: may still be written
    path = store.path("incoming/site/a.dcm")
    path.write_bytes(b"partial and more")
    os.utime(path, (time.time() + 1, time.time() + 1))
    assert events_.poll() == 0  # changed since: still settling
    assert events_.poll() == 1
    assert invoke.keys == ["incoming/site/a.dcm"]
    store.put("dicom/other", b"x")  # not under the rule's prefix
    assert events_.poll() == 0


def test_objects_of_a_store_that_writes_atomically_need_not_settle(store) -> None:
    invoke = Recorder()
    store.put("incoming/a", b"x")
    assert source(store, invoke, settle=False).poll() == 1


def test_a_failing_handler_is_retried_then_left_to_the_sweep(store) -> None:
    invoke = Recorder(fail=events.MAX_ATTEMPTS + 3)
    events_ = source(store, invoke, settle=False)
    store.put("incoming/a", b"x")
    for _ in range(events.MAX_ATTEMPTS + 3):
        events_.poll()
    assert len(invoke.calls) == events.MAX_ATTEMPTS


def test_a_key_used_again_after_ingestion_is_delivered_again(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke, settle=False)
    store.put("incoming/a", b"x")
    events_.poll()
    store.delete("incoming/a")  # ingested
    events_.poll()
    store.put("incoming/a", b"y")
    events_.poll()
    assert invoke.keys == ["incoming/a", "incoming/a"]


def test_schedules_run_at_their_rate(store, monkeypatch) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    clock = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: clock[0])
    events_._next_run[("IngestFunction", 900.0)] = clock[0] + 900
    events_._run_schedules()
    assert invoke.calls == []
    clock[0] += 900
    events_._run_schedules()
    assert [e["detail-type"] for _, e in invoke.calls] == ["Scheduled Event"]


def test_the_thread_delivers_and_stops(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    events_.start()
    try:
        store.put("incoming/a", b"x")
        events_.created("incoming/a")
        deadline = time.monotonic() + 5
        while not invoke.calls:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        events_.stop()
    assert invoke.keys == ["incoming/a"]


def test_an_idle_stack_polls_less_and_a_request_wakes_it(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    events_.start()
    try:
        deadline = time.monotonic() + 10
        while events_._interval < events.IDLE_POLL_S:
            assert time.monotonic() < deadline, "the poll never backed off"
            time.sleep(0.05)
        events_.wake()
        assert events_._interval == events.POLL_S
    finally:
        events_.stop()


def test_stream_readers_are_invoked_after_a_change_and_when_idle(store) -> None:
    """A table's stream, locally: the FeedFunction (a ``DynamoDB`` event in the template)
    gets an empty batch soon after ``changed()`` (an API request) and every 2 s otherwise,
    and reads the change feed itself."""
    invoke = Recorder()
    events_ = source(store, invoke)
    assert events_.stream_readers == ["FeedFunction"]
    events_.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(f == "FeedFunction" for f, _ in invoke.calls):
                break
            time.sleep(0.05)
    finally:
        events_.stop()
    assert ("FeedFunction", events.stream_event()) in invoke.calls
    assert events.stream_event() == {"Records": []}


def test_a_change_runs_the_stream_readers_at_once_coalesced(store) -> None:
    invoke = Recorder()
    events_ = source(store, invoke)
    events_.start()
    try:
        time.sleep(0.2)
        before = len(invoke.calls)
        started = time.monotonic()
        for _ in range(20):
            events_.changed()  # twenty requests in a burst: one or two runs
        while len(invoke.calls) == before and time.monotonic() - started < 5:
            time.sleep(0.005)
        took = time.monotonic() - started
        time.sleep(0.3)
    finally:
        events_.stop()
    assert took < 1.0  # not the idle 2 s
    assert 1 <= len(invoke.calls) - before <= 3


def test_in_a_shared_process_the_stream_readers_run_only_when_asked(store) -> None:
    """Where the stack shares the process's environment, no thread of its own invokes the
    stream's readers or their schedule: the API request runs them at its end."""
    invoke = Recorder()
    events_ = events.EventSource(template.load(), store, invoke, "bucket", background_streams=False)
    events_._next_run = {("FeedFunction", 60.0): 0.0}
    events_._run_schedules()
    assert invoke.calls == []
    events_.run_streams_now()
    assert invoke.calls == [("FeedFunction", events.stream_event())]


def test_a_commit_seen_in_the_watched_files_runs_the_stream_readers(store, tmp_path) -> None:
    """Forked workers commit where this process does not see the requests: the index
    file's change is the signal."""
    index = tmp_path / "index.sqlite3"
    index.write_bytes(b"x")
    invoke = Recorder()
    events_ = events.EventSource(template.load(), store, invoke, "bucket", watch=(index,))
    events_.start()
    try:
        time.sleep(0.3)
        before = len(invoke.calls)
        index.write_bytes(b"xy")
        started = time.monotonic()
        while len(invoke.calls) == before and time.monotonic() - started < 5:
            time.sleep(0.005)
        took = time.monotonic() - started
    finally:
        events_.stop()
    assert took < 1.0
