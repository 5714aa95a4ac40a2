"""Metadata update and patient merge (``admin`` keys), Azure-shaped: ``POST
rs/studies/$bulkUpdate`` with ``{"studyInstanceUids": [...], "changeDataset": {DICOM JSON}}``
answers 202 with the operation's id and the URL of its status (``operations/{id}``).

An operation is a record under ``operations/`` and a marker under ``jobs/operations/``
(what is still to do); the marker's creation is the event that wakes the Operations
function. A worker runs only while it holds the ``operations`` lease (port ``Lease``), and
takes the markers in the order of their ids (time-ordered): operations run one after
another, so that those on one study run in order and never concurrently; a worker woken
while another holds the lease leaves at once, and the holder looks for new markers again
after giving the lease up. One cut off (the function's time, a crash) goes on from its
last saved study on the next event or the schedule, once its lease has ended; every step
is idempotent (an instance that already holds the change is left as it is).

Each instance of a study is given a **new version**: its Part 10 bytes with the change
applied (:mod:`shared.dicom.edit`: the header re-encoded, pixel data copied byte for byte),
validated as STOW validates, stored under its new content key, and its index entry
replaced (``index.replace``: QIDO, metadata, the substring index and the de-identified
view follow at once; a change of PatientID moves the study to that patient, a merge).
The bytes it replaces are kept under ``versions/`` (same key after the prefix), where
admins list and read them (``versions/studies/...``). UIDs never change.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom

from shared import audit
from shared.deadline import Deadline
from shared.dicom import edit
from shared.dicom.validate import InstanceRejected, validate_file
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, NotFound, StorageUnavailable
from shared.ports import (
    AuditSink,
    Catalog,
    InstanceIndex,
    InstanceRecord,
    InstanceRow,
    Lease,
    ObjectStore,
    ReplaceOutcome,
)
from shared.services import lifecycle, store

logger = logging.getLogger(__name__)

OPERATIONS_PREFIX = "operations/"
PENDING_PREFIX = "jobs/operations/"
VERSIONS_PREFIX = lifecycle.VERSIONS_PREFIX
#: The progress of a running operation is saved at most this often (seconds), and after
#: its last study: a study done again after a cut-off is a no-op.
SAVE_EVERY_S = 2.0
#: The worker's lease: longer than a Lambda function may run (15 minutes), so that it
#: ends only when its holder died.
LEASE = "operations"
LEASE_S = 960.0
#: The request names at most this many studies (the body's 10 MB would hold ~150,000).
MAX_STUDIES = 100_000
#: Errors kept per operation (the count goes on).
MAX_ERRORS = 100
#: A study is listed again at most this many times for instances stored during its update.
_PASSES = 3
_CHUNK = 1 << 20


# ------------------------------------------------------------------ the operation record


@dataclass
class Operation:
    """An update operation as its record keeps it."""

    id: str
    studies: list[str]
    change: dict[str, Any]
    created: str
    key_id: str = ""
    key_label: str = ""
    source_ip: str = ""
    status: str = "running"
    done: int = 0  # studies finished, in the order given
    instances: int = 0  # instances given a new version
    studies_updated: int = 0
    studies_failed: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    updated: str = ""

    def dump(self) -> bytes:
        """The record's bytes."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Operation:
        """The record from its bytes (``ValueError`` when unreadable)."""
        try:
            found = json.loads(data)
            return cls(**found)
        except (TypeError, ValueError) as exc:
            raise ValueError("unreadable operation record") from exc

    def fail(self, message: str) -> None:
        """Keep one error (the first :data:`MAX_ERRORS`)."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def count(self, outcome: StudyUpdate) -> None:
        """Count one study done."""
        self.done += 1
        self.instances += len(outcome.versions)
        if outcome.errors:
            self.studies_failed += 1
            for message in outcome.errors:
                self.fail(message)
        elif outcome.versions or outcome.unchanged:
            self.studies_updated += 1

    def status_json(self) -> dict[str, Any]:
        """The answer of ``GET operations/{id}``: the issue's fields and Azure's."""
        percent = 100 if self.status != "running" else (100 * self.done) // len(self.studies)
        return {
            "id": self.id,
            "operationId": self.id,
            "type": "update-instance",
            "status": self.status,
            "percentComplete": percent,
            "createdTime": self.created,
            "lastUpdatedTime": self.updated or self.created,
            "errors": list(self.errors),
            "results": {
                "studyUpdated": self.studies_updated,
                "studyFailed": self.studies_failed,
                "instanceUpdated": self.instances,
                "errorCount": self.error_count,
                "errors": list(self.errors),
            },
        }


def record_key(operation_id: str) -> str:
    """Where an operation's record is kept."""
    return f"{OPERATIONS_PREFIX}{operation_id}.json"


