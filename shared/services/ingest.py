"""The upload path: objects of any size reach the store directly, then are ingested.

API Gateway carries at most 10 MB and Lambda 6 MB, so an instance above STOW's inline limit
is written by the client straight into the bucket under ``incoming/`` (a presigned PUT, or a
multipart upload with a presigned URL per part), and so is any object a migration copies
there with an S3 tool. Each object under ``incoming/`` is then *ingested*, when its
"Object Created" event arrives or when the sweeper finds it: validated from a file in
bounded memory (:func:`shared.dicom.validate.validate_file`), copied to its final key and
indexed by the very code STOW uses (:func:`shared.services.store.commit`). Its result, in
STOW's terms, is written to ``results/`` under the same relative key; a refused object is
moved to ``quarantine/`` with its reason; the incoming object is deleted last.

Ingestion is idempotent: events come at least once and in any order. An event for an object
that is gone (already ingested, or replaced and ingested) does nothing; an object ingested
twice is stored once, and its first result stands.

Who sees what: an upload belongs to the API key that asked for it (its id is kept in the
record and in the result); only that key learns its status, completes it or lists its
result, and any other key is told there is no such upload. Results of *dropped* objects
(written under ``incoming/`` by other tools, not through an upload) name their source key,
whose folder and file names often hold patient names: they are listed to keys with the
``admin`` scope only, the scope that manages drop folders.

Keys (``{rel}`` is the key below ``incoming/``):

* ``uploads/{id}.json``: what a client declared when it asked for an upload, and which key;
* ``uploads/owners/{owner}/{id}``: an empty marker per upload, ``{owner}`` a digest of the
  key's id, so that a key lists its own uploads without reading anyone else's;
* ``incoming/uploads/{id}``: the uploaded object; ``incoming/{rel}``: dropped objects;
* ``results/{rel}.json``: the outcome; ``quarantine/{rel}``: a refused object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.dicom import failures
from shared.dicom.validate import InstanceRejected, ValidInstance, validate_file
from shared.dicomweb import paths
from shared.dicomweb.stow_result import Failed
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, Forbidden, NotFound, StorageUnavailable
from shared.ports import InstanceIndex, ObjectStore
from shared.services.store import commit

logger = logging.getLogger(__name__)

INCOMING = "incoming/"
RESULTS = "results/"
QUARANTINE = "quarantine/"
UPLOAD_RECORDS = "uploads/"
UPLOADED = "uploads/"  # below incoming/: objects sent through POST .../uploads
OWNERS = "owners/"  # below uploads/: one marker per upload, by the key that asked for it

#: Up to this size an upload is one presigned PUT; above, a multipart upload.
SINGLE_PUT_LIMIT = 64 << 20
#: Part size of multipart uploads (S3 allows 5 MiB to 5 GiB per part, 10,000 parts).
PART_SIZE = 64 << 20
#: The largest object the upload path accepts (S3's single-object copy limit).
MAX_UPLOAD = 5 << 30
#: How long presigned upload URLs are valid.
UPLOAD_URL_TTL = 6 * 3600
#: The sweeper ingests objects under incoming/ that are older than this without a result
#: (their event was lost, or they were dropped while nothing listened).
SWEEP_AGE_S = 15 * 60
#: The AE title recorded for objects dropped under incoming/ by other tools.
DROP_AET = "S3-INGEST"
_MAX_LISTING = 1000
#: S3's most parts of a multipart upload, and a bound on an ETag's length.
_MAX_PARTS = 10_000
_MAX_ETAG = 1024
#: S3's longest key, in UTF-8 bytes: a longer prefix or ``after`` names nothing.
_MAX_KEY = 1024


@dataclass(frozen=True)
class Caller:
    """Who asks: the id of the request's API key (an upload belongs to the key that asked
    for it) and whether the key has the ``admin`` scope (results of dropped objects)."""

    key_id: str
    admin: bool = False


@dataclass(frozen=True)
class UploadRequest:
    """What a client declared before uploading one Part 10 object."""

    size: int
    calling_aet: str
    sha256: str = ""
    study_uid: str = ""

    @classmethod
    def from_json(cls, body: bytes, calling_aet: str) -> UploadRequest:
        """Parse ``{"size": n, "sha256"?: hex, "studyInstanceUID"?: uid}`` (400 if bad)."""
        document = _json(body, 'the body must be JSON: {"size": <bytes>}')
        if not isinstance(document, dict):
            raise BadRequest('the body must be a JSON object: {"size": <bytes>}')
        size = document.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_UPLOAD:
            raise BadRequest(f"size must be a whole number of bytes from 1 to {MAX_UPLOAD:,}")
        sha256 = document.get("sha256", "")
        if not isinstance(sha256, str) or (
            sha256 and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256))
        ):
            raise BadRequest("sha256 must be 64 lower-case hexadecimal digits")
        study = document.get("studyInstanceUID", "")
        if not isinstance(study, str) or (study and not valid_uid(study)):
            raise BadRequest("studyInstanceUID must be a valid UID")
        return cls(size=size, calling_aet=calling_aet, sha256=sha256, study_uid=study)


def _json(body: bytes, shape: str) -> Any:
    """A request body's JSON document; 400 naming the expected ``shape`` when it is not
    JSON (nesting too deep for the parser included)."""
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(shape) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _upload_id(text: str) -> str:
    if not (16 <= len(text) <= 64 and text.isalnum() and text.isascii()):
        raise NotFound("no such upload")
    return text


def part_sizes(size: int) -> list[int]:
    """The sizes of a multipart upload's parts: :data:`PART_SIZE` each, the last one the
    remainder."""
    count = -(-size // PART_SIZE)
    return [PART_SIZE] * (count - 1) + [size - (count - 1) * PART_SIZE]


def create_upload(
    request: UploadRequest,
    *,
    caller: Caller,
    store: ObjectStore,
    upload_root: str,
    clock: Callable[[], datetime] = _now,
) -> dict[str, Any]:
    """Record the upload as the caller's and answer where to send it (the 201 body)."""
    if not caller.key_id:
        raise Forbidden("this request names no API key: an upload must belong to one")
    upload_id = secrets.token_hex(16)
    key = f"{INCOMING}{UPLOADED}{upload_id}"
    now = clock()
    expires = datetime.fromtimestamp(now.timestamp() + UPLOAD_URL_TTL, UTC)
    record: dict[str, Any] = {
        "uploadId": upload_id,
        "key": key,
        "size": request.size,
        "sha256": request.sha256,
        "studyInstanceUID": request.study_uid,
        "callingAET": request.calling_aet,
        "keyId": caller.key_id,
        "created": _stamp(now),
        "expiresAt": _stamp(expires),
    }
    answer: dict[str, Any] = {
        "uploadId": upload_id,
        "status": "pending",
        "statusUrl": f"{upload_root}/{upload_id}",
        "expiresAt": record["expiresAt"],
    }
    if request.size <= SINGLE_PUT_LIMIT:
        url = store.presign_put(
            key, expires=UPLOAD_URL_TTL, content_type="application/dicom", size=request.size
        )
        answer["upload"] = {
            "method": "PUT",
            "url": url,
            "headers": {"Content-Type": "application/dicom"},
        }
    else:
        multipart = store.start_multipart(key, "application/dicom")
        record["multipartUploadId"] = multipart
        answer["multipart"] = {
            "partSize": PART_SIZE,
            "parts": [
                {
                    "partNumber": n,
                    "url": store.presign_part(
                        key, multipart, n, expires=UPLOAD_URL_TTL, size=part_size
                    ),
                }
                for n, part_size in enumerate(part_sizes(request.size), start=1)
            ],
            "completeUrl": f"{upload_root}/{upload_id}/complete",
        }
    store.put(_marker(caller.key_id, upload_id), b"")  # before the record: listed once it exists
    store.put(f"{UPLOAD_RECORDS}{upload_id}.json", _dumps(record))
    logger.info("upload created", extra={"upload_id": upload_id, "bytes": request.size})
    return answer


