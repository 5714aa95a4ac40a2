"""STOW-RS use case: validate each part, store the file, index it (PS3.18 §10.5)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shared import budget
from shared.deadline import Deadline
from shared.dicom import attributes, failures, metadata
from shared.dicom.validate import PEAK_PER_INFLATED_BYTE, InstanceRejected, ValidInstance, validate
from shared.dicomweb import paths
from shared.dicomweb.multipart import Part
from shared.dicomweb.stow_result import Failed, Stored, StoreResult
from shared.errors import OutOfTime, StorageUnavailable
from shared.ports import AddOutcome, Catalog, InstanceIndex, InstanceRecord, ObjectStore

logger = logging.getLogger(__name__)

_DICOM_PART_TYPES = {"application/dicom", ""}
#: A part left unread when the request ran out of time: storage "out of resources", retry.
#: Days a hidden (rejected) instance's object is kept under ``deleted/`` when the caller
#: does not say (``DeletedRetentionDays``' default).
DEFAULT_RETENTION_DAYS = 30
_NOT_PROCESSED = Failed(
    failures.OUT_OF_RESOURCES, "not processed within the time this API allows: send it again"
)


@dataclass(frozen=True)
class StoreRequest:
    """What the handler extracted from the HTTP request."""

    parts: list[Part]
    calling_aet: str
    base_url: str
    study_uid: str | None = None
    memory_budget: int = field(default_factory=budget.request_budget)
    #: When to stop starting another part (``shared.deadline``).
    deadline: Deadline = field(default_factory=Deadline.never)
    #: Days the objects of instances hidden by a rejection note stay under ``deleted/``.
    retention_days: int = DEFAULT_RETENTION_DAYS


def blob_key(instance: ValidInstance) -> str:
    """S3 key of a stored file: UIDs plus content hash, so other bytes never overwrite.

    One name per instance in its series' folder: a folder per instance would cost the file
    backend a directory and an fsync more per instance (docs/performance.md). The index keeps
    each entry's key, so objects stored under the older form (``{sop}/{sha}.dcm``) are still
    read.
    """
    return (
        f"dicom/{instance.study_uid}/{instance.series_uid}/"
        f"{instance.sop_instance_uid}.{instance.sha256}.dcm"
    )


def store(
    request: StoreRequest,
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    catalog: Callable[[], Catalog] | None = None,
) -> StoreResult:
    """Store every part; per-instance failures go into the result, never half-stored.
    ``catalog``: builds the catalog, read when a rejection note hides instances, so that
    their study and series keep no attribute only they had (:func:`commit`).

    Raises :class:`StorageUnavailable` when nothing was stored and every failure was a
    storage outage, so that the client sees a retryable 503 rather than a 409. Once the
    deadline has passed, the parts not yet begun fail with 0xA700 (send them again) if some
    were stored, a 202 as PS3.18 allows; if none was, :class:`OutOfTime` (503).
    """
    result = StoreResult()
    for number, part in enumerate(request.parts):
        if request.deadline.expired():
            if not result.stored:
                raise OutOfTime(
                    "no instance could be stored within the time this API allows a request:"
                    " retry later, or send fewer instances per request"
                )
            logger.warning(
                "out of time", extra={"parts_not_processed": len(request.parts) - number}
            )
            result.failed += [_NOT_PROCESSED] * (len(request.parts) - number)
            break
        outcome = _store_one(part, request, (objects, index, catalog), clock)
        if isinstance(outcome, Stored):
            result.stored.append(outcome)
        else:
            result.failed.append(outcome)
    studies = {s.study_uid for s in result.stored}
    if len(studies) == 1:
        result.study_retrieve_url = paths.study_url(request.base_url, studies.pop())
    if not result.stored and result.failed and _all_outages(result.failed):
        raise StorageUnavailable("storage is unavailable, retry later")
    return result


def _all_outages(failed: Iterable[Failed]) -> bool:
    return all(f.reason == failures.OUT_OF_RESOURCES for f in failed)


def _store_one(
    part: Part,
    request: StoreRequest,
    ports: tuple[ObjectStore, InstanceIndex, Callable[[], Catalog] | None],
    clock: Callable[[], datetime],
) -> Stored | Failed:
    objects, index, catalog = ports
    media = (part.content_type or "").split(";", 1)[0].strip().lower()
    if media not in _DICOM_PART_TYPES:
        return Failed(failures.CANNOT_UNDERSTAND, "body part is not application/dicom")
    try:
        instance = validate(
            part.content,
            request.study_uid,
            inflate_limit=request.memory_budget // PEAK_PER_INFLATED_BYTE,
        )
    except InstanceRejected as rejected:
        logger.info("instance rejected", extra={"reason": hex(rejected.reason)})
        return Failed(
            rejected.reason, rejected.message, rejected.sop_class_uid, rejected.sop_instance_uid
        )
    return commit(
        instance,
        calling_aet=request.calling_aet,
        base_url=request.base_url,
        objects=objects,
        index=index,
        write=lambda key: objects.put(key, instance.data),
        clock=clock,
        retention_days=request.retention_days,
        deadline=request.deadline,
        catalog=catalog,
    )


def commit(  # noqa: PLR0913 - keyword-only: the instance and where it goes
    instance: ValidInstance,
    *,
    calling_aet: str,
    base_url: str,
    objects: ObjectStore,
    index: InstanceIndex,
    write: Callable[[str], None],
    clock: Callable[[], datetime],
    retention_days: int = DEFAULT_RETENTION_DAYS,
    rejections: bool = True,
    deadline: Deadline | None = None,
    catalog: Callable[[], Catalog] | None = None,
    restored: bool = False,
) -> Stored | Failed:
    """Store a validated instance: ``write(key)`` puts its object under its final key, then
    the index entry is added. Shared by STOW (``write`` puts the bytes) and the upload path
    (``write`` copies the uploaded object) and restores (``restored``: the change log says
    ``restore``); never half-stored.

    With ``rejections`` (all but a restore), IOCM rejection notes are applied here, so on
    every path that stores: a rejection note hides the instances it names, and a new
    instance a kept rejection names is hidden at once (:mod:`shared.services.rejection`;
    hidden objects are kept ``retention_days`` under ``deleted/``; a note naming more
    instances than the ``deadline`` allows is finished by the Lifecycle function's
    schedule; with ``catalog``, their study and series keep no attribute only they had,
    as after a DELETE). The answer is still "stored": the instance is in the archive,
    hidden."""
    now = clock()
    record = _record(instance, calling_aet, now)
    try:
        write(record.blob_key)
        outcome = index.add(record, restored=restored)
    except StorageUnavailable:
        # The put or the index write may have happened (a lost reply): the object is kept,
        # since an index entry may point at it (an identical earlier copy has the same key).
        # An object no entry points at is never served; a retry is idempotent.
        logger.warning("storage unavailable", extra={"sop_instance_uid": instance.sop_instance_uid})
        return _failed(instance, failures.OUT_OF_RESOURCES, "storage unavailable")
    try:
        if outcome is AddOutcome.STORED:
            _ensure_object(objects, record, write)
        elif outcome is AddOutcome.ALREADY_STORED:
            # Identical bytes, but the entry may name the object by an older form of the key.
            _discard_unreferenced(objects, index, record, write)
    except StorageUnavailable:
        logger.warning("storage unavailable", extra={"sop_instance_uid": instance.sop_instance_uid})
        return _failed(instance, failures.OUT_OF_RESOURCES, "storage unavailable")
    if outcome in (AddOutcome.STORED, AddOutcome.ALREADY_STORED):
        url = paths.instance_url(
            base_url, instance.study_uid, instance.series_uid, instance.sop_instance_uid
        )
        stored = Stored(
            instance.sop_class_uid,
            instance.sop_instance_uid,
            url,
            instance.study_uid,
            already_stored=outcome is AddOutcome.ALREADY_STORED,
        )
        if not rejections:
            return stored
        try:
            return _rejections(
                instance, stored, (objects, index, catalog), (retention_days, now, deadline)
            )
        except StorageUnavailable:
            # Stored, but a rejection may be half-applied: a retry applies it again.
            logger.warning(
                "rejection check failed", extra={"sop_instance_uid": stored.sop_instance_uid}
            )
            return _failed(instance, failures.OUT_OF_RESOURCES, "storage unavailable")
    # The index positively refused this object: remove it unless an entry points at its key.
    _discard_unreferenced(objects, index, record)
    return _refused(instance, outcome)


def _rejections(
    instance: ValidInstance,
    stored: Stored,
    ports: tuple[ObjectStore, InstanceIndex, Callable[[], Catalog] | None],
    policy: tuple[int, datetime, Deadline | None],
) -> Stored:
    """Apply a rejection note (again, when resent: a retry finishes one cut off), and hide a
    new instance a kept rejection names. ``policy``: the restore window's days, the time
    of the store, and the request's deadline."""
    objects, index, catalog = ports
    retention_days, now, deadline = policy
    # rejection hides through lifecycle, which stores again through this module.
    from shared.services import rejection  # noqa: PLC0415

    named = rejection.rejections_of(instance.dataset, now)
    rejected: tuple[str, ...] = ()
    hid: tuple[tuple[str, str], ...] = ()
    if named:
        applied = rejection.apply_note(
            named,
            objects=objects,
            index=index,
            retention_days=retention_days,
            deadline=deadline,
            catalog=catalog,
        )
        rejected, hid = applied.hidden, applied.versions
    hidden = not stored.already_stored and rejection.hide_if_rejected(
        (instance.study_uid, instance.series_uid, instance.sop_instance_uid),
        objects=objects,
        index=index,
        retention_days=retention_days,
        catalog=catalog,
    )
    if not rejected and not hidden and not named:
        return stored
    return replace(
        stored, rejected=tuple(r.sop_instance_uid for r in named), hidden=hidden, hid=hid
    )