def marker_key(operation_id: str) -> str:
    """The marker of an operation still to run (its creation wakes the worker)."""
    return f"{PENDING_PREFIX}{operation_id}.json"


def new_id(clock: Callable[[], float] = time.time) -> str:
    """A new operation id: a UUID whose first 48 bits are the time in milliseconds (as
    UUIDv7 lays it out), so that ids sort in the order operations were asked for."""
    millis = int(clock() * 1000) & ((1 << 48) - 1)
    random = uuid.uuid4().int & ((1 << 80) - 1)
    value = (millis << 80) | random
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-7{text[13:16]}-{text[16:20]}-{text[20:]}"


def _valid_id(operation_id: str) -> bool:
    try:
        return str(uuid.UUID(operation_id)) == operation_id
    except ValueError:
        return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------ asking and reading


@dataclass(frozen=True)
class Caller:
    """Who asked (for the audit trail): the key's id and label, the source address."""

    key_id: str = ""
    key_label: str = ""
    source_ip: str = ""


def parse_request(body: bytes) -> tuple[list[str], edit.Change]:
    """The studies and the change of a ``$bulkUpdate`` body; 400 when malformed."""
    try:
        document = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(document, dict):
        raise BadRequest('the body must be {"studyInstanceUids": [...], "changeDataset": {...}}')
    studies = document.get("studyInstanceUids")
    if not isinstance(studies, list) or not studies:
        raise BadRequest("studyInstanceUids must be a non-empty list of Study Instance UIDs")
    if len(studies) > MAX_STUDIES:
        raise BadRequest(f"at most {MAX_STUDIES:,} studies per operation")
    if not all(isinstance(s, str) and valid_uid(s) for s in studies):
        raise BadRequest("studyInstanceUids holds a value that is not a valid UID")
    try:
        change = edit.parse_change(document.get("changeDataset"))
    except edit.ChangeRefused as refused:
        raise BadRequest(f"changeDataset: {refused}") from refused
    return list(dict.fromkeys(studies)), change


def submit(
    body: bytes,
    *,
    objects: ObjectStore,
    caller: Caller,
    clock: Callable[[], float] = time.time,
) -> Operation:
    """Record an operation and mark it to run (the marker wakes the worker)."""
    studies, change = parse_request(body)
    operation = Operation(
        id=new_id(clock),
        studies=studies,
        change=change.as_json(),
        created=_now(),
        key_id=caller.key_id,
        key_label=caller.key_label,
        source_ip=caller.source_ip,
    )
    objects.put(record_key(operation.id), operation.dump())
    objects.put(marker_key(operation.id), b"{}")
    logger.info(
        "update asked",
        extra={"operation": operation.id, "studies": len(studies), "tags": len(change.tags)},
    )
    return operation


def status(operation_id: str, objects: ObjectStore) -> Operation:
    """An operation's record; 404 when there is none."""
    if not _valid_id(operation_id):
        raise NotFound("no operation with this id")
    kept = objects.read(record_key(operation_id))
    if kept is None:
        raise NotFound("no operation with this id")
    try:
        return Operation.load(kept)
    except ValueError as exc:
        raise NotFound("no operation with this id") from exc


# ------------------------------------------------------------------ running


@dataclass(frozen=True)
class Ports:
    """What the worker writes to and reads from (``lease``: None only where one worker runs
    alone, as in tests)."""

    objects: ObjectStore
    index: InstanceIndex
    catalog: Callable[[], Catalog]
    audit: AuditSink | None = None
    lease: Lease | None = None


