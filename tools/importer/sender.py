"""Send Part 10 files to the archive: STOW-RS batches for small ones, the upload path for
large ones, retries with backoff for throttling and unavailability.

Contract of the upload path (``POST {base}/stowRsListener/{AET}/uploads``): a JSON ticket with
either one presigned ``PUT`` or presigned parts plus a ``completeUrl``, then a ``statusUrl``
polled until the instance is ``stored``, ``duplicate`` or ``failed``.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import requests

from tools.importer import batching
from tools.importer.scan import Entry
from tools.importer.walk import READ_ERRORS

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
RETRYABLE = frozenset({429, 500, 502, 503, 504})
MULTIPART = 'multipart/related; type="application/dicom"'
STORED, DUPLICATE, FAILED, SKIPPED = "stored", "duplicate", "failed", "skipped"
_CHUNK = 1 << 20
UNMATCHED = "the archive's answer does not mention this file"
REASONS = {
    0xC000: "cannot understand: not a valid Part 10 file or an element cannot be read",
    0xC122: "transfer syntax not supported",
    0xC409: "Study Instance UID does not match the request",
    0xA700: "out of resources: storage unavailable",
    0xA701: "out of resources: too large to read",
    0xA900: "data set does not match SOP class",
    0x0110: "processing failure",
}


class Fatal(Exception):
    """A condition no retry fixes for any file (wrong key, wrong URL): the run stops."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one file. ``transient`` failures may succeed later (the gateway keeps
    those in its spool); the others are the archive's answer about the file itself."""

    source: str
    status: str
    sop_instance_uid: str = ""
    size: int = 0
    reason: str = ""
    failure_reason: int | None = None
    transient: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.sop_instance_uid:
            out["sopInstanceUID"] = self.sop_instance_uid
        if self.reason:
            out["reason"] = self.reason
        if self.failure_reason is not None:
            out["failureReason"] = self.failure_reason
        if self.transient:
            out["transient"] = True
        return out


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with full jitter; ``Retry-After`` is honoured up to ``cap``."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), self.cap)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 - jitter


