"""The client's side of the upload path: asking for an upload (presigned PUT or multipart
URLs under ``incoming/uploads/``), completing it, and reading its status and results. Who
sees what, the keys' layout and what happens to an uploaded object are
:mod:`shared.services.ingest`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.dicom import failures
from shared.dicomweb import paths
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, Forbidden, NotFound
from shared.ports import ObjectStore
from shared.services.ingest import (
    INCOMING,
    OWNERS,
    RESULTS,
    UPLOAD_RECORDS,
    UPLOADED,
    dumps,
    stamp,
    utc_now,
)

logger = logging.getLogger(__name__)

#: Up to this size an upload is one presigned PUT; above, a multipart upload.
SINGLE_PUT_LIMIT = 64 << 20
#: Part size of multipart uploads (S3 allows 5 MiB to 5 GiB per part, 10,000 parts).
PART_SIZE = 64 << 20
#: The largest object the upload path accepts (S3's single-object copy limit).
MAX_UPLOAD = 5 << 30
#: How long presigned upload URLs are valid.
UPLOAD_URL_TTL = 6 * 3600
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
    clock: Callable[[], datetime] = utc_now,
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
        "created": stamp(now),
        "expiresAt": stamp(expires),
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
    store.put(f"{UPLOAD_RECORDS}{upload_id}.json", dumps(record))
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
    clock: Callable[[], datetime] = utc_now,
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