def pending(objects: ObjectStore) -> Iterator[str]:
    """Ids of operations still to run, oldest first."""
    for info in objects.listing(PENDING_PREFIX):
        name = info.key[len(PENDING_PREFIX) :].removesuffix(".json")
        if _valid_id(name):
            yield name


def run_pending(ports: Ports, *, deadline: Deadline | None = None) -> dict[str, int]:
    """Run every operation still to run, oldest first, until the deadline, while holding
    the lease (the worker's body). Counts of operations ``finished`` and still ``pending``,
    and ``busy`` 1 when another worker held the lease."""
    until = deadline or Deadline.never()
    if ports.lease is None:
        return _run_all(ports, until)
    holder = uuid.uuid4().hex
    counts = {"finished": 0, "pending": 0, "busy": 0}
    while True:
        if not ports.lease.acquire(LEASE, holder, LEASE_S):
            counts["busy"] = 1
            return counts
        try:
            done = _run_all(ports, until)
        finally:
            ports.lease.release(LEASE, holder)
        counts["finished"] += done["finished"]
        counts["pending"] = done["pending"]
        # A marker written while the lease was held woke a worker that left at once: look
        # again now that it is given up.
        if done["pending"] or until.expired() or next(pending(ports.objects), None) is None:
            return counts


def _run_all(ports: Ports, until: Deadline) -> dict[str, int]:
    counts = {"finished": 0, "pending": 0}
    for operation_id in list(pending(ports.objects)):
        if until.expired():
            counts["pending"] += 1
            continue
        finished = run(operation_id, ports, deadline=until)
        counts["finished" if finished else "pending"] += 1
    return counts


def run(operation_id: str, ports: Ports, *, deadline: Deadline | None = None) -> bool:
    """Go on with one operation until it is done (True) or the deadline passes."""
    until = deadline or Deadline.never()
    begun = _running(operation_id, ports.objects)
    if begun is None:
        ports.objects.delete(marker_key(operation_id))
        return True
    operation, change = begun
    saved = time.monotonic()
    while operation.done < len(operation.studies):
        if until.expired():
            _save(ports.objects, operation)
            return False
        study_uid = operation.studies[operation.done]
        outcome = update_study(study_uid, change, ports, operation, deadline=until)
        if not outcome.done:
            _save(ports.objects, operation)
            return False
        operation.count(outcome)
        if time.monotonic() - saved >= SAVE_EVERY_S:
            _save(ports.objects, operation)
            saved = time.monotonic()
    _end(operation, ports.objects)
    return True


def _running(operation_id: str, objects: ObjectStore) -> tuple[Operation, edit.Change] | None:
    """The operation and its change, when it is still to run; None when it is not (done,
    or its record is gone or unreadable). One whose change no longer parses (a record
    written by another version) is ended as failed, saying why."""
    kept = objects.read(record_key(operation_id))
    try:
        operation = Operation.load(kept) if kept is not None else None
    except ValueError:
        return None
    if operation is None or operation.status != "running":
        return None
    try:
        return operation, edit.parse_change(operation.change)
    except edit.ChangeRefused:
        operation.fail("the operation's change can no longer be read")
        _end(operation, objects)
        return None


def _end(operation: Operation, objects: ObjectStore) -> None:
    operation.status = "failed" if operation.error_count else "succeeded"
    _save(objects, operation)
    objects.delete(marker_key(operation.id))
    logger.info(
        "update finished",
        extra={
            "operation": operation.id,
            "status": operation.status,
            "instances": operation.instances,
            "errors": operation.error_count,
        },
    )


def _save(objects: ObjectStore, operation: Operation) -> None:
    operation.updated = _now()
    objects.put(record_key(operation.id), operation.dump())


@dataclass
class StudyUpdate:
    """What updating one study did: the versions written (SOP Instance UID, the version
    replaced, the new one), instances that held the change already, errors, and whether
    every instance was seen (False: the deadline passed; the study is done again)."""

    versions: list[tuple[str, str, str]] = field(default_factory=list)
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = True


