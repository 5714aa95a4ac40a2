"""Forward the spool to the archive with the importer's sending code (same batching, upload
path and retries). Runs in a thread; a restart picks up whatever is left in the spool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from tools.gateway.spool import Spool
from tools.importer.journal import Journal
from tools.importer.run import send_entries
from tools.importer.scan import scan
from tools.importer.sender import DUPLICATE, FAILED, SKIPPED, STORED, Fatal, Outcome, Sender
from tools.importer.walk import Item

log = logging.getLogger("dicomweb-gateway")


class Forwarder(threading.Thread):
    """Sends what the spool holds, calling AE by calling AE, until :meth:`stop`."""

    def __init__(
        self,
        spool: Spool,
        sender_for: Callable[[str], Sender],
        *,
        workers: int = 4,
        linger: float = 0.2,
        retry_every: float = 5.0,
    ) -> None:
        super().__init__(name="forwarder", daemon=True)
        self.spool = spool
        self.sender_for = sender_for
        self.workers = workers
        self.linger = linger  # wait this long after a wake-up, to batch what follows
        self.retry_every = retry_every
        self._wake = threading.Event()
        self._halt = threading.Event()
        self.forwarded = 0
        self.refused = 0

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
            entries = [scan(Item(str(path), path.stat().st_size, path)) for path in paths]
            kept: list[Path] = []

            def handle(
                outcome: Outcome,
                by_source: dict[str, Path] = {str(p): p for p in paths},  # noqa: B006
                kept: list[Path] = kept,
            ) -> None:
                path = by_source[outcome.source]
                if self._settle(path, outcome):
                    kept.append(path)

            try:
                send_entries(
                    entries,
                    self.sender_for(aet),
                    Journal(None),
                    workers=self.workers,
                    check_archive=False,
                    on_outcome=handle,
                )
            except Fatal as exc:
                log.error("the archive cannot be used: %s; %d files kept", exc, len(paths))
                return sum(len(p) for p in self.spool.pending().values())
            waiting += len(kept)
        return waiting

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
