"""Follow the archive's change feed: run a command or post a webhook for every change, or for
every study that has become stable, resuming where it stopped.

    dicomweb-follow --url http://127.0.0.1:3000/o3-dpacs-wado --key o3k_... \\
        --on stable --stable-seconds 60 --exec ./on-study.sh
    dicomweb-follow --url ... --key ... --on entry --webhook https://ris.example/hooks/dicom \\
        --webhook-secret-file hook.secret

Each handled event is one JSON object, the shape of the archive's own events
(docs/events.md): ``detail-type`` ``DICOM Change`` (the feed entry in ``detail``) or
``StudyStable`` (the study, its last change, its counts of series and instances). A command
gets it on its standard input and as ``DICOM_*`` environment variables (``DICOM_EVENT``,
``DICOM_SEQUENCE``, ``DICOM_ACTION``, ``DICOM_STUDY_UID``, ``DICOM_SERIES_UID``,
``DICOM_SOP_UID``, ``DICOM_SERIES_COUNT``, ``DICOM_INSTANCE_COUNT``); a webhook gets it as
the body of a POST, signed with HMAC-SHA256 of the body (``X-O3-Signature: sha256=<hex>``)
when a secret is given. A command that exits non-zero, or a webhook answering other than 2xx,
is tried again with backoff (``--attempts``); then the follower exits 1 *without* moving its
cursor, so the next start tries the same event again.

The cursor (``--cursor``, a JSON file: the last Sequence handled and the studies waiting to
be stable) is written atomically after each event: after a crash or kill, the follower
resumes at the first event not known handled, which it may hand over a second time (at
least once; each event has an ``id`` to drop a repeat by). ``--from-start`` replays the feed
from its first entry. A study is stable once its last change is ``--stable-seconds`` old
(the change's Timestamp against this machine's clock: a replay finds old studies stable at
once); a study deleted meanwhile is not announced. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.services.events import StableStudies, change_event, stable_event

logger = logging.getLogger("dicomweb-follow")

TIMEOUT_S = 60.0
PAGE = 100
#: DICOM JSON tags of the study's counts (QIDO-RS attributes).
SERIES_COUNT, INSTANCE_COUNT = "00201206", "00201208"

#: An event handed to the user's command or webhook; raises :class:`HandlerFailed`.
Handler = Callable[[dict[str, Any]], None]


class HandlerFailed(Exception):
    """The command or webhook refused the event (it is tried again)."""


class FeedError(Exception):
    """The archive refused or could not answer a request (a message for the user)."""


# ------------------------------------------------------------------ the cursor


@dataclass
class Cursor:
    """The last Sequence handled and the studies waiting to be stable, in a JSON file."""

    path: Path
    sequence: int = 0
    studies: StableStudies = field(default_factory=StableStudies)

    @classmethod
    def load(cls, path: Path, from_start: bool = False) -> Cursor:
        if from_start or not path.exists():
            return cls(path)
        value = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, int(value["sequence"]), StableStudies.from_json(value.get("studies", {})))

    def save(self) -> None:
        """Write it whole or not at all (a temporary file, fsync, rename)."""
        data = json.dumps({"sequence": self.sequence, "studies": self.studies.to_json()})
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)


# ------------------------------------------------------------------ the archive


@dataclass(frozen=True)
class Archive:
    """The archive's API: the change feed and study counts (QIDO-RS)."""

    url: str
    key: str
    timeout: float = TIMEOUT_S

    def feed(self, offset: int, limit: int = PAGE) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(
            {"offset": offset, "limit": limit, "includeMetadata": "false"}
        )
        entries: list[dict[str, Any]] = self._get(f"/changefeed?{query}") or []
        return entries

    def counts(self, study_uid: str) -> tuple[int, int] | None:
        """(series, instances) of a study; None when the archive holds it no more."""
        query = urllib.parse.urlencode(
            {"StudyInstanceUID": study_uid, "includefield": f"{SERIES_COUNT},{INSTANCE_COUNT}"}
        )
        found = self._get(f"/rs/studies?{query}") or []
        if not found:
            return None
        study = found[0]
        return _count(study, SERIES_COUNT), _count(study, INSTANCE_COUNT)

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the user's archive URL
            self.url.rstrip("/") + path,
            headers={"Authorization": self.key, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
                body = reply.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 204:
                return None
            route = path.split("?", maxsplit=1)[0]
            raise FeedError(f"the archive answered {exc.code} to GET {route}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise FeedError(f"the archive cannot be reached: {exc}") from exc
        return json.loads(body) if body.strip() else None


def _count(study: dict[str, Any], tag: str) -> int:
    values = (study.get(tag) or {}).get("Value") or [0]
    return int(values[0])


# ------------------------------------------------------------------ handlers


def command_handler(command: str, timeout: float = 3600.0) -> Handler:
    """Run ``command`` (split as a shell would, not run by one) with the event on stdin."""
    argv = shlex.split(command)

    def handle(event: dict[str, Any]) -> None:
        try:
            done = subprocess.run(  # noqa: S603 - the user's own command
                argv,
                input=json.dumps(event).encode(),
                env={**os.environ, **event_environment(event)},
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HandlerFailed(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise HandlerFailed(f"{argv[0]} exited {done.returncode}")

    return handle


def webhook_handler(url: str, secret: bytes | None, timeout: float = TIMEOUT_S) -> Handler:
    """POST the event as JSON, signed when a secret is given."""

    def handle(event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-O3-Event-Id": str(event["id"])}
        if secret:
            headers["X-O3-Signature"] = "sha256=" + sign(secret, body)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
                reply.read()
        except urllib.error.HTTPError as exc:
            raise HandlerFailed(f"the webhook answered {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise HandlerFailed(f"the webhook cannot be reached: {exc}") from exc

    return handle


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of a webhook body (what ``X-O3-Signature`` carries)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def event_environment(event: dict[str, Any]) -> dict[str, str]:
    """The event as ``DICOM_*`` environment variables (UIDs, numbers and words only)."""
    detail = event["detail"]
    values = {
        "DICOM_EVENT": event["detail-type"],
        "DICOM_EVENT_ID": event["id"],
        "DICOM_SEQUENCE": detail.get("Sequence", ""),
        "DICOM_ACTION": detail.get("Action", ""),
        "DICOM_STATE": detail.get("State", ""),
        "DICOM_STUDY_UID": detail.get("StudyInstanceUID", ""),
        "DICOM_SERIES_UID": detail.get("SeriesInstanceUID", ""),
        "DICOM_SOP_UID": detail.get("SOPInstanceUID", ""),
        "DICOM_SERIES_COUNT": detail.get("NumberOfStudyRelatedSeries", ""),
        "DICOM_INSTANCE_COUNT": detail.get("NumberOfStudyRelatedInstances", ""),
    }
    return {name: str(value) for name, value in values.items()}


# ------------------------------------------------------------------ the follower


@dataclass
class Follower:
    """Hands each event to ``handle`` once the cursor says it is next; saves the cursor
    after each. ``on``: ``entry`` (every change) or ``stable`` (every stable study)."""

    archive: Archive
    cursor: Cursor
    handle: Handler
    on: str = "entry"
    stable_s: float = 300.0
    attempts: int = 5
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep

    def step(self) -> int:
        """Read one page of the feed and hand over what is due; events handed over."""
        page = self.archive.feed(self.cursor.sequence)
        handled = 0
        for entry in page:
            if self.on == "entry":
                self._deliver(change_event(entry))
                handled += 1
            else:
                self.cursor.studies.saw(entry)
            self.cursor.sequence = int(entry["Sequence"])
            self.cursor.save()
        if self.on == "stable":
            handled += self._stable()
        return handled if handled else len(page)

    def _stable(self) -> int:
        handled = 0
        for study in self.cursor.studies.due(self.now(), self.stable_s):
            counts = self.archive.counts(study)
            if counts is not None:
                waiting = self.cursor.studies.waiting[study]
                self._deliver(stable_event(study, waiting, *counts))
                handled += 1
            del self.cursor.studies.waiting[study]
            self.cursor.save()
        return handled

    def _deliver(self, event: dict[str, Any]) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.handle(event)
                return
            except HandlerFailed as exc:
                logger.warning("event %s not handled (attempt %d): %s", event["id"], attempt, exc)
                if attempt == self.attempts:
                    raise
                self.sleep(min(60.0, 2.0 ** (attempt - 1)))

    def run(self, poll_s: float, once: bool, stopping: Callable[[], bool]) -> None:
        """Follow until stopped (``once``: until the feed is read to its end; studies
        still waiting to be stable stay in the cursor for the next run)."""
        while not stopping():
            if self.step():
                continue
            if once:
                return
            self.sleep(poll_s)


# ------------------------------------------------------------------ the command


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not args.key:
        print("dicomweb-follow: an API key is needed (--key or DICOMWEB_API_KEY)", file=sys.stderr)
        return 2
    handle = (
        command_handler(args.exec, args.exec_timeout)
        if args.exec
        else webhook_handler(args.webhook, _secret(args.webhook_secret_file))
    )
    follower = Follower(
        archive=Archive(args.url, args.key),
        cursor=Cursor.load(Path(args.cursor), args.from_start),
        handle=handle,
        on=args.on,
        stable_s=args.stable_seconds,
        attempts=args.attempts,
    )
    stop = {"now": False}

    def stopping(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    try:
        follower.run(args.poll, args.once, lambda: stop["now"])
    except (FeedError, HandlerFailed) as exc:
        print(
            f"dicomweb-follow: {exc}; the cursor stays at {follower.cursor.sequence}",
            file=sys.stderr,
        )
        return 1
    return 0


def _secret(path: str | None) -> bytes | None:
    if path:
        return Path(path).read_bytes().strip()
    value = os.environ.get("DICOMWEB_WEBHOOK_SECRET", "")
    return value.encode() if value else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomweb-follow",
        description="Run a command or post a webhook for each change, or each stable study.",
    )
    parser.add_argument("--url", required=True, help="the API's base URL, .../o3-dpacs-wado")
    parser.add_argument("--key", default=os.environ.get("DICOMWEB_API_KEY", ""))
    parser.add_argument("--cursor", default=".dicomweb-follow.json", help="the cursor file")
    parser.add_argument("--from-start", action="store_true", help="replay from the first entry")
    parser.add_argument("--on", choices=("entry", "stable"), default="entry")
    parser.add_argument("--stable-seconds", type=float, default=300.0)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--exec", help="a command; the event on its stdin and in DICOM_*")
    target.add_argument("--webhook", help="a URL the event is POSTed to")
    parser.add_argument("--webhook-secret-file", help="HMAC key (else DICOMWEB_WEBHOOK_SECRET)")
    parser.add_argument("--exec-timeout", type=float, default=3600.0)
    parser.add_argument("--attempts", type=int, default=5, help="tries per event before exit 1")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between empty reads")
    parser.add_argument("--once", action="store_true", help="stop at the end of the feed")
    return parser


if __name__ == "__main__":
    sys.exit(main())