def complete_upload(
    upload_id: str, body: bytes, *, caller: Caller, store: ObjectStore
) -> dict[str, Any]:
    """Assemble the caller's multipart upload from its parts' ETags (the 202 body)."""
    record = _record_of(_upload_id(upload_id), store)
    if not _owned(record, caller):
        raise NotFound("no such upload")
    multipart = record.get("multipartUploadId")
    if not multipart:
        raise BadRequest("this upload is a single PUT: there is nothing to complete")
    parts = _parts(body)
    expected = len(part_sizes(int(record["size"])))
    if [number for number, _ in parts] != list(range(1, expected + 1)):
        raise BadRequest(f"parts must list each of the upload's parts 1 to {expected} once")
    try:
        store.complete_multipart(
            str(record["key"]), str(multipart), parts, size=int(record["size"])
        )
    except ValueError as exc:
        if store.stat(str(record["key"])) is None and _result_of(upload_id, store) is None:
            raise BadRequest(str(exc)) from exc
        # Completed before (a retried request): the object or its result is there.
    return {"uploadId": upload_id, "status": "pending", "statusUrl": ""}


def _parts(body: bytes) -> list[tuple[int, str]]:
    """(part number, ETag) of a complete request's body, by part number (400 if bad)."""
    shape = 'the body must be {"parts": [{"partNumber": n, "etag": "..."}]}'
    document = _json(body, shape)
    listed = document.get("parts") if isinstance(document, dict) else None
    if not isinstance(listed, list) or not 1 <= len(listed) <= _MAX_PARTS:
        raise BadRequest(f"{shape}, from 1 to {_MAX_PARTS:,} parts")
    parts = []
    for part in listed:
        number = part.get("partNumber") if isinstance(part, dict) else None
        etag = part.get("etag") if isinstance(part, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(etag, str):
            raise BadRequest(shape)
        if not etag or len(etag) > _MAX_ETAG or not etag.isascii() or not etag.isprintable():
            raise BadRequest("an etag must be the ETag header its part's PUT answered")
        parts.append((number, etag))
    return sorted(parts)


def _owner(key_id: str) -> str:
    """The folder of a key's upload markers: a digest of its id (ids are any text)."""
    return hashlib.sha256(key_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _marker(key_id: str, upload_id: str) -> str:
    return f"{UPLOAD_RECORDS}{OWNERS}{_owner(key_id)}/{upload_id}"


def _owned(document: dict[str, Any], caller: Caller) -> bool:
    """Whether an upload's record or result belongs to the caller's key."""
    return bool(caller.key_id) and document.get("keyId") == caller.key_id


def _record_of(upload_id: str, store: ObjectStore) -> dict[str, Any]:
    data = store.read(f"{UPLOAD_RECORDS}{upload_id}.json")
    if data is None:
        raise NotFound("no such upload")
    record: dict[str, Any] = json.loads(data)
    return record


def _result_of(upload_id: str, store: ObjectStore) -> dict[str, Any] | None:
    data = store.read(f"{RESULTS}{UPLOADED}{upload_id}.json")
    return None if data is None else dict(json.loads(data))


def status(
    upload_id: str,
    *,
    caller: Caller,
    store: ObjectStore,
    base_url: str,
    clock: Callable[[], datetime] = _now,
) -> dict[str, Any]:
    """Where the caller's upload is: pending, stored, duplicate or failed (with its reason);
    404 for an upload of another key, as for one that does not exist."""
    upload_id = _upload_id(upload_id)
    result = _result_of(upload_id, store)
    if result is not None:
        if not _owned(result, caller):
            raise NotFound("no such upload")
        return _public(result, base_url, upload_id)
    record = _record_of(upload_id, store)
    if not _owned(record, caller):
        raise NotFound("no such upload")
    answer: dict[str, Any] = {"uploadId": upload_id, "status": "pending"}
    expired = clock() > datetime.strptime(record["expiresAt"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )
    if expired and store.stat(str(record["key"])) is None:
        answer.update(
            status="failed",
            failureReason=failures.PROCESSING_FAILURE,
            message="no object arrived before the upload URLs expired",
        )
    return answer


def results(  # noqa: PLR0913 - keyword-only: who asks, where, and the page
    prefix: str,
    *,
    caller: Caller,
    store: ObjectStore,
    base_url: str,
    after: str = "",
    limit: int = 100,
) -> dict[str, Any]:
    """Results of objects ingested under ``incoming/{prefix}`` that the caller may see, in
    key order, a page at a time: its own uploads, and with the ``admin`` scope the objects
    dropped by other tools. A page examines at most ``limit`` results, so it may hold fewer
    (those of other keys are skipped); ``next`` is the ``after`` of the following page."""
    for name, value in (("prefix", prefix), ("after", after)):
        _check_key_text(name, value)
    limit = max(1, min(limit, _MAX_LISTING))
    candidates = (
        _results_under(prefix, after, store) if caller.admin else _own(caller, prefix, after, store)
    )
    found: list[dict[str, Any]] = []
    examined, last = 0, ""
    for relative in candidates:
        examined, last = examined + 1, relative
        data = store.read(f"{RESULTS}{relative}.json")
        if data is not None:
            result = json.loads(data)
            if _owned(result, caller) or (caller.admin and not result.get("keyId")):
                upload_id = relative[len(UPLOADED) :] if result.get("keyId") else None
                found.append(_public(result, base_url, None, upload_id))
        if examined == limit:
            break
    answer: dict[str, Any] = {"results": found}
    if examined == limit:
        answer["next"] = last
    return answer


def _check_key_text(name: str, value: str) -> None:
    """400 unless ``value`` can be part of an object key: printable, at most S3's key
    length, no ``..`` segment."""
    if ".." in value.split("/"):
        raise BadRequest(f"{name} must not contain '..'")
    # Lone surrogates (no UTF-8 form) are not printable either.
    if not value.isprintable() or len(value.encode("utf-8", "surrogatepass")) > _MAX_KEY:
        raise BadRequest(f"{name} must be printable text of at most {_MAX_KEY} bytes")


def _results_under(prefix: str, after: str, store: ObjectStore) -> Iterator[str]:
    """Relative keys of every result under ``incoming/{prefix}``, after ``after``."""
    start = f"{RESULTS}{after}.json" if after else ""
    for info in store.listing(f"{RESULTS}{prefix}", start):
        if info.key.endswith(".json"):
            yield info.key[len(RESULTS) : -len(".json")]


def _own(caller: Caller, prefix: str, after: str, store: ObjectStore) -> Iterator[str]:
    """Relative keys (``uploads/{id}``) of the caller's uploads under ``incoming/{prefix}``,
    after ``after``, from its markers: other keys' uploads are never read."""
    if not caller.key_id:
        return
    if prefix.startswith(UPLOADED):
        ids = prefix[len(UPLOADED) :]
    elif UPLOADED.startswith(prefix):
        ids = ""
    else:
        return  # a prefix outside uploads/: dropped objects only
    if after.startswith(UPLOADED):
        start = after[len(UPLOADED) :]
    elif after > UPLOADED:
        return  # every upload's key sorts before it
    else:
        start = ""
    folder = f"{UPLOAD_RECORDS}{OWNERS}{_owner(caller.key_id)}/"
    for info in store.listing(f"{folder}{ids}", f"{folder}{start}" if start else ""):
        upload_id = info.key[len(folder) :]
        if upload_id.isalnum() and upload_id.isascii():
            yield f"{UPLOADED}{upload_id}"


def _public(
    result: dict[str, Any], base_url: str, upload_id: str | None, listed_id: str | None = None
) -> dict[str, Any]:
    """A stored result as a client sees it: URLs under this request's base; the status of
    ``upload_id`` (without the key), or a listed result (its ``uploadId`` when an upload's)."""
    hidden = {"sha256", "seriesInstanceUID", "keyId"}
    answer = {k: v for k, v in result.items() if k not in hidden}
    if listed_id is not None:
        answer["uploadId"] = listed_id
    if upload_id is not None:
        answer["uploadId"] = upload_id
        answer.pop("key", None)
    if result.get("status") in {"stored", "duplicate"}:
        answer["retrieveUrl"] = paths.instance_url(
            base_url,
            result["studyInstanceUID"],
            result["seriesInstanceUID"],
            result["sopInstanceUID"],
        )
    return answer


# ---------------------------------------------------------------- ingestion


@dataclass(frozen=True)
class Outcome:
    """What one ingestion did (``None`` status: nothing to do)."""

    key: str
    status: str


def ingest(
    key: str,
    *,
    store: ObjectStore,
    index: InstanceIndex,
    inflate_limit: int,
    clock: Callable[[], datetime] = _now,
) -> Outcome | None:
    """Ingest the object under ``incoming/``; None when there is nothing (any more).

    Raises :class:`StorageUnavailable` when storage failed: the object stays in
    ``incoming/`` for the event's retry or the sweeper.
    """
    if not key.startswith(INCOMING) or key.endswith("/") or key == INCOMING:
        return None
    relative = key[len(INCOMING) :]
    result_key = f"{RESULTS}{relative}.json"
    record = _upload_record(relative, store)
    if record is None and relative.startswith(UPLOADED):
        return _unasked(key, relative, store, clock)
    declared = record or {}
    calling_aet = str(declared.get("callingAET") or DROP_AET)
    owner = {"keyId": str(declared["keyId"])} if declared.get("keyId") else {}
    with store.local_file(key) as path:
        if path is None:
            return None  # ingested before (events repeat) or removed
        try:
            instance = _validated(path, declared, inflate_limit)
        except InstanceRejected as rejected:
            failed = Failed(
                rejected.reason,
                rejected.message,
                rejected.sop_class_uid,
                rejected.sop_instance_uid,
            )
            return _quarantine(key, relative, failed, store, clock, owner=owner)
        outcome = commit(
            instance,
            calling_aet=calling_aet,
            base_url="",
            objects=store,
            index=index,
            write=lambda final: store.copy(key, final),
            clock=clock,
        )
    if isinstance(outcome, Failed):
        if outcome.reason == failures.OUT_OF_RESOURCES:
            raise StorageUnavailable("storage unavailable; the object stays for a retry")
        return _quarantine(key, relative, outcome, store, clock, owner=owner)
    state = "duplicate" if outcome.already_stored else "stored"
    previous = store.read(result_key)
    if state == "duplicate" and previous is not None:
        earlier = json.loads(previous)
        if earlier.get("sha256") == instance.sha256 and earlier.get("status") == "stored":
            state = "stored"  # our own earlier ingestion of this object (a repeated event)
    store.put(
        result_key,
        _dumps(
            {
                "key": relative,
                "status": state,
                "sopClassUID": outcome.sop_class_uid,
                "sopInstanceUID": outcome.sop_instance_uid,
                "studyInstanceUID": instance.study_uid,
                "seriesInstanceUID": instance.series_uid,
                "sha256": instance.sha256,
                "size": instance.size,
                "ingested": _stamp(clock()),
                **owner,
            }
        ),
    )
    store.delete(key)
    logger.info(
        "ingested", extra={"status": state, "bytes": instance.size, "key_prefix": _top(relative)}
    )
    return Outcome(key, state)


def _validated(path: Path, declared: dict[str, Any], inflate_limit: int) -> ValidInstance:
    """The instance, checked as STOW checks it and against what the upload declared."""
    size = path.stat().st_size
    if declared.get("size") and int(declared["size"]) != size:
        raise InstanceRejected(
            failures.CANNOT_UNDERSTAND,
            f"the object has {size:,} bytes; the upload declared {int(declared['size']):,}",
        )
    study = str(declared.get("studyInstanceUID") or "") or None
    instance = validate_file(path, study, inflate_limit=inflate_limit)
    if declared.get("sha256") and declared["sha256"] != instance.sha256:
        raise InstanceRejected(
            failures.CANNOT_UNDERSTAND,
            "the object's SHA-256 differs from the one the upload declared",
            instance.sop_class_uid,
            instance.sop_instance_uid,
        )
    return instance


def _unasked(
    key: str, relative: str, store: ObjectStore, clock: Callable[[], datetime]
) -> Outcome | None:
    """An object under ``incoming/uploads/`` no upload was asked for (records are written
    before any URL is handed out): kept aside, never stored under a name it did not get."""
    if store.stat(key) is None:
        return None
    refused = Failed(failures.CANNOT_UNDERSTAND, "no upload was asked for under this id")
    return _quarantine(key, relative, refused, store, clock)


def _top(relative: str) -> str:
    """The first folder of a key, for logs (file names may hold patient names)."""
    return relative.split("/", 1)[0] if "/" in relative else ""


def _upload_record(relative: str, store: ObjectStore) -> dict[str, Any] | None:
    if not relative.startswith(UPLOADED):
        return None
    upload_id = relative[len(UPLOADED) :]
    if not (upload_id.isalnum() and upload_id.isascii()):
        return None
    data = store.read(f"{UPLOAD_RECORDS}{upload_id}.json")
    return None if data is None else dict(json.loads(data))


def _quarantine(  # noqa: PLR0913 - the object, why, where, and whose
    key: str,
    relative: str,
    failed: Failed,
    store: ObjectStore,
    clock: Callable[[], datetime],
    *,
    owner: dict[str, str] | None = None,
) -> Outcome:
    """Keep a refused object under ``quarantine/`` with its reason; never drop it."""
    target = f"{QUARANTINE}{relative}"
    store.copy(key, target)
    store.put(
        f"{RESULTS}{relative}.json",
        _dumps(
            {
                "key": relative,
                "status": "failed",
                "failureReason": failed.reason,
                "message": failed.message,
                "sopClassUID": failed.sop_class_uid,
                "sopInstanceUID": failed.sop_instance_uid,
                "quarantineKey": target,
                "ingested": _stamp(clock()),
                **(owner or {}),
            }
        ),
    )
    store.delete(key)
    logger.info("quarantined", extra={"reason": hex(failed.reason), "key_prefix": _top(relative)})
    return Outcome(key, "failed")


def stale(
    store: ObjectStore, *, older_than: float = SWEEP_AGE_S, now: float | None = None
) -> Iterator[str]:
    """Keys under ``incoming/`` older than ``older_than`` seconds (the sweeper's work)."""
    moment = time.time() if now is None else now
    for info in store.listing(INCOMING):
        if moment - info.modified >= older_than:
            yield info.key


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
