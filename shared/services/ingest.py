"""The upload path: objects of any size reach the store directly, then are ingested.

API Gateway carries at most 10 MB and Lambda 6 MB, so an instance above STOW's inline limit
is written by the client straight into the bucket under ``incoming/`` (a presigned PUT, or a
multipart upload with a presigned URL per part), and so is any object a migration copies
there with an S3 tool. Each object under ``incoming/`` is then *ingested*, when its
"Object Created" event arrives or when the sweeper finds it: validated from a file in
bounded memory (:func:`shared.dicom.validate.validate_file`), copied to its final key and
indexed by the very code STOW uses (:func:`shared.services.store.commit`). Its result, in
STOW's terms, is written to ``results/`` under the same relative key; a refused object is
moved to ``quarantine/`` with its reason; the incoming object is deleted last. The client's
requests (asking for an upload, completing it, its status and results) are
:mod:`shared.services.uploads`; this module keeps the layout both share.

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

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.dicom import failures
from shared.dicom.validate import InstanceRejected, ValidInstance, validate_file
from shared.dicomweb.stow_result import Failed
from shared.errors import StorageUnavailable
from shared.ports import Catalog, InstanceIndex, ObjectStore
from shared.services.store import DEFAULT_RETENTION_DAYS, commit

logger = logging.getLogger(__name__)

INCOMING = "incoming/"
RESULTS = "results/"
QUARANTINE = "quarantine/"
UPLOAD_RECORDS = "uploads/"
UPLOADED = "uploads/"  # below incoming/: objects sent through POST .../uploads
OWNERS = "owners/"  # below uploads/: one marker per upload, by the key that asked for it

#: The sweeper ingests objects under incoming/ that are older than this without a result
#: (their event was lost, or they were dropped while nothing listened).
SWEEP_AGE_S = 15 * 60
#: The AE title recorded for objects dropped under incoming/ by other tools.
DROP_AET = "S3-INGEST"


def utc_now() -> datetime:
    """The time now, in UTC (the default clock)."""
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """A time as results and records write it (UTC, seconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- ingestion


@dataclass(frozen=True)
class Outcome:
    """What one ingestion did (``None`` status: nothing to do)."""

    key: str
    status: str


def ingest(  # noqa: PLR0913 - keyword-only: the object, the ports and the policy
    key: str,
    *,
    store: ObjectStore,
    index: InstanceIndex,
    inflate_limit: int,
    clock: Callable[[], datetime] = utc_now,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    catalog: Callable[[], Catalog] | None = None,
) -> Outcome | None:
    """Ingest the object under ``incoming/``; None when there is nothing (any more).
    ``retention_days``: how long instances a rejection note hides are kept, and
    ``catalog``: read to refresh their parents (as STOW's).

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
            retention_days=retention_days,
            catalog=catalog,
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
        dumps(
            {
                "key": relative,
                "status": state,
                "sopClassUID": outcome.sop_class_uid,
                "sopInstanceUID": outcome.sop_instance_uid,
                "studyInstanceUID": instance.study_uid,
                "seriesInstanceUID": instance.series_uid,
                "sha256": instance.sha256,
                "size": instance.size,
                "ingested": stamp(clock()),
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
        dumps(
            {
                "key": relative,
                "status": "failed",
                "failureReason": failed.reason,
                "message": failed.message,
                "sopClassUID": failed.sop_class_uid,
                "sopInstanceUID": failed.sop_instance_uid,
                "quarantineKey": target,
                "ingested": stamp(clock()),
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


def dumps(document: dict[str, Any]) -> bytes:
    """A JSON document as results and records are written (compact UTF-8)."""
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
