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

Keys (``{rel}`` is the key below ``incoming/``):

* ``uploads/{id}.json``: what a client declared when it asked for an upload;
* ``incoming/uploads/{id}``: the uploaded object; ``incoming/{rel}``: dropped objects;
* ``results/{rel}.json``: the outcome; ``quarantine/{rel}``: a refused object.
"""

from __future__ import annotations

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
from shared.errors import BadRequest, NotFound, StorageUnavailable
from shared.ports import InstanceIndex, UploadStore
from shared.services.store import commit

logger = logging.getLogger(__name__)

INCOMING = "incoming/"
RESULTS = "results/"
QUARANTINE = "quarantine/"
UPLOAD_RECORDS = "uploads/"
UPLOADED = "uploads/"  # below incoming/: objects sent through POST .../uploads

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
    store: UploadStore,
    upload_root: str,
    clock: Callable[[], datetime] = _now,
) -> dict[str, Any]:
    """Record the upload and answer where to send it (the 201 body)."""
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
    store.put(f"{UPLOAD_RECORDS}{upload_id}.json", _dumps(record))
    logger.info("upload created", extra={"upload_id": upload_id, "bytes": request.size})
    return answer


def complete_upload(upload_id: str, body: bytes, *, store: UploadStore) -> dict[str, Any]:
    """Assemble a multipart upload from its parts' ETags (the 202 body)."""
    record = _record_of(_upload_id(upload_id), store)
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


def _record_of(upload_id: str, store: UploadStore) -> dict[str, Any]:
    data = store.read(f"{UPLOAD_RECORDS}{upload_id}.json")
    if data is None:
        raise NotFound("no such upload")
    record: dict[str, Any] = json.loads(data)
    return record


def _result_of(upload_id: str, store: UploadStore) -> dict[str, Any] | None:
    data = store.read(f"{RESULTS}{UPLOADED}{upload_id}.json")
    return None if data is None else dict(json.loads(data))


def status(
    upload_id: str, *, store: UploadStore, base_url: str, clock: Callable[[], datetime] = _now
) -> dict[str, Any]:
    """Where an upload is: pending, stored, duplicate or failed (with its reason)."""
    upload_id = _upload_id(upload_id)
    result = _result_of(upload_id, store)
    if result is not None:
        return _public(result, base_url, upload_id)
    record = _record_of(upload_id, store)
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


def results(
    prefix: str, *, store: UploadStore, base_url: str, after: str = "", limit: int = 100
) -> dict[str, Any]:
    """Results of objects ingested under ``incoming/{prefix}``, in key order, a page at a
    time (``next``: the ``after`` of the following page)."""
    if ".." in prefix.split("/"):
        raise BadRequest("prefix must not contain '..'")
    limit = max(1, min(limit, _MAX_LISTING))
    found: list[dict[str, Any]] = []
    last = ""
    for info in store.listing(f"{RESULTS}{prefix}", f"{RESULTS}{after}.json" if after else ""):
        data = store.read(info.key)
        if data is None:
            continue
        last = info.key[len(RESULTS) : -len(".json")]
        found.append(_public(json.loads(data), base_url, None))
        if len(found) == limit:
            break
    answer: dict[str, Any] = {"results": found}
    if len(found) == limit:
        answer["next"] = last
    return answer


def _public(result: dict[str, Any], base_url: str, upload_id: str | None) -> dict[str, Any]:
    """A stored result as a client sees it: URLs under this request's base."""
    answer = {k: v for k, v in result.items() if k not in {"sha256", "seriesInstanceUID"}}
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
    store: UploadStore,
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
            return _quarantine(key, relative, failed, store, clock)
        outcome = commit(
            instance,
            calling_aet=calling_aet,
            base_url="",
            blobs=store,
            index=index,
            write=lambda final: store.copy(key, final),
            clock=clock,
        )
    if isinstance(outcome, Failed):
        if outcome.reason == failures.OUT_OF_RESOURCES:
            raise StorageUnavailable("storage unavailable; the object stays for a retry")
        return _quarantine(key, relative, outcome, store, clock)
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
    key: str, relative: str, store: UploadStore, clock: Callable[[], datetime]
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


def _upload_record(relative: str, store: UploadStore) -> dict[str, Any] | None:
    if not relative.startswith(UPLOADED):
        return None
    upload_id = relative[len(UPLOADED) :]
    if not (upload_id.isalnum() and upload_id.isascii()):
        return None
    data = store.read(f"{UPLOAD_RECORDS}{upload_id}.json")
    return None if data is None else dict(json.loads(data))


def _quarantine(
    key: str,
    relative: str,
    failed: Failed,
    store: UploadStore,
    clock: Callable[[], datetime],
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
            }
        ),
    )
    store.delete(key)
    logger.info("quarantined", extra={"reason": hex(failed.reason), "key_prefix": _top(relative)})
    return Outcome(key, "failed")


def stale(
    store: UploadStore, *, older_than: float = SWEEP_AGE_S, now: float | None = None
) -> Iterator[str]:
    """Keys under ``incoming/`` older than ``older_than`` seconds (the sweeper's work)."""
    moment = time.time() if now is None else now
    for info in store.listing(INCOMING):
        if moment - info.modified >= older_than:
            yield info.key


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
