"""One import: walk, read the UIDs, skip what the archive has, send the rest in parallel."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from tools.importer.journal import Journal
from tools.importer.report import Report
from tools.importer.scan import Entry, scan
from tools.importer.sender import DUPLICATE, FAILED, SKIPPED, STORED, Fatal, Outcome, Sender
from tools.importer.walk import Item, Note, walk

Progress = Callable[[Outcome], None]


def import_paths(  # noqa: PLR0913 - the run's settings, all keyword-only
    paths: list[Path],
    sender: Sender,
    journal: Journal,
    *,
    workers: int = 4,
    check_archive: bool = True,
    progress: bool = False,
) -> Report:
    """Import every Part 10 file under ``paths``; the report says what became of each."""
    started = time.monotonic()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="dicomweb-import-") as scratch:
        items: list[Item] = []
        for found in walk(paths, Path(scratch)):
            if isinstance(found, Item):
                items.append(found)
            else:
                report.notes.append(found)
        entries = [scan(item) for item in items]
        with _bar(entries, progress) as update:
            try:
                send_entries(
                    entries,
                    sender,
                    journal,
                    workers=workers,
                    check_archive=check_archive,
                    on_outcome=lambda outcome: _keep(report, update, outcome),
                    on_note=report.notes.append,
                )
            except Fatal as exc:
                report.aborted = str(exc)
                done = {o.source for o in report.outcomes}
                report.outcomes += [
                    Outcome(
                        e.item.source, FAILED, e.sop_instance_uid, e.size, "not sent: " + str(exc)
                    )
                    for e in entries
                    if e.item.source not in done
                ]
    report.elapsed_s = time.monotonic() - started
    return report


def _keep(report: Report, update: Progress, outcome: Outcome) -> None:
    report.outcomes.append(outcome)
    update(outcome)


def send_entries(  # noqa: PLR0913 - the run's settings, all keyword-only
    entries: list[Entry],
    sender: Sender,
    journal: Journal,
    *,
    workers: int,
    check_archive: bool,
    on_outcome: Progress,
    on_note: Callable[[Note], None] | None = None,
) -> None:
    """Send ``entries`` (skipping those the journal or the archive already holds); every
    entry gets exactly one outcome through ``on_outcome``. Raises :class:`Fatal`."""
    todo = _unknown(
        entries,
        sender,
        journal,
        check_archive=check_archive,
        on_outcome=on_outcome,
        on_note=on_note,
    )
    confirmed: set[str] = set()  # UIDs this run saw stored

    def settle(outcome: Outcome) -> None:
        if outcome.status == STORED and outcome.sop_instance_uid in confirmed:
            outcome = replace(
                outcome, status=DUPLICATE, reason="same instance as another file of this import"
            )
        if outcome.status in {STORED, DUPLICATE}:
            confirmed.add(outcome.sop_instance_uid)
            journal.record(outcome.sop_instance_uid, outcome.status)
        on_outcome(outcome)

    for wave in _waves(todo):
        _send_wave(wave, sender, workers=workers, on_outcome=settle)


def _unknown(  # noqa: PLR0913
    entries: list[Entry],
    sender: Sender,
    journal: Journal,
    *,
    check_archive: bool,
    on_outcome: Progress,
    on_note: Callable[[Note], None] | None,
) -> list[Entry]:
    """The entries neither the journal nor (when asked) the archive knows; the others get
    their "skipped" outcome."""
    todo = []
    for entry in entries:
        if entry.sop_instance_uid and entry.sop_instance_uid in journal:
            on_outcome(_skipped(entry, "already stored (local journal)"))
        else:
            todo.append(entry)
    if not check_archive or not todo:
        return todo
    held, problem = sender.stored_uids(e.sop_instance_uid for e in todo if e.sop_instance_uid)
    if problem and on_note is not None:
        on_note(Note(sender.base_url, f"not checked which instances are stored: {problem}"))
    remaining = []
    for entry in todo:
        if entry.sop_instance_uid in held:
            journal.record(entry.sop_instance_uid, SKIPPED)
            on_outcome(_skipped(entry, "already stored (QIDO-RS)"))
        else:
            remaining.append(entry)
    return remaining


def _waves(entries: list[Entry]) -> list[list[Entry]]:
    """The first file of each SOP Instance UID, then the second ones, and so on: two files of
    one instance never travel at the same time, and a later one is known to be a repeat."""
    waves: list[list[Entry]] = []
    seen: dict[str, int] = {}
    for entry in entries:
        uid = entry.sop_instance_uid
        index = seen.get(uid, 0) if uid else 0
        if uid:
            seen[uid] = index + 1
        while len(waves) <= index:
            waves.append([])
        waves[index].append(entry)
    return waves


def _send_wave(wave: list[Entry], sender: Sender, *, workers: int, on_outcome: Progress) -> None:
    jobs = sender.plan(wave)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="import") as pool:
        pending: set[Future[list[Outcome]]] = {pool.submit(sender.run, job) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for outcome in future.result():
                        on_outcome(outcome)
        except Fatal:
            for future in pending:
                future.cancel()
            raise


def _skipped(entry: Entry, reason: str) -> Outcome:
    return Outcome(entry.item.source, SKIPPED, entry.sop_instance_uid, entry.size, reason)


@contextmanager
def _bar(entries: list[Entry], enabled: bool) -> Iterator[Progress]:
    """A progress bar on stderr (files, MB, rate, ETA), or nothing."""
    if not enabled:
        yield lambda _outcome: None
        return
    total_files = len(entries)
    with tqdm(
        total=sum(e.size for e in entries),
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        file=sys.stderr,
        desc="import",
        dynamic_ncols=True,
    ) as bar:
        count = 0

        def update(outcome: Outcome) -> None:
            nonlocal count
            count += 1
            bar.set_postfix_str(f"{count}/{total_files} files", refresh=False)
            bar.update(outcome.size)

        yield update