def _refused(instance: ValidInstance, outcome: AddOutcome) -> Failed:
    if outcome is AddOutcome.DIFFERENT_CONTENT:
        return _failed(
            instance,
            failures.DUPLICATE_SOP_INSTANCE,
            "SOP Instance UID already stored with different content",
        )
    if outcome is AddOutcome.PATIENT_MISMATCH:
        return _failed(
            instance, failures.PROCESSING_FAILURE, "PatientID differs from the stored study's"
        )
    return _failed(
        instance,
        failures.PROCESSING_FAILURE,
        "the instance's attributes exceed what the index can hold",
    )


def _failed(instance: ValidInstance, reason: int, message: str) -> Failed:
    return Failed(reason, message, instance.sop_class_uid, instance.sop_instance_uid)


def _ensure_object(
    objects: ObjectStore, record: InstanceRecord, write: Callable[[str], None]
) -> None:
    """Write the object again when it is gone once its entry is committed: a DELETE's sweep
    of an identical earlier copy (same key) may have checked the index before this entry
    and removed the object after this write. The sweep checks the index again after its
    removal and puts the object back when an entry names it; this check, after the entry,
    covers the entry committed after that (docs/decisions/0007-delete-and-restore.md)."""
    if objects.stat(record.blob_key) is None:
        logger.warning("object gone once indexed: written again", extra={"key": record.blob_key})
        write(record.blob_key)


