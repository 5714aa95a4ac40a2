"""The change feed (issue 23): how fast it reads, what it costs a STOW, how soon its events
follow a commit.

* **read**: 100,000 entries (``--feed-entries``) written by ``SqliteIndex.add`` (the STOW
  path's index write), then read through ``changefeed.read`` (the QIDO function's code:
  entries, State from the catalog) 100 at a time, with and without Metadata; entries/s.
* **DynamoDB numbering** (moto, in-process): entries/s the sequencer numbers and reads
  (moto's speed, not DynamoDB's: the count of calls per page is what carries over).
* **STOW overhead**: ``SqliteIndex.add`` per instance with the change log row (as shipped)
  against the same write without it (the row's ``_log`` replaced by nothing, for this
  measure only); then STOW-RS over HTTP on the local stack with a follower polling the feed
  every 0.2 s against none. Medians of rounds, ratios.
* **commit to event** (local stack): STOW-RS one instance at a time; time from the STOW's
  answer to its event's line in ``events.jsonl`` (the FeedFunction, on the stream's poll);
  p50 and p95.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared.adapters import sqlite_index
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.multipart import build_related, new_boundary
from shared.ports import AddOutcome, InstanceRecord
from shared.services import changefeed
from shared.services.changefeed import FeedRequest
from shared.services.store import _record
from tests.support import dicom_files

ENTRIES = 100_000
SOURCE = "CT_small.dcm"
ROUNDS = 5


def _records(n: int, per_study: int = 50) -> Iterator[InstanceRecord]:
    """``n`` index records of a real instance, with fresh UIDs (``per_study`` a study)."""
    base = _record(validate(dicom_files.with_new_uids(SOURCE)), "BENCH", datetime.now(UTC))
    root = "1.2.826.0.1.3680043.8.498.23"
    for i in range(n):
        study = f"{root}.{i // per_study}"
        sop = f"{study}.1.{i}"
        yield dataclasses.replace(
            base,
            study_uid=study,
            series_uid=f"{study}.1",
            sop_instance_uid=sop,
            blob_key=f"dicom/{study}/{study}.1/{sop}.{base.sha256}.dcm",
        )


def _fill(path: Path, n: int) -> float:
    index = SqliteIndex(path)
    started = time.perf_counter()
    for record in _records(n):
        if index.add(record) is not AddOutcome.STORED:
            raise RuntimeError("an instance was not stored")
    return time.perf_counter() - started


def _read_all(path: Path, metadata: bool) -> tuple[int, float]:
    index, catalog = SqliteIndex(path), SqliteCatalog(path)
    started, offset, read = time.perf_counter(), 0, 0
    while True:
        entries = changefeed.read(index, catalog, FeedRequest(offset, 100, metadata)).entries
        if not entries:
            break
        read += len(entries)
        offset = entries[-1]["Sequence"]
    return read, time.perf_counter() - started


def read_rate(entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.sqlite3"
        fill_s = _fill(path, entries)
        out: dict[str, Any] = {"entries": entries, "fill_s": round(fill_s, 1)}
        for metadata in (False, True):
            read, seconds = _read_all(path, metadata)
            if read != entries:
                raise RuntimeError(f"read {read} entries of {entries}")
            name = "with_metadata" if metadata else "without_metadata"
            out[f"{name}_entries_per_s"] = round(read / seconds)
        return out


def dynamodb_numbering(entries: int = 300) -> dict[str, Any]:
    """The sequencer on moto: entries numbered and read per second, calls per page (moto
    copies the table for each transaction: its rate says nothing of DynamoDB's)."""
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared.adapters.dynamo_index import DynamoInstanceIndex
    from shared.ports import Change

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = local_template.load().tables["IndexTable"]
        client.create_table(TableName="bench-feed", **table.create_args)
        writer = DynamoInstanceIndex(client, "bench-feed")
        for n in range(entries):
            study = f"1.2.3.{n % 40}"
            change = Change("add", study, f"{study}.1", f"{study}.1.{n}", "k", at="t")
            client.transact_write_items(TransactItems=writer._log_items(change))
        calls = {"n": 0}
        client.meta.events.register(
            "before-call.dynamodb.*", lambda **_: calls.__setitem__("n", calls["n"] + 1)
        )
        reader = DynamoInstanceIndex(client, "bench-feed")
        started, cursor, read, pages = time.perf_counter(), "", 0, 0
        while page := reader.changes(cursor, 100).changes:
            read += len(page)
            pages += 1
            cursor = page[-1].position
        seconds = time.perf_counter() - started
        if read != entries:
            raise RuntimeError(f"read {read} entries of {entries}")
        return {
            "entries": entries,
            "entries_per_s_moto": round(read / seconds),
            "calls_per_page_of_100": round(calls["n"] / pages, 1),
        }


@contextmanager
def _without_change_log() -> Iterator[None]:
    original = sqlite_index._log
    sqlite_index._log = lambda c, change: None  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite_index._log = original


def index_overhead(n: int = 2000) -> dict[str, Any]:
    """Median per-instance ``SqliteIndex.add`` with and without the change log row."""
    times: dict[str, list[float]] = {"with_log": [], "without_log": []}
    for _ in range(ROUNDS):
        for name in ("with_log", "without_log"):
            with tempfile.TemporaryDirectory() as tmp:
                if name == "without_log":
                    with _without_change_log():
                        seconds = _fill(Path(tmp) / "i.sqlite3", n)
                else:
                    seconds = _fill(Path(tmp) / "i.sqlite3", n)
            times[name].append(seconds / n * 1000)
    with_log = statistics.median(times["with_log"])
    without = statistics.median(times["without_log"])
    return {
        "instances": n,
        "rounds": ROUNDS,
        "add_ms_with_log": round(with_log, 3),
        "add_ms_without_log": round(without, 3),
        "ratio": round(with_log / without, 3),
    }


def _stow(base: str, key: str, data: bytes) -> None:
    boundary = new_boundary()
    answer = requests.post(
        f"{base}/stowRsListener/BENCH/studies",
        data=build_related([(data, "application/dicom")], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Authorization": key,
        },
        timeout=60,
    )
    answer.raise_for_status()


def _stow_rate(base: str, key: str, datas: list[bytes]) -> float:
    started = time.perf_counter()
    for data in datas:
        _stow(base, key, data)
    return len(datas) / (time.perf_counter() - started)


def http_overhead(instances: int = 60) -> dict[str, Any]:
    """STOW-RS instances/s on the local stack (SQLite, in this process): without the change
    log row, as shipped, and as shipped with a follower polling the feed every 0.2 s; the
    variants alternate each round; medians."""
    from local.stack import LocalStack

    rates: dict[str, list[float]] = {"without_log": [], "shipped": [], "with_follower": []}
    with tempfile.TemporaryDirectory() as tmp, LocalStack(port=0, data_dir=Path(tmp)) as stack:
        base, key = stack.base_url, stack.api_key
        _stow_rate(base, key, [dicom_files.with_new_uids(SOURCE) for _ in range(10)])  # warm
        for _ in range(ROUNDS):
            for name, values in rates.items():
                datas = [dicom_files.with_new_uids(SOURCE) for _ in range(instances)]
                stop = threading.Event()
                poller = threading.Thread(target=_poll_feed, args=(base, key, stop))
                if name == "with_follower":
                    poller.start()
                if name == "without_log":
                    with _without_change_log():
                        values.append(_stow_rate(base, key, datas))
                else:
                    values.append(_stow_rate(base, key, datas))
                stop.set()
                if name == "with_follower":
                    poller.join()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "instances_per_round": instances,
        "rounds": ROUNDS,
        **{f"stow_per_s_{name}": round(value, 1) for name, value in medians.items()},
        "ratio_shipped": round(medians["shipped"] / medians["without_log"], 3),
        "ratio_with_follower": round(medians["with_follower"] / medians["without_log"], 3),
    }