def update_study(
    study_uid: str,
    change: edit.Change,
    ports: Ports,
    operation: Operation,
    *,
    deadline: Deadline | None = None,
) -> StudyUpdate:
    """Give every instance of a study the change, one new version each. Instances stored
    in the study while it is updated are updated too (the study is listed again)."""
    until = deadline or Deadline.never()
    started = time.perf_counter()
    result = StudyUpdate()
    seen: set[str] = set()
    for _ in range(_PASSES):
        rows = [r for r in ports.catalog().instances(study_uid) if r.sop_instance_uid not in seen]
        if not rows:
            break
        for row in rows:
            if until.expired():
                result.done = False
                return result
            seen.add(row.sop_instance_uid)
            _update_one(row, change, ports, result)
    if not seen:
        result.errors.append(f"study {study_uid}: not found")
    _audit(ports.audit, operation, study_uid, change, result, started)
    return result


def _update_one(row: InstanceRow, change: edit.Change, ports: Ports, result: StudyUpdate) -> None:
    """Write one instance's new version and point its entry at it."""
    objects, index = ports.objects, ports.index
    sop = row.sop_instance_uid
    try:
        with _new_version(objects, row, change) as made:
            if made is None:
                result.unchanged += 1
                return
            path, instance = made
            record = store.record_of(instance, row.calling_aet, datetime.now(UTC))
            if record.blob_key != row.blob_key:
                objects.copy(row.blob_key, version_key(row.blob_key))
                with path.open("rb") as source:
                    objects.put_stream(
                        record.blob_key,
                        iter(lambda: source.read(_CHUNK), b""),
                        "application/dicom",
                        durable=True,
                    )
            replaced = index.replace(record, moves_study=True)
    except InstanceRejected:
        result.errors.append(f"instance {sop}: the updated instance is not valid")
        return
    except edit.ChangeRefused as refused:
        result.errors.append(f"instance {sop}: {refused}")
        return
    except StorageUnavailable:
        result.errors.append(f"instance {sop}: storage unavailable, not updated")
        return
    _settle(row, record, replaced.outcome, objects, index, result)


def _settle(  # noqa: PLR0913, PLR0917 - one instance's replacement and where it lies
    row: InstanceRow,
    record: InstanceRecord,
    outcome: ReplaceOutcome,
    objects: ObjectStore,
    index: InstanceIndex,
    result: StudyUpdate,
) -> None:
    """After the replacement: the replaced object leaves ``dicom/`` (its copy is kept under
    ``versions/``); when the entry was not replaced, the new object and the copy go."""
    sop, moved = row.sop_instance_uid, record.blob_key != row.blob_key
    if outcome is ReplaceOutcome.REPLACED:
        if moved and not index.references(sop, row.blob_key):
            objects.delete(row.blob_key)
        result.versions.append((sop, _version_id(row.blob_key), record.sha256))
        return
    # Deleted meanwhile (NOT_FOUND), or refused: the new object and the copy are no one's
    # (a deleted instance's versions went to deleted/ with it).
    if not index.references(sop, record.blob_key):
        objects.delete(record.blob_key)
    if moved:
        objects.delete(version_key(row.blob_key))
    if outcome is not ReplaceOutcome.NOT_FOUND:
        result.errors.append(f"instance {sop}: the index refused the update")


@contextmanager
def _new_version(
    objects: ObjectStore, row: InstanceRow, change: edit.Change
) -> Iterator[tuple[Path, Any] | None]:
    """The instance's bytes with the change applied, in a temporary file, validated; None
    when the instance holds the change already. ``StorageUnavailable`` when its object
    cannot be read."""
    with objects.local_file(row.blob_key) as source_path:
        if source_path is None:
            raise StorageUnavailable("the instance's object is missing")
        try:
            header = pydicom.dcmread(str(source_path), stop_before_pixels=True, force=False)
            applied = edit.already_applied(header, change)
        except Exception as exc:  # any parser failure: this instance's error
            raise edit.ChangeRefused("the stored instance cannot be read to be rewritten") from exc
        if applied:
            yield None
            return
        descriptor, name = tempfile.mkstemp(prefix="update-", suffix=".dcm")
        target = Path(name)
        try:
            with source_path.open("rb") as source, os.fdopen(descriptor, "wb") as output:
                try:
                    edit.apply(source, change, output)
                except edit.ChangeRefused:
                    raise
                except Exception as exc:  # as above
                    raise edit.ChangeRefused("the stored instance cannot be rewritten") from exc
            instance = validate_file(target)
            uids = (instance.study_uid, instance.series_uid, instance.sop_instance_uid)
            if uids != (row.study_uid, row.series_uid, row.sop_instance_uid):
                raise edit.ChangeRefused("the update would change a UID")
            yield target, instance
        finally:
            target.unlink(missing_ok=True)