def _discard_unreferenced(
    objects: ObjectStore,
    index: InstanceIndex,
    record: InstanceRecord,
    write: Callable[[str], None] | None = None,
) -> None:
    """Delete an object no entry points at; keep it when in doubt (an orphan is never
    served). With ``write``, an object an entry points at is written again if it is gone
    (:func:`_ensure_object`: an identical STOW retried after a lost answer)."""
    try:
        if index.references(record.sop_instance_uid, record.blob_key):
            if write is not None:
                _ensure_object(objects, record, write)
            return
        objects.delete(record.blob_key)
    except StorageUnavailable:
        logger.warning("kept an unindexed object", extra={"key": record.blob_key})


def _alphabetic(name: object) -> str:
    """The alphabetic group of a person name ('' for none, or one pydicom cannot split)."""
    try:
        return str(getattr(name, "alphabetic", "") or "")
    except (IndexError, ValueError, TypeError):
        return ""


def record_of(instance: ValidInstance, calling_aet: str, now: datetime) -> InstanceRecord:
    """What the index keeps of a validated instance stored now by ``calling_aet``."""
    return _record(instance, calling_aet, now)


def _record(instance: ValidInstance, calling_aet: str, now: datetime) -> InstanceRecord:
    ds = instance.dataset
    alphabetic = _alphabetic(ds.get("PatientName"))
    document = metadata.instance_json(ds)  # converted once: the levels are picked from it
    packed = metadata.pack(document)

    def level(keywords: tuple[str, ...]) -> str:
        return attributes.dumps(attributes.level_of(document, keywords))

    return InstanceRecord(
        study_uid=instance.study_uid,
        series_uid=instance.series_uid,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax=instance.transfer_syntax,
        sha256=instance.sha256,
        size=instance.size,
        blob_key=blob_key(instance),
        calling_aet=calling_aet,
        received=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        patient_id=attributes.text(ds, "PatientID"),
        issuer_of_patient_id=attributes.text(ds, "IssuerOfPatientID"),
        patient_name=alphabetic,
        study_date=attributes.text(ds, "StudyDate"),
        study_time=attributes.text(ds, "StudyTime"),
        accession_number=attributes.text(ds, "AccessionNumber"),
        modality=attributes.text(ds, "Modality"),
        instance_number=attributes.text(ds, "InstanceNumber"),
        study_json=level(attributes.STUDY_KEYWORDS),
        series_json=level(attributes.SERIES_KEYWORDS),
        instance_json=level(attributes.INSTANCE_KEYWORDS),
        patient_json=level(attributes.PATIENT_KEYWORDS),
        metadata=packed if len(packed) <= metadata.MAX_STORED else b"",
    )
