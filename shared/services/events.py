"""Events from the change feed: one per feed entry, and ``StudyStable`` when a study has had
no change for a quiet period (issue 23; docs/decisions/0008-change-feed.md).

The :class:`Publisher` (run by the FeedFunction after commits and every minute) reads the
feed from its cursor, puts one event per entry on the bus, and remembers each study's last
change; a study quiet for ``stable_s`` seconds gets a ``StudyStable`` event with
its counts of series and instances. Its state (the cursor and the studies waiting to be
stable) is one small JSON object in the bucket (``events/state.json``), written after the
events were put: a crash in between puts them again (at least once; each event's ``id`` is
the same every time, for consumers to drop a repeat), and never loses one. Runs that overlap
(the stream and the schedule) only put some events twice: each run's state is what it read
of the feed, and a cursor saved behind another's makes the next run read again.

The quiet period counts from the change's own ``Timestamp`` (the index's clock), so a
replay of old history finds its studies stable at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.ports import Catalog, EventBus, InstanceIndex, ObjectStore
from shared.services import changefeed
from shared.services.changefeed import FeedRequest

logger = logging.getLogger(__name__)

SOURCE = "o3-dpacs"
CHANGE = "DICOM Change"
STUDY_STABLE = "StudyStable"
STATE_KEY = "events/state.json"
#: Feed entries read per page (the feed's own maximum).
PAGE = changefeed.MAX_LIMIT
#: Studies announced stable per run at most (each needs its counts read).
MAX_STABLE_PER_RUN = 1000


def change_event(entry: dict[str, Any]) -> dict[str, Any]:
    """The event of one feed entry (its fields, without Metadata)."""
    detail = {k: v for k, v in entry.items() if k != "Metadata"}
    return _event(f"change-{entry['Sequence']}", CHANGE, entry.get("Timestamp", ""), detail)


def stable_event(study_uid: str, last: Waiting, series: int, instances: int) -> dict[str, Any]:
    """The ``StudyStable`` event of a study quiet since ``last``."""
    detail = {
        "StudyInstanceUID": study_uid,
        "Sequence": last.sequence,
        "LastChange": last.timestamp,
        "NumberOfStudyRelatedSeries": series,
        "NumberOfStudyRelatedInstances": instances,
    }
    return _event(f"stable-{study_uid}-{last.sequence}", STUDY_STABLE, _now_iso(), detail)


def _event(event_id: str, detail_type: str, time: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "source": SOURCE,
        "detail-type": detail_type,
        "time": time,
        "detail": detail,
    }


@dataclass(frozen=True)
class Waiting:
    """A study's last change seen: its Sequence and Timestamp."""

    sequence: int
    timestamp: str


@dataclass
class StableStudies:
    """Studies changed and not yet announced stable, each with its last change."""

    waiting: dict[str, Waiting] = field(default_factory=dict)

    def saw(self, entry: dict[str, Any]) -> None:
        """A feed entry: its study's quiet period starts again."""
        self.waiting[entry["StudyInstanceUID"]] = Waiting(entry["Sequence"], entry["Timestamp"])

    def due(self, now: datetime, stable_s: float) -> list[str]:
        """Studies whose last change is at least ``stable_s`` seconds before ``now``, the
        longest quiet first."""
        quiet = [
            (when, study)
            for study, last in self.waiting.items()
            if (when := _parse_time(last.timestamp, now)) is not None
            and (now - when).total_seconds() >= stable_s
        ]
        return [study for _, study in sorted(quiet)]

    def to_json(self) -> dict[str, list[Any]]:
        return {s: [w.sequence, w.timestamp] for s, w in self.waiting.items()}

    @classmethod
    def from_json(cls, value: dict[str, list[Any]]) -> StableStudies:
        return cls({s: Waiting(int(v[0]), str(v[1])) for s, v in value.items()})


@dataclass
class PublisherState:
    """The last Sequence put on the bus and the studies waiting to be stable."""

    sequence: int = 0
    studies: StableStudies = field(default_factory=StableStudies)

    def to_bytes(self) -> bytes:
        return json.dumps({"sequence": self.sequence, "studies": self.studies.to_json()}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PublisherState:
        value = json.loads(data)
        return cls(int(value["sequence"]), StableStudies.from_json(value.get("studies", {})))


@dataclass(frozen=True)
class Published:
    """What one run put: change events, StudyStable events, and the cursor after them."""

    changes: int
    stable: int
    sequence: int


@dataclass
class Publisher:
    """Puts the feed's events on the bus (:meth:`run`), its state in the object store."""

    index: InstanceIndex
    catalog: Catalog
    store: ObjectStore
    bus: EventBus
    stable_s: float
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def run(self, out_of_time: Callable[[], bool] = lambda: False) -> Published:
        """Put the events of the feed entries after the stored cursor, then those of the
        studies now stable; the state is saved after each batch put."""
        state = load_state(self.store)
        changes = 0
        while not out_of_time():
            request = FeedRequest(state.sequence, PAGE, False)
            page = changefeed.read(self.index, self.catalog, request).entries
            if not page:
                break
            self.bus.put([change_event(entry) for entry in page])
            for entry in page:
                state.studies.saw(entry)
            state.sequence = page[-1]["Sequence"]
            changes += len(page)
            save_state(self.store, state)
        return Published(changes, self._announce_stable(state), state.sequence)

    def _announce_stable(self, state: PublisherState) -> int:
        due = state.studies.due(self.now(), self.stable_s)[:MAX_STABLE_PER_RUN]
        if not due:
            return 0
        rows = {row.study_uid: row for row in self.catalog.studies_by_uid(due)}
        events = [
            stable_event(study, state.studies.waiting[study], row.n_series, row.n_instances)
            for study in due
            if (row := rows.get(study)) is not None  # else deleted: its deletes said so
        ]
        if events:
            self.bus.put(events)
        for study in due:
            del state.studies.waiting[study]
        save_state(self.store, state)
        return len(events)


def load_state(store: ObjectStore) -> PublisherState:
    """The publisher's state (a fresh one before the first run)."""
    data = store.read(STATE_KEY)
    return PublisherState() if data is None else PublisherState.from_bytes(data)


def save_state(store: ObjectStore, state: PublisherState) -> None:
    store.put(STATE_KEY, state.to_bytes())


def _parse_time(text: str, fallback: datetime) -> datetime | None:
    """A Timestamp as an aware datetime; ``fallback`` when it cannot be read."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return fallback
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