@dataclass
class Sender:
    """Talks to one archive as one calling AE. Thread-safe: one HTTP session per thread."""

    base_url: str
    api_key: str
    aet: str
    limit: int = batching.PAYLOAD_LIMIT
    retry: Retry = field(default_factory=Retry)
    poll_timeout: float = 600.0
    timeout: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    _local: threading.local = field(default_factory=threading.local, repr=False)

    # ------------------------------------------------------------------ plumbing

    @property
    def stow_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/stowRsListener/{quote(self.aet, safe='')}/studies"

    @property
    def uploads_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/stowRsListener/{quote(self.aet, safe='')}/uploads"

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self.api_key} if self.api_key else {}

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP exchange, retried on 429/5xx and connection errors; the last answer (or a
        :class:`_Unreachable`) when the retries run out."""
        last: requests.Response | None = None
        error = ""
        data: Any = kwargs.get("data")
        for attempt in range(self.retry.attempts):
            if hasattr(data, "seek"):
                data.seek(0)  # a file streamed as the body: from its start on every attempt
            try:
                reply = self._session().request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = type(exc).__name__
                self.sleep(self.retry.delay(attempt))
                continue
            if reply.status_code not in RETRYABLE:
                return reply
            last = reply
            if attempt + 1 < self.retry.attempts:
                self.sleep(self.retry.delay(attempt, reply.headers.get("Retry-After")))
        if last is not None:
            return last
        raise _Unreachable(f"{error} after {self.retry.attempts} attempts")

    # ------------------------------------------------------------------ STOW-RS

    def plan(self, entries: list[Entry]) -> list[list[Entry]]:
        """Requests for ``entries``: STOW-RS batches under the payload limit, and one job per
        large file (a one-entry job whose file does not fit goes through the upload path)."""
        small, alone, large = [], [], []
        for entry in entries:
            if not batching.fits_alone(entry.size, self.limit):
                large.append(entry)
            elif entry.sop_instance_uid:
                small.append(entry)
            else:  # no UID to match the answer with: a request of its own
                alone.append(entry)
        batches, too_large = batching.plan(small, [e.size for e in small], self.limit)
        return batches + [[entry] for entry in alone + large + too_large]

    def run(self, job: list[Entry]) -> list[Outcome]:
        """Carry out one planned job."""
        if len(job) == 1 and not batching.fits_alone(job[0].size, self.limit):
            return [self.upload(job[0])]
        return self.stow(job)

    def send(self, entries: list[Entry]) -> list[Outcome]:
        """Store ``entries`` one job after the other."""
        return [outcome for job in self.plan(entries) for outcome in self.run(job)]

    def stow(self, batch: list[Entry]) -> list[Outcome]:
        """One STOW-RS request for ``batch`` (which fits the limit); a refused body (413, or
        400 for several files) is split in halves, a single file refused with 413 goes
        through the upload path."""
        payloads, unreadable = [], []
        for entry in list(batch):
            try:
                payloads.append(entry.item.read())
            except READ_ERRORS as exc:
                unreadable.append(_failed(entry, f"cannot read the file: {_why(exc)}"))
                batch = [e for e in batch if e is not entry]
        if not batch:
            return unreadable
        boundary = batching.new_boundary()
        body = batching.encode(payloads, boundary)
        del payloads
        headers = {
            **self._auth(),
            "Content-Type": f"{MULTIPART}; boundary={boundary}",
            "Accept": "application/dicom+json",
        }
        try:
            reply = self._request("POST", self.stow_url, data=body, headers=headers)
        except _Unreachable as exc:
            failed = [_failed(e, f"archive unreachable: {exc}", transient=True) for e in batch]
            return unreadable + failed
        return unreadable + self._answer(batch, reply)

    def _answer(self, batch: list[Entry], reply: requests.Response) -> list[Outcome]:
        status = reply.status_code
        if status in {401, 403}:
            raise Fatal(f"the archive refused the API key (HTTP {status})")
        if status == 404:
            raise Fatal(f"no STOW-RS endpoint at {self.stow_url} (HTTP 404): check --url")
        if len(batch) > 1 and status in {400, 413}:
            half = len(batch) // 2
            return self.stow(batch[:half]) + self.stow(batch[half:])
        if status == 413:
            return [self.upload(batch[0])]
        if status in {200, 202, 409}:
            outcomes = _stow_outcomes(batch, _json(reply))
            if len(batch) == 1:
                return outcomes
            # a failure the archive could not tie to a SOP Instance UID: ask file by file
            return [
                outcome if outcome.reason != UNMATCHED else self.stow([entry])[0]
                for entry, outcome in zip(batch, outcomes, strict=True)
            ]
        message = _message(reply)
        transient = status in RETRYABLE
        return [_failed(e, f"HTTP {status}: {message}", transient=transient) for e in batch]

    # ------------------------------------------------------------------ upload path

    def upload(self, entry: Entry) -> Outcome:
        """Store one file of any size through the presigned upload path."""
        try:
            return self._upload(entry)
        except _Unreachable as exc:
            return _failed(entry, f"archive unreachable: {exc}", transient=True)
        except READ_ERRORS as exc:
            return _failed(entry, f"cannot read the file: {_why(exc)}")

    def _upload(self, entry: Entry) -> Outcome:
        ticket_request: dict[str, Any] = {"size": entry.size, "sha256": _sha256(entry)}
        if entry.study_instance_uid:
            ticket_request["studyInstanceUID"] = entry.study_instance_uid
        reply = self._request("POST", self.uploads_url, json=ticket_request, headers=self._auth())
        if reply.status_code == 401:
            raise Fatal("the archive refused the API key (HTTP 401)")
        if reply.status_code in {403, 404}:
            return _failed(
                entry,
                f"the archive has no upload path for files over {self.limit:,} bytes "
                f"(HTTP {reply.status_code})",
            )
        if reply.status_code != 201:
            return _failed(
                entry,
                f"upload refused: HTTP {reply.status_code}: {_message(reply)}",
                transient=reply.status_code in RETRYABLE,
            )
        ticket = _json(reply)
        if "upload" in ticket:
            problem = self._put_single(entry, ticket["upload"])
        elif "multipart" in ticket:
            problem = self._put_parts(entry, ticket["multipart"])
        else:
            problem = "upload ticket has neither 'upload' nor 'multipart'"
        if problem:
            return _failed(entry, problem, transient=True)
        return self._poll(entry, str(ticket["statusUrl"]))

    def _put_single(self, entry: Entry, upload: dict[str, Any]) -> str:
        headers = {str(k): str(v) for k, v in dict(upload.get("headers") or {}).items()}
        headers.setdefault("Content-Type", "application/dicom")
        method, url = str(upload.get("method", "PUT")), str(upload["url"])
        if entry.item.member:  # a zip member has no length requests can see: send bytes
            data = entry.item.read()
            reply = self._request(method, url, data=data, headers=headers)
        else:  # a file on disk is streamed, never held in memory whole
            headers["Content-Length"] = str(entry.size)
            with entry.item.open() as fp:
                reply = self._request(method, url, data=fp, headers=headers)
        if not 200 <= reply.status_code < 300:
            return f"upload PUT answered HTTP {reply.status_code}"
        return ""

    def _put_parts(self, entry: Entry, multipart: dict[str, Any]) -> str:
        part_size = int(multipart["partSize"])
        etags = []
        with entry.item.open() as fp:
            for part in sorted(multipart["parts"], key=lambda p: int(p["partNumber"])):
                number = int(part["partNumber"])
                fp.seek((number - 1) * part_size)
                chunk = fp.read(part_size)
                reply = self._request("PUT", str(part["url"]), data=chunk)
                etag = reply.headers.get("ETag")
                if not 200 <= reply.status_code < 300 or etag is None:
                    return f"upload of part {number} answered HTTP {reply.status_code}"
                etags.append({"partNumber": number, "etag": etag})
        reply = self._request(
            "POST", str(multipart["completeUrl"]), json={"parts": etags}, headers=self._auth()
        )
        if reply.status_code not in {200, 201, 202}:
            return f"completing the upload answered HTTP {reply.status_code}: {_message(reply)}"
        return ""

    def _poll(self, entry: Entry, status_url: str) -> Outcome:
        deadline = time.monotonic() + self.poll_timeout
        delay = 0.2
        while True:
            reply = self._request("GET", status_url, headers=self._auth())
            if reply.status_code != 200:
                return _failed(
                    entry, f"upload status answered HTTP {reply.status_code}", transient=True
                )
            status = _json(reply)
            state = str(status.get("status", ""))
            sop = str(status.get("sopInstanceUID") or entry.sop_instance_uid)
            if state == STORED:
                return Outcome(entry.item.source, STORED, sop, entry.size)
            if state == DUPLICATE:
                return Outcome(entry.item.source, DUPLICATE, sop, entry.size, "already stored")
            if state == FAILED:  # as a STOW failure: 0x0111 is a duplicate, 0xA700 may pass
                code = status.get("failureReason")
                outcome = _refused(entry, int(code) if isinstance(code, int) else None)
                message = str(status.get("message") or "")
                if outcome.status == FAILED and message:
                    outcome = replace(outcome, reason=f"{outcome.reason}: {message[:200]}")
                return replace(outcome, sop_instance_uid=sop)
            if time.monotonic() > deadline:
                return _failed(
                    entry, f"still pending after {self.poll_timeout:.0f} s", transient=True
                )
            self.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ QIDO-RS

    def stored_uids(self, uids: Iterable[str], chunk: int = 40) -> tuple[set[str], str]:
        """Which of ``uids`` the archive already holds (QIDO-RS instance search by SOP
        Instance UID lists), and why the check stopped early ('' if it did not). Unanswered
        questions count as "not stored": STOW-RS takes an identical re-send as a success."""
        wanted = sorted(set(uids))
        found: set[str] = set()
        url = f"{self.base_url.rstrip('/')}/qido/{quote(self.aet, safe='')}/instances"
        for start in range(0, len(wanted), chunk):
            group = wanted[start : start + chunk]
            params = {"SOPInstanceUID": "\\".join(group), "limit": str(len(group))}
            try:
                reply = self._request("GET", url, params=params, headers=self._auth())
            except _Unreachable as exc:
                return found & set(wanted), f"archive unreachable: {exc}"
            if reply.status_code == 401:
                raise Fatal("the archive refused the API key (HTTP 401)")
            if reply.status_code == 403:  # a key allowed to store but not to search
                return found & set(wanted), "the API key may not search (HTTP 403)"
            if reply.status_code != 200:
                continue
            for dataset in _json_list(reply):
                values = dataset.get("00080018", {}).get("Value", [])
                found.update(str(v) for v in values)
        return found & set(wanted), ""


class _Unreachable(Exception):
    """No HTTP answer at all after every retry."""


def _failed(entry: Entry, reason: str, transient: bool = False) -> Outcome:
    return Outcome(
        entry.item.source, FAILED, entry.sop_instance_uid, entry.size, reason, None, transient
    )


def _why(exc: Exception) -> str:
    return str(exc.strerror) if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _sha256(entry: Entry) -> str:
    digest = hashlib.sha256()
    with entry.item.open() as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json(reply: requests.Response) -> dict[str, Any]:
    try:
        value = reply.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(reply: requests.Response) -> list[dict[str, Any]]:
    try:
        value = reply.json()
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _message(reply: requests.Response) -> str:
    message = _json(reply).get("message")
    return str(message)[:200] if message else reply.reason or ""


def _sequence(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    value = body.get(tag, {})
    items = value.get("Value", []) if isinstance(value, dict) else []
    return [item for item in items if isinstance(item, dict)]


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value", []) if isinstance(item.get(tag), dict) else []
    return values[0] if values else None


def _stow_outcomes(batch: list[Entry], body: dict[str, Any]) -> list[Outcome]:
    """Match the Store Instances Response (PS3.18 Annex I) to the files of the batch by SOP
    Instance UID; a batch with one file takes a UID-less answer as its own."""
    stored = {
        str(_first(i, REFERENCED_SOP_INSTANCE_UID))
        for i in _sequence(body, REFERENCED_SOP_SEQUENCE)
    }
    failed: dict[str, int | None] = {}
    for item in _sequence(body, FAILED_SOP_SEQUENCE):
        code = _first(item, FAILURE_REASON)
        failed[str(_first(item, REFERENCED_SOP_INSTANCE_UID) or "")] = (
            int(code) if isinstance(code, int) else None
        )
    outcomes = []
    for entry in batch:
        uid = entry.sop_instance_uid
        source = entry.item.source
        if uid and uid in stored:
            outcomes.append(Outcome(source, STORED, uid, entry.size))
        elif uid in failed or (len(batch) == 1 and failed):
            code = failed[uid] if uid in failed else next(iter(failed.values()))
            outcomes.append(_refused(entry, code))
        elif len(batch) == 1 and stored:
            outcomes.append(Outcome(source, STORED, next(iter(stored)), entry.size))
        else:
            outcomes.append(_failed(entry, UNMATCHED))
    return outcomes


def _refused(entry: Entry, code: int | None) -> Outcome:
    source, uid = entry.item.source, entry.sop_instance_uid
    if code == DUPLICATE_SOP_INSTANCE:
        return Outcome(
            source,
            DUPLICATE,
            uid,
            entry.size,
            "already stored with other content (0x0111); the archive keeps its copy",
            code,
        )
    transient = code == OUT_OF_RESOURCES  # storage unavailable; 0xA701 and others are final
    text = "refused" if code is None else f"refused (0x{code:04X}: {REASONS.get(code, 'error')})"
    return Outcome(source, FAILED, uid, entry.size, text, code, transient)