def _poll_feed(base: str, key: str, stop: threading.Event) -> None:
    offset = 0
    while not stop.is_set():
        page = requests.get(
            f"{base}/changefeed",
            params={"offset": str(offset), "limit": "100", "includeMetadata": "false"},
            headers={"Authorization": key},
            timeout=60,
        ).json()
        if page:
            offset = page[-1]["Sequence"]
        stop.wait(0.2)


def event_latency(instances: int = 40) -> dict[str, Any]:
    """Seconds from a STOW's answer to its event's line in events.jsonl."""
    from local.stack import LocalStack
    from shared.bootstrap import EVENTS_FILE

    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, LocalStack(port=0, data_dir=Path(tmp)) as stack:
        events_file = stack.data_dir / EVENTS_FILE
        for n in range(1, instances + 1):
            _stow(stack.base_url, stack.api_key, dicom_files.with_new_uids(SOURCE))
            answered = time.perf_counter()
            while not _has_event(events_file, n):
                if time.perf_counter() - answered > 30:
                    raise RuntimeError("no event within 30 s")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - answered)
    latencies.sort()
    return {
        "instances": instances,
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "max_s": round(latencies[-1], 3),
    }


def _has_event(path: Path, sequence: int) -> bool:
    if not path.exists():
        return False
    with path.open("rb") as lines:
        for line in lines:
            event = json.loads(line)
            if event["detail-type"] == "DICOM Change" and event["detail"]["Sequence"] == sequence:
                return True
    return False


def run(entries: int = ENTRIES) -> dict[str, Any]:
    results: dict[str, Any] = {}
    parts: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("read", lambda: read_rate(entries)),
        ("dynamodb_numbering", dynamodb_numbering),
        ("index_overhead", index_overhead),
        ("http_overhead", http_overhead),
        ("event_latency", event_latency),
    )
    for name, part in parts:
        results[name] = part()
        print(f"feed {name}: {json.dumps(results[name])}")
    return results
