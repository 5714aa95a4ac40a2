"""The change feed's events (shared/services/events.py) over the in-memory fakes: one event
per feed entry in order, ``StudyStable`` after the quiet period on a fake clock, and no
event lost when the bus fails or runs overlap (at least once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dicom.validate import validate
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, Change
from shared.services import events
from shared.services.store import _record
from tests.fakes import FakeIndex, FakeObjectStore, FakeSearchCatalog
from tests.support import dicom_files

STUDIES = ("1.2.826.0.1.3680043.8.498.2331", "1.2.826.0.1.3680043.8.498.2332")


class Bus:
    """Keeps what was put; fails on the put numbered in ``fail_on`` (1, 2, ...)."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.puts = 0
        self.fail_on = fail_on or set()

    def put(self, batch: list[dict[str, Any]]) -> None:
        self.puts += 1
        if self.puts in self.fail_on:
            raise StorageUnavailable("the event bus is unavailable")
        self.events += batch

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["detail-type"] == detail_type]


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


def _store(index: FakeIndex, study: str, series: str = "") -> str:
    data = dicom_files.with_new_uids(study=study, series=series or f"{study}.1", patient_id="P")
    record = _record(validate(data), "AE1", datetime.now(UTC))
    assert index.add(record) is AddOutcome.STORED
    return record.sop_instance_uid


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex()


def _publisher(
    index: FakeIndex, bus: Bus, store: FakeObjectStore | None = None, clock: Clock | None = None
) -> events.Publisher:
    return events.Publisher(
        index=index,
        catalog=FakeSearchCatalog(index),
        store=store if store is not None else FakeObjectStore(),
        bus=bus,
        stable_s=300,
        now=clock or Clock(),
    )


def test_one_event_per_entry_in_order_then_nothing_twice(index: FakeIndex) -> None:
    sops = [_store(index, STUDIES[n % 2]) for n in range(5)]
    bus, store = Bus(), FakeObjectStore()
    published = _publisher(index, bus, store).run()
    assert (published.changes, published.sequence) == (5, 5)
    changes = bus.of(events.CHANGE)
    assert [e["detail"]["SOPInstanceUID"] for e in changes] == sops
    assert [e["id"] for e in changes] == [f"change-{n}" for n in range(1, 6)]
    assert {e["detail"]["Action"] for e in changes} == {"create"}
    assert all("Metadata" not in e["detail"] for e in changes)
    assert events.load_state(store).sequence == 5
    assert _publisher(index, bus, store).run().changes == 0
    assert len(bus.of(events.CHANGE)) == 5


def test_study_stable_after_the_quiet_period_on_a_fake_clock(index: FakeIndex) -> None:
    clock, bus, store = Clock(), Bus(), FakeObjectStore()
    _store(index, STUDIES[0], f"{STUDIES[0]}.1")
    _store(index, STUDIES[0], f"{STUDIES[0]}.2")
    _store(index, STUDIES[0], f"{STUDIES[0]}.2")
    publisher = _publisher(index, bus, store, clock)
    clock.at = datetime.now(UTC) + timedelta(seconds=290)
    assert publisher.run().stable == 0
    clock.at += timedelta(seconds=11)
    assert publisher.run().stable == 1
    (stable,) = bus.of(events.STUDY_STABLE)
    assert stable["detail"]["StudyInstanceUID"] == STUDIES[0]
    assert stable["detail"]["NumberOfStudyRelatedSeries"] == 2
    assert stable["detail"]["NumberOfStudyRelatedInstances"] == 3
    assert stable["detail"]["Sequence"] == 3
    clock.at += timedelta(seconds=600)
    assert publisher.run().stable == 0  # once per quiet period
    _store(index, STUDIES[0])  # a change: the period starts again
    clock.at = datetime.now(UTC) + timedelta(seconds=100)
    assert publisher.run().stable == 0
    clock.at += timedelta(seconds=300)
    assert publisher.run().stable == 1
    assert [e["detail"]["Sequence"] for e in bus.of(events.STUDY_STABLE)] == [3, 4]


def test_a_replay_of_old_history_finds_its_studies_stable_at_once(index: FakeIndex) -> None:
    clock, bus = Clock(), Bus()
    _store(index, STUDIES[0])
    _store(index, STUDIES[1])
    clock.at = datetime.now(UTC) + timedelta(days=1)
    published = _publisher(index, bus, clock=clock).run()
    assert (published.changes, published.stable) == (2, 2)
    assert [e["detail-type"] for e in bus.events] == [events.CHANGE] * 2 + [events.STUDY_STABLE] * 2


def test_a_deleted_study_is_not_announced_stable(index: FakeIndex) -> None:
    clock, bus = Clock(), Bus()
    _store(index, STUDIES[0])
    index.remove(STUDIES[0])
    clock.at = datetime.now(UTC) + timedelta(seconds=301)
    published = _publisher(index, bus, clock=clock).run()
    assert (published.changes, published.stable) == (2, 0)
    assert [e["detail"]["Action"] for e in bus.events] == ["create", "delete"]


def test_out_of_time_stops_between_pages(index: FakeIndex) -> None:
    for _ in range(3):
        _store(index, STUDIES[0])
    bus = Bus()
    assert _publisher(index, bus).run(out_of_time=lambda: True).changes == 0
    assert bus.events == []


@settings(max_examples=40, deadline=None)
@given(
    entries=st.integers(1, 250),
    failures=st.sets(st.integers(1, 12), max_size=6),
    overlap=st.booleans(),
)
def test_no_event_is_lost_when_the_bus_fails_or_runs_overlap(
    entries: int, failures: set[int], overlap: bool
) -> None:
    """Runs until one puts nothing: every entry's event was put at least once, each first
    put in feed order; with overlap, a second publisher saves a state read before the
    first's runs."""
    index = FakeIndex()
    for n in range(entries):
        index.log.append(_fake_change(n))
    bus, store = Bus(failures), FakeObjectStore()
    clock = Clock()
    clock.at += timedelta(days=1)
    stale = events.load_state(store)
    for _ in range(30):
        try:
            _publisher(index, bus, store, clock).run()
        except StorageUnavailable:
            continue
        if overlap:
            events.save_state(store, stale)  # an older run saving last
            overlap = False
            continue
        break
    firsts: dict[int, int] = {}
    for position, event in enumerate(bus.of(events.CHANGE)):
        firsts.setdefault(event["detail"]["Sequence"], position)
    assert sorted(firsts) == list(range(1, entries + 1))
    assert sorted(firsts, key=firsts.__getitem__) == list(range(1, entries + 1))
    announced = {e["detail"]["StudyInstanceUID"] for e in bus.of(events.STUDY_STABLE)}
    assert announced == set()  # every study's instances were removed


def _fake_change(n: int) -> Change:
    """The log entry numbered ``n + 1`` (removals: no catalog rows needed)."""
    study = STUDIES[n % 2]
    sop = f"{study}.9.{n}"
    return Change(
        "remove", study, f"{study}.1", sop, f"dicom/{n}.dcm", "", _now(), str(n + 1), n + 1
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_state_round_trips(index: FakeIndex) -> None:
    state = events.PublisherState(7, events.StableStudies({"1.2": events.Waiting(7, "t")}))
    again = events.PublisherState.from_bytes(state.to_bytes())
    assert again == state
