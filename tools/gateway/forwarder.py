"""Forward the spool to the archive with the importer's sending code (same batching, upload
path and retries). Runs in a thread; a restart picks up whatever is left in the spool.

Each calling AE's folder is forwarded on its own: when the archive refuses an AE as a whole
(a key that may not store as that AE, a wrong URL) or anything raises while one folder is
sent, that folder stays spooled, is reported as stalled and is tried again after a delay
that doubles up to :data:`BACKOFF_CAP`; the other folders go on being forwarded."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tools.gateway.spool import Spool
from tools.importer.journal import Journal
from tools.importer.run import send_entries
from tools.importer.scan import scan
from tools.importer.sender import DUPLICATE, FAILED, SKIPPED, STORED, Fatal, Outcome, Sender
from tools.importer.walk import Item

log = logging.getLogger("dicomweb-gateway")
BACKOFF_CAP = 300.0


class Forwarder(threading.Thread):
    """Sends what the spool holds, calling AE by calling AE, until :meth:`stop`."""

    def __init__(  # noqa: PLR0913 - the settings are keyword-only
        self,
        spool: Spool,
        sender_for: Callable[[str], Sender],
        *,
        workers: int = 4,
        linger: float = 0.2,
        retry_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="forwarder", daemon=True)
        self.spool = spool
        self.sender_for = sender_for
        self.workers = workers
        self.linger = linger  # wait this long after a wake-up, to batch what follows
        self.retry_every = retry_every
        self._wake = threading.Event()
        self._halt = threading.Event()
        self.clock = clock
        self.forwarded = 0
        self.refused = 0
        self.stalled: dict[str, str] = {}  # calling AE -> why its folder is not forwarded
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}

    def wake(self) -> None:
        """Something was spooled: forward soon."""
        self._wake.set()

    def stop(self) -> None:
        """End after the current pass."""
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        """Forward on every wake-up, and every ``retry_every`` seconds anyway."""
        while not self._halt.is_set():
            self._wake.wait(self.retry_every)
            if self._halt.is_set():
                return
            self._halt.wait(self.linger)
            self._wake.clear()
            try:
                self.forward_once()
            except Exception:
                log.exception("forwarding failed; the spool is kept and retried")

    def forward_once(self) -> int:
        """One pass over the spool; returns how many files are still waiting."""
        waiting = 0
        for aet, paths in self.spool.pending().items():
            if self._not_before.get(aet, 0.0) > self.clock():
                waiting += len(paths)
                continue
            try:
                waiting += self._forward(aet, paths)
            except Fatal as exc:
                self._stall(aet, str(exc), len(paths))
                waiting += len(paths)
            except Exception as exc:  # one folder's failure is its own
                log.exception("forwarding the files of %s raised", aet)
                self._stall(aet, f"{type(exc).__name__} while forwarding", len(paths))
                waiting += len(paths)
            else:
                self._failures.pop(aet, None)
                self._not_before.pop(aet, None)
                self.stalled.pop(aet, None)
        return waiting

    def _forward(self, aet: str, paths: list[Path]) -> int:
        """Send one calling AE's files; returns how many stay for a later try."""
        entries = [scan(Item(str(path), path.stat().st_size, path)) for path in paths]
        by_source = {str(p): p for p in paths}
        kept: list[Path] = []

        def handle(outcome: Outcome) -> None:
            path = by_source[outcome.source]
            if self._settle(path, outcome):
                kept.append(path)

        send_entries(
            entries,
            self.sender_for(aet),
            Journal(None),
            workers=self.workers,
            check_archive=False,
            on_outcome=handle,
        )
        return len(kept)

    def _stall(self, aet: str, reason: str, count: int) -> None:
        """Keep ``aet``'s files and try them again later, each time twice as late."""
        failures = self._failures.get(aet, 0) + 1
        self._failures[aet] = failures
        delay = min(BACKOFF_CAP, self.retry_every * 2 ** (failures - 1))
        self._not_before[aet] = self.clock() + delay
        self.stalled[aet] = reason
        log.error(
            "cannot forward for calling AE %s: %s; %d files kept, next try in %.0f s",
            aet,
            reason,
            count,
            delay,
        )

    def _settle(self, path: Path, outcome: Outcome) -> bool:
        """Clear the file from the spool unless the failure may pass; True if it is kept."""
        if outcome.status in {STORED, DUPLICATE, SKIPPED}:
            self.spool.done(path)
            self.forwarded += 1
            return False
        if outcome.status == FAILED and not outcome.transient:
            self.spool.fail(path, outcome.as_json())
            self.refused += 1
            log.warning("refused by the archive: %s (%s)", path.name, outcome.reason)
            return False
        log.info("kept for a later try: %s (%s)", path.name, outcome.reason)
        return True