def _audit(  # noqa: PLR0913, PLR0917 - one study's update, as the audit trail keeps it
    sink: AuditSink | None,
    operation: Operation,
    study_uid: str,
    change: edit.Change,
    result: StudyUpdate,
    started: float,
) -> None:
    if sink is None:
        return
    record = audit.update_record(
        operation_id=operation.id,
        key_id=operation.key_id,
        key_label=operation.key_label,
        source_ip=operation.source_ip,
        study_uid=study_uid,
        versions=result.versions,
        keywords=change.keywords(),
        failed=bool(result.errors),
        started=started,
    )
    sink.write(record.as_dict())


# ------------------------------------------------------------------ versions


def version_key(blob_key: str) -> str:
    """Where the bytes an update replaced are kept: the object's key under ``versions/``."""
    return VERSIONS_PREFIX + blob_key.removeprefix(lifecycle.STORED_PREFIX)


def _version_id(blob_key: str) -> str:
    """A version's id: the sha256 of its bytes, which its key ends with."""
    name = blob_key.rsplit("/", 1)[-1].removesuffix(".dcm")
    return name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Version:
    """One version of an instance: its id (sha256 of its bytes), size, when it was
    superseded ('' for the current one)."""

    version_id: str
    size: int
    current: bool
    superseded: str = ""

    def as_json(self) -> dict[str, Any]:
        """As the versions listing answers it."""
        found: dict[str, Any] = {
            "versionId": self.version_id,
            "size": self.size,
            "current": self.current,
        }
        if self.superseded:
            found["superseded"] = self.superseded
        return found


def versions(
    study_uid: str, series_uid: str, sop_uid: str, *, objects: ObjectStore, catalog: Catalog
) -> list[Version]:
    """Every version of an instance kept: the current one first, then the replaced ones,
    newest first. 404 when the instance is neither stored nor has a kept version."""
    found: list[Version] = []
    for row in catalog.instances_by_uid([sop_uid]):
        if (row.study_uid, row.series_uid) == (study_uid, series_uid):
            found.append(Version(_version_id(row.blob_key), row.size, current=True))
    older = []
    for info in objects.listing(f"{VERSIONS_PREFIX}{study_uid}/{series_uid}/{sop_uid}"):
        uids = lifecycle.object_uids(info.key, VERSIONS_PREFIX)
        if uids is None or uids != (study_uid, series_uid, sop_uid):
            continue
        when = datetime.fromtimestamp(info.modified, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        older.append((info.modified, Version(_version_id(info.key), info.size, False, when)))
    current = {v.version_id for v in found}
    found += [v for _, v in sorted(older, key=lambda kv: -kv[0]) if v.version_id not in current]
    if not found:
        raise NotFound("no instance with this UID is stored or kept")
    return found


def version_object(
    study_uid: str, series_uid: str, sop_uid: str, version_id: str, *, objects: ObjectStore
) -> str:
    """The key of a kept (replaced) version's bytes; 404 when there is none."""
    if len(version_id) != 64 or any(c not in "0123456789abcdef" for c in version_id):
        raise NotFound("no version with this id")
    for key in (
        f"{VERSIONS_PREFIX}{study_uid}/{series_uid}/{sop_uid}.{version_id}.dcm",
        f"{VERSIONS_PREFIX}{study_uid}/{series_uid}/{sop_uid}/{version_id}.dcm",
    ):
        if objects.stat(key) is not None:
            return key
    raise NotFound("no version with this id")
