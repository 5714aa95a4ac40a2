"""What EventBridge does for the deployed stack: S3 "Object Created" events and schedules.

moto delivers no S3 events and a directory has none, so the local stack raises them itself
for the functions whose template events ask for them (``EventBridgeRule`` on ``aws.s3``
"Object Created" with a key prefix; ``Schedule`` with ``rate(...)``; ``DynamoDB`` streams,
as an empty batch after each API request or ingestion and every 2 s), running the very same
handlers:

* an object written through the local object server (a presigned PUT, a completed multipart
  upload) is announced at once;
* objects that appear any other way (``cp -r folder .local-data/objects/incoming/``, an S3
  tool against moto) are found by listing the prefixes every :data:`POLL_S` seconds while
  the API is in use or objects arrive, backing off to :data:`IDLE_POLL_S` when idle; a file
  on disk is announced once its size and time have stayed the same for one poll (a copy in
  progress is not an object yet);
* a failed invocation is retried on the following polls, :data:`MAX_ATTEMPTS` times in all
  (the rule's retry policy); after that the scheduled sweep finds the object.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.template import REGION, StackTemplate
from shared.ports import ObjectStore

logger = logging.getLogger("local.events")

POLL_S = 0.5
#: The longest wait between polls of an idle stack (doubling from POLL_S).
IDLE_POLL_S = 2.0
#: The shortest time between two runs of a stream's readers: commits in between are read
#: as one batch (DynamoDB's stream batches too).
STREAM_COALESCE_S = 0.1
MAX_ATTEMPTS = 5
Invoke = Callable[[str, dict[str, Any]], Any]


@dataclass
class _Seen:
    signature: tuple[int, float]
    delivered: bool = False
    attempts: int = 0


@dataclass
class EventSource:
    """Raises the template's S3 and schedule events for the local stack, in a thread."""

    template: StackTemplate
    store: ObjectStore
    invoke: Invoke
    bucket: str
    #: Whether objects may appear half-written (a directory): then they must settle first.
    settle: bool = True
    #: Whether the stream's readers run in a thread of their own (and on their schedules):
    #: only where the stack owns the process's environment (``dicomweb-serve``). Elsewhere
    #: (tests, benchmarks) each invocation sets and restores the environment, which another
    #: thread of the process may be reading: the readers then run at the end of each API
    #: request, inside its invocation's environment (:meth:`run_streams_now`).
    background_streams: bool = True
    #: Files whose change means a commit (the SQLite index and its WAL): the stream's
    #: thread looks at them every :data:`STREAM_COALESCE_S`, so that commits made by the
    #: forked workers, whose requests this process does not see, are read at once too.
    watch: tuple[Path, ...] = ()
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _announced: set[str] = field(default_factory=set)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stream_thread: threading.Thread | None = None
    #: The last poll failed: the next failure is logged without its traceback.
    _failing: bool = False
    _changed: threading.Event = field(default_factory=threading.Event)
    _streams_lock: threading.Lock = field(default_factory=threading.Lock)
    _streams_again: bool = False
    _next_run: dict[tuple[str, float], float] = field(default_factory=dict)
    _interval: float = POLL_S
    #: The API was used since the last poll: the polls keep their pace.
    _in_use: bool = False

    @property
    def targets(self) -> list[tuple[str, str]]:
        """(function, key prefix) of every "Object Created" rule."""
        return [
            (function.logical_id, prefix)
            for function in self.template.functions.values()
            for prefix in function.object_created
        ]

    @property
    def stream_readers(self) -> list[str]:
        """Functions that read the index table's stream (``DynamoDB`` events)."""
        return [f.logical_id for f in self.template.functions.values() if f.streams]

    def start(self) -> None:
        """Poll and run schedules in a daemon thread, and the stream's readers in another
        (nothing to do: no thread)."""
        now = time.monotonic()
        for function in self.template.functions.values():
            for period in function.schedules:
                self._next_run[(function.logical_id, period)] = now + period
        if self.stream_readers and self.background_streams:
            self._stream_thread = threading.Thread(
                target=self._run_stream, name="stream", daemon=True
            )
            self._stream_thread.start()
        if not self.targets and not self._next_run:
            return
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the invocation in progress."""
        self._stopping.set()
        self._wake.set()
        self._changed.set()
        for thread in (self._thread, self._stream_thread):
            if thread is not None:
                thread.join(timeout=30)

    def changed(self) -> None:
        """Something may have been committed (an API request, an ingestion): the stream's
        readers run within :data:`STREAM_COALESCE_S`."""
        self._changed.set()

    def created(self, key: str) -> None:
        """An object was written whole (the object server's PUT): announce it now."""
        with self._lock:
            self._announced.add(key)
        self._interval = POLL_S
        self._wake.set()

    def wake(self) -> None:
        """The API is in use (objects may be on their way): poll every :data:`POLL_S`.

        When the polls had slowed down, poll now; while they keep their pace, the next one
        is at most :data:`POLL_S` away, and a request only keeps them from slowing down
        (waking the thread for every request would list the prefixes once per request).
        """
        self._in_use = True
        if self._interval > POLL_S:
            self._interval = POLL_S
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake.wait(self._interval)
            self._wake.clear()
            self._in_use, in_use = False, self._in_use
            if self._stopping.is_set():
                return
            try:
                delivered = self.poll()
                self._run_schedules()
            except Exception as exc:  # a bad poll must not end event delivery
                # The storage failing (moto reset under a test, a directory gone): say so
                # once with its cause, then a line per retry, at the idle pace.
                if self._failing:
                    logger.warning("event delivery still failing: %s", type(exc).__name__)
                else:
                    logger.exception("event delivery failed; retrying on the next poll")
                self._failing = True
                self._interval = IDLE_POLL_S
                continue
            self._failing = False
            pending = any(
                not s.delivered and s.attempts < MAX_ATTEMPTS for s in self._seen.values()
            )
            if not (woken or in_use or delivered or pending):
                self._interval = min(self._interval * 2, IDLE_POLL_S)

    def poll(self) -> int:
        """List the rules' prefixes and deliver what is new; how many were delivered."""
        delivered = 0
        for function, prefix in self.targets:
            present = set()
            for info in self._listing(prefix):
                present.add(info.key)
                if self._due(info.key, (info.size, info.modified)):
                    delivered += self._deliver(function, info.key, info.size)
            for key in [k for k in self._seen if k.startswith(prefix) and k not in present]:
                del self._seen[key]  # ingested and removed: a new object may take the key
        return delivered

    def _listing(self, prefix: str) -> Iterator[Any]:
        return self.store.listing(prefix)

    def _due(self, key: str, signature: tuple[int, float]) -> bool:
        with self._lock:
            announced = key in self._announced
            self._announced.discard(key)
        seen = self._seen.get(key)
        if seen is None or seen.signature != signature:
            self._seen[key] = _Seen(signature)
            return announced or not self.settle
        return not seen.delivered and seen.attempts < MAX_ATTEMPTS

    def _deliver(self, function: str, key: str, size: int) -> int:
        seen = self._seen[key]
        seen.attempts += 1
        try:
            self.invoke(function, self.object_created(key, size))
        except Exception:  # noqa: BLE001 - any handler failure is retried, as EventBridge does
            logger.warning("%s failed on an object (attempt %d)", function, seen.attempts)
            return 0
        seen.delivered = True
        self._changed.set()  # the ingestion committed: the stream has news
        return 1

    def object_created(self, key: str, size: int) -> dict[str, Any]:
        """The EventBridge event S3 sends for a new object."""
        detail = {
            "version": "0",
            "bucket": {"name": self.bucket},
            "object": {"key": key, "size": size},
            "reason": "PutObject",
        }
        return _event("Object Created", "aws.s3", [f"arn:aws:s3:::{self.bucket}"], detail)

    def _run_stream(self) -> None:
        """What a table's stream does for its readers: invoke them after commits (at most
        every :data:`STREAM_COALESCE_S`: commits in between are one batch) and every
        :data:`IDLE_POLL_S` otherwise; they read what was committed since themselves."""
        seen, idle_since = self._watched(), time.monotonic()
        while not self._stopping.is_set():
            self._changed.wait(STREAM_COALESCE_S)
            now = self._watched()
            if not (self._changed.is_set() or now != seen) and (
                time.monotonic() - idle_since < IDLE_POLL_S
            ):
                continue
            self._changed.clear()
            seen, idle_since = now, time.monotonic()
            if self._stopping.is_set():
                return
            self._run_streams()
            self._stopping.wait(STREAM_COALESCE_S)

    def _watched(self) -> tuple[tuple[int, int], ...]:
        found = []
        for path in self.watch:
            try:
                info = path.stat()
            except OSError:
                found.append((0, 0))
            else:
                found.append((info.st_mtime_ns, info.st_size))
        return tuple(found)

    def run_streams_now(self) -> None:
        """Run the stream's readers in this thread (an API request's, at its end); when
        another thread runs them now, it runs them once more instead of this one waiting."""
        self._streams_again = True
        while self._streams_again:
            if not self._streams_lock.acquire(blocking=False):
                return  # the thread running them sees _streams_again and goes round again
            try:
                self._streams_again = False
                self._run_streams()
            finally:
                self._streams_lock.release()

    def _run_streams(self) -> None:
        for function in self.stream_readers:
            try:
                self.invoke(function, stream_event())
            except Exception:
                logger.exception("%s failed on the stream; retrying on the next poll", function)

    def _run_schedules(self) -> None:
        now = time.monotonic()
        for (function, period), due in list(self._next_run.items()):
            if now < due or (function in self.stream_readers and not self.background_streams):
                continue
            self._next_run[(function, period)] = now + period
            try:
                self.invoke(function, scheduled_event())
            except Exception:
                logger.exception("scheduled %s failed", function)


def stream_event() -> dict[str, Any]:
    """A DynamoDB stream batch, without records: a reader of the local stack's stream reads
    the change feed itself (a directory or moto has no stream)."""
    return {"Records": []}


def scheduled_event() -> dict[str, Any]:
    """The event EventBridge Scheduler sends for a ``rate(...)`` schedule."""
    return _event("Scheduled Event", "aws.events", [], {})


def _event(
    detail_type: str, source: str, resources: list[str], detail: dict[str, Any]
) -> dict[str, Any]:
    """An EventBridge event envelope (account and region of the local stack)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }
