"""Delete and restore a study, a series or an instance (``admin`` keys), with a restore window.

A deletion removes the index entries first (:meth:`InstanceIndex.remove`: one transaction
on SQLite, one per instance on DynamoDB, each whole), so that from the answer on no search
or retrieval finds them; then it *sweeps* the target's objects: each object under the
target's folder of ``dicom/`` that no index entry names is moved to ``deleted/`` (same key
after the prefix) and removed from ``dicom/``, or only removed when the restore window is
0 days. The bucket's lifecycle rule (``DeletedRetentionDays``) purges ``deleted/``.

A deletion first writes its job record (``jobs/delete/...``: when it began), removed once
its sweep is done. One cut off after the index changed (a crash, the time of a request)
leaves objects under ``dicom/`` that no entry names (never served): the next DELETE of the
same target finds the record and sweeps every object older than it; a restore takes them
too. So that a sweep never takes the object of a STOW in flight (written before its index
entry), it takes an unnamed object only when this deletion removed its entry, when it was
there before a cut-off deletion began, or when it is older than :data:`SWEEP_GRACE_S`.

A restore takes the newest kept copy of each instance of the target: under ``deleted/``,
or under ``dicom/`` with no entry naming it; it re-validates the bytes and stores them with
STOW's own code path (``store.commit``): the object is copied back byte for byte and the
index entry rebuilt from the bytes, with every count, substring posting and de-identified
lookup an add writes. An instance stored again meanwhile with other content is a conflict
(the stored one is kept).

A study, series and patient carry the attributes of the instance stored last in them:
when a deletion removes that one, each parent that remains takes those of an instance it
still holds (:func:`refresh_parents`, :func:`refresh_patient`), so that no search finds a
value only a deleted instance had.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.deadline import Deadline
from shared.dicom import failures
from shared.dicom.validate import InstanceRejected, validate
from shared.dicomweb.query import parse
from shared.dicomweb.stow_result import Stored
from shared.errors import NotFound
from shared.ports import (
    Catalog,
    Entry,
    InstanceIndex,
    InstanceRow,
    ObjectInfo,
    ObjectStore,
    PatientRow,
    StudyRow,
)
from shared.services import store

logger = logging.getLogger(__name__)

STORED_PREFIX = "dicom/"
DELETED_PREFIX = "deleted/"
JOBS_PREFIX = "jobs/delete/"
#: The bytes metadata updates replaced (:mod:`shared.services.operations`); a deletion
#: moves a target's under ``deleted/versions/`` with it, a restore brings them back.
VERSIONS_PREFIX = "versions/"
DELETED_VERSIONS_PREFIX = DELETED_PREFIX + VERSIONS_PREFIX
#: Rejection records of IOCM rejection notes (:mod:`shared.services.rejection`), one per
#: instance a note names; a restore of the instance forgets its record.
REJECTIONS_PREFIX = "rejections/"
#: An object under ``dicom/`` that no entry names and that this deletion did not unindex is
#: swept only once older than this (seconds): a STOW writes its object before its index
#: entry, and a STOW lasts at most a Lambda's 15 minutes.
SWEEP_GRACE_S = 3600.0
#: An instance is read whole to give its series or study its attributes again; larger
#: ones (from the upload path) are not, and the parent keeps what it had.
MAX_REFRESH_BYTES = 64 << 20
PATIENT_ID = "00100020"


@dataclass(frozen=True)
class Target:
    """A study, one of its series, or one of that series' instances."""

    study_uid: str
    series_uid: str | None = None
    sop_instance_uid: str | None = None

    @property
    def level(self) -> str:
        """STUDY, SERIES or INSTANCE."""
        if self.sop_instance_uid is not None:
            return "INSTANCE"
        return "SERIES" if self.series_uid is not None else "STUDY"

    def folder(self, prefix: str = STORED_PREFIX) -> str:
        """The key prefix under which the target's objects lie (an instance's: its series'
        folder and its UID, which :meth:`holds` then checks)."""
        key = f"{prefix}{self.study_uid}/"
        if self.series_uid is not None:
            key += f"{self.series_uid}/"
            if self.sop_instance_uid is not None:
                key += self.sop_instance_uid
        return key

    def holds(self, uids: tuple[str, str, str]) -> bool:
        """Whether an object of these (study, series, SOP Instance) UIDs is the target's."""
        study, series, sop = uids
        return (
            study == self.study_uid
            and self.series_uid in (None, series)
            and self.sop_instance_uid in (None, sop)
        )


def object_uids(key: str, prefix: str = STORED_PREFIX) -> tuple[str, str, str] | None:
    """(study, series, SOP Instance UID) of an object key, in STOW's form
    (``dicom/{study}/{series}/{sop}.{sha256}.dcm``) or the older one
    (``dicom/{study}/{series}/{sop}/{sha256}.dcm``); None for any other key."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) == 4:  # the older form: a folder per instance
        return parts[0], parts[1], parts[2]
    if len(parts) != 3 or not parts[2].endswith(".dcm"):
        return None
    sop, dot, _ = parts[2].removesuffix(".dcm").rpartition(".")
    return (parts[0], parts[1], sop) if dot and sop else None


def rejection_key(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """Where the rejection record of an instance is kept."""
    return f"{REJECTIONS_PREFIX}{study_uid}/{series_uid}/{sop_instance_uid}.json"


def deleted_key(key: str) -> str:
    """Where a deleted object is kept during the restore window."""
    return DELETED_PREFIX + key.removeprefix(STORED_PREFIX)


def stored_key(key: str) -> str:
    """The key under ``dicom/`` of an object kept under ``deleted/``."""
    return STORED_PREFIX + key.removeprefix(DELETED_PREFIX)


# ------------------------------------------------------------------ delete


@dataclass(frozen=True)
class Deletion:
    """What one DELETE did: the index entries it removed, the objects it moved to
    ``deleted/`` (or purged), and whether every object of the target was swept (False:
    the time ran out; the same DELETE goes on)."""

    removed: tuple[Entry, ...]
    swept: int
    done: bool
    retention_days: int

    @property
    def instances(self) -> tuple[str, ...]:
        """SOP Instance UIDs whose entries this deletion removed."""
        return tuple(e.sop_instance_uid for e in self.removed)


def delete(  # noqa: PLR0913 - keyword-only: the target, the ports and the request's context
    target: Target,
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    deadline: Deadline | None = None,
    clock: Callable[[], float] = time.time,
    catalog: Catalog | None = None,
    rejected: bool = False,
) -> Deletion:
    """Delete the target: its index entries, then its objects (kept under ``deleted/`` for
    ``retention_days``; 0: removed). 404 when the index holds nothing of it and no object
    is left to sweep. ``StorageUnavailable`` (503) when storage fails: every object not yet
    swept is kept, and the same DELETE goes on where this one stopped (its job record,
    :func:`job_key`, says when the first began). With ``catalog``, a study or series that
    remains takes again the attributes of an instance it holds when they were those of an
    instance removed (:func:`refresh_parents`)."""
    until = deadline or Deadline.never()
    job = _job(objects, target, clock)
    patient = _patient_of(catalog, target.study_uid) if catalog is not None else ""
    removed = index.remove(
        target.study_uid,
        target.series_uid,
        target.sop_instance_uid,
        until=until.expired,
        rejected=rejected,  # the change feed says reject
    )
    named = job.keys | {e.blob_key for e in removed}
    if removed:  # a copy made by the sweep may date the original anew: name it
        objects.put(job_key(target), replace(job, keys=named).dump(target.level))
    if catalog is not None and removed:
        _refresh(target, removed, patient, objects, index, catalog)
    swept, done = 0, not until.expired()  # expired: the removal may have stopped part-way
    for info in _objects_of(objects, target, STORED_PREFIX):
        if until.expired():
            done = False
            break
        uids = object_uids(info.key)
        if uids is None or not _sweepable(info, named, job, clock()):
            continue
        if index.references(uids[2], info.key):
            continue  # stored again meanwhile
        swept += _sweep_one(info.key, uids[2], objects, index, retention_days)
    if done:
        swept += _move_all(
            objects, target, VERSIONS_PREFIX, DELETED_VERSIONS_PREFIX, retention_days
        )
        objects.delete(job_key(target))
    if not removed and not swept and done and job.fresh:
        raise NotFound(f"no {target.level.lower()} with this UID is stored")
    logger.info(
        "deleted",
        extra={"level": target.level, "removed": len(removed), "swept": swept, "done": done},
    )
    return Deletion(removed, swept, done, retention_days)


def _refresh(  # noqa: PLR0913, PLR0917 - what was removed and the ports
    target: Target,
    removed: tuple[Entry, ...],
    patient: str,
    objects: ObjectStore,
    index: InstanceIndex,
    catalog: Catalog,
) -> None:
    """The study, series and patient left by a removal no longer show its values."""
    if target.series_uid is not None:
        refresh_parents(target.study_uid, removed, objects=objects, index=index, catalog=catalog)
    if patient:
        refresh_patient(patient, objects=objects, index=index, catalog=catalog)


def refresh_parents(
    study_uid: str,
    removed: tuple[Entry, ...],
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    catalog: Catalog,
) -> int:
    """After instances of a study were removed and others remain: a series' and the
    study's attributes are those of the instance stored last in it; when that instance was
    removed they hold values no remaining instance has (a wrongly sent instance's
    description, or name). Each such parent takes again the attributes of one of its
    remaining instances (its record rebuilt from its bytes: ``index.replace``). How many
    instances were so replaced."""
    rows = list(catalog.instances(study_uid))
    if not rows:
        return 0
    series = {s.series_uid: s for s in catalog.series_of_study(study_uid)}
    again: list[InstanceRow] = []
    for series_uid in sorted({e.series_uid for e in removed}):
        members = [r for r in rows if r.series_uid == series_uid]
        held = series.get(series_uid)
        if members and held is not None and all(m.series_attrs != held.attrs for m in members):
            again.append(members[-1])
    study = next(iter(catalog.studies_by_uid([study_uid])), None)
    if study is not None and all(r.study_attrs != study.attrs for r in rows):
        again.append(rows[-1])  # the last: the study takes its attributes
    return sum(_store_again(row, objects, index) for row in again)


def refresh_patient(
    patient_id: str, *, objects: ObjectStore, index: InstanceIndex, catalog: Catalog
) -> int:
    """After instances of a patient were removed: the patient takes the attributes of the
    instance stored last for it; when no remaining instance has them (that one was
    removed), it takes those of an instance of its newest study. How many instances were
    so replaced (0 or 1)."""
    patients = [
        p
        for p in catalog.search(parse({"PatientID": [patient_id]}, "PATIENT")).rows
        if isinstance(p, PatientRow) and _text(p.attrs, PATIENT_ID) == patient_id
    ]
    if len(patients) != 1:  # none left, or several issuers: leave them
        return 0
    held = patients[0].attrs
    newest: InstanceRow | None = None
    for study in catalog.search(parse({"PatientID": [patient_id]}, "STUDY")).rows:
        if not isinstance(study, StudyRow) or _text(study.attrs, PATIENT_ID) != patient_id:
            continue
        rows = list(catalog.instances(study.study_uid))
        if any(_patient_part(r.study_attrs, held) == held for r in rows):
            return 0  # the patient's attributes are an instance's that remains
        newest = newest or (rows[-1] if rows else None)
    return _store_again(newest, objects, index) if newest is not None else 0


def _text(attrs: dict[str, Any], tag: str) -> str:
    values = (attrs.get(tag) or {}).get("Value") or [""]
    return str(values[0] or "")


def _patient_part(study_attrs: dict[str, Any], patient_attrs: dict[str, Any]) -> dict[str, Any]:
    """The patient's attributes as an instance's study attributes hold them (the study
    level repeats the patient's)."""
    return {tag: study_attrs.get(tag) for tag in patient_attrs}


def _patient_of(catalog: Catalog, study_uid: str) -> str:
    study = next(iter(catalog.studies_by_uid([study_uid])), None)
    return _text(study.attrs, PATIENT_ID) if study is not None else ""


def _store_again(row: InstanceRow, objects: ObjectStore, index: InstanceIndex) -> int:
    """Replace an instance's record by one rebuilt from its bytes (its parents take its
    attributes again); 1 when done."""
    if row.size > MAX_REFRESH_BYTES:
        logger.warning("attributes of a removed instance kept", extra={"study": row.study_uid})
        return 0
    try:
        instance = validate(objects.get(row.blob_key))
    except InstanceRejected:
        return 0
    record = store.record_of(instance, row.calling_aet, datetime.now(UTC))
    index.replace(replace(record, blob_key=row.blob_key))
    return 1


def finish_pending(
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    deadline: Deadline | None = None,
    catalog: Catalog | None = None,
) -> dict[str, int]:
    """Go on with every deletion cut off before it was done (its job record), as the same
    DELETE sent again would, until the deadline: the scheduled part of a deletion, so that
    one cut off finishes even when no client sends it again. Counts of deletions
    ``finished`` and still ``pending``."""
    until = deadline or Deadline.never()
    counts = {"finished": 0, "pending": 0}
    for target in list(pending(objects)):
        if until.expired():
            counts["pending"] += 1
            continue
        try:
            deletion = delete(
                target,
                objects=objects,
                index=index,
                retention_days=retention_days,
                deadline=until,
                catalog=catalog,
            )
        except NotFound:  # an unreadable record: begun again, and nothing was left
            counts["finished"] += 1
            continue
        counts["finished" if deletion.done else "pending"] += 1
    return counts


def job_key(target: Target) -> str:
    """The record of a deletion under way (its start), kept until its sweep is done."""
    return f"{JOBS_PREFIX}{target.folder('').rstrip('/')}.json"


def target_of_job(key: str) -> Target | None:
    """The target of a deletion's job record (:func:`job_key`); None for another key."""
    if not key.startswith(JOBS_PREFIX) or not key.endswith(".json"):
        return None
    parts = key[len(JOBS_PREFIX) : -len(".json")].split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        return None
    return Target(*parts)


def pending(objects: ObjectStore) -> Iterator[Target]:
    """Targets of deletions cut off before their sweep was done (their job records): a
    DELETE of each finishes it."""
    for info in objects.listing(JOBS_PREFIX):
        target = target_of_job(info.key)
        if target is not None:
            yield target


@dataclass(frozen=True)
class _Job:
    """A deletion's record: when it began, the object keys of the entries it removed."""

    started: float
    keys: frozenset[str] = frozenset()
    fresh: bool = True  # begun by this call

    def dump(self, level: str) -> bytes:
        return json.dumps(
            {"started": self.started, "level": level, "keys": sorted(self.keys)}
        ).encode()


def _job(objects: ObjectStore, target: Target, clock: Callable[[], float]) -> _Job:
    """The record of a deletion of ``target`` cut off before it was done, else a new one
    (written)."""
    kept = objects.read(job_key(target))
    if kept is not None:
        try:
            found = json.loads(kept)
            return _Job(float(found["started"]), frozenset(found.get("keys") or ()), fresh=False)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: begin again
    job = _Job(clock())
    objects.put(job_key(target), job.dump(target.level))
    return job


def _sweep_one(
    key: str, sop_instance_uid: str, objects: ObjectStore, index: InstanceIndex, days: int
) -> int:
    """Move one object no entry named to ``deleted/`` (1), or put it back when an identical
    STOW named it meanwhile (0).

    Checking the index and then removing the object is not atomic: a STOW of the same bytes
    (the same key) may commit its entry in between. So the object is copied first (even
    with a restore window of 0 days), removed, and the index asked again: an entry naming
    it now is put back from the copy. A STOW whose entry commits after that second check
    finds its object gone and writes it again (``store.commit``); one of the two always
    sees the other (docs/decisions/0007-delete-and-restore.md)."""
    kept = deleted_key(key)
    if objects.stat(key) is None:
        return 0  # another sweep of the same object took it (a rejection hid it twice)
    objects.copy(key, kept)
    objects.delete(key)
    if index.references(sop_instance_uid, key):
        objects.copy(kept, key)
        objects.delete(kept)
        logger.info("an object stored again during its sweep was put back", extra={"key": key})
        return 0
    if days <= 0:
        objects.delete(kept)
    return 1


def _move_all(objects: ObjectStore, target: Target, source: str, goal: str, days: int) -> int:
    """Move the target's objects under ``source`` to the same keys under ``goal`` (only
    remove them when ``days`` is 0): an instance's replaced versions follow it into the
    restore window and back. How many were moved."""
    moved = 0
    for info in list(_objects_of(objects, target, source)):
        if days > 0:
            objects.copy(info.key, goal + info.key.removeprefix(source))
        objects.delete(info.key)
        moved += 1
    return moved


def _sweepable(info: ObjectInfo, named: frozenset[str], job: _Job, now: float) -> bool:
    """Whether an object of the target no entry may name any more can be swept: an entry
    this deletion removed named it, or it is older than a STOW lasts, or it was there when a
    deletion cut off began (whose STOWs in flight have long since added their entries)."""
    if info.key in named or now - info.modified >= SWEEP_GRACE_S:
        return True
    return not job.fresh and info.modified <= job.started


def _objects_of(objects: ObjectStore, target: Target, prefix: str) -> Iterator[ObjectInfo]:
    """The target's objects under ``prefix`` (``dicom/`` or ``deleted/``), in key order."""
    for info in objects.listing(target.folder(prefix)):
        uids = object_uids(info.key, prefix)
        if uids is not None and target.holds(uids):
            yield info


# ------------------------------------------------------------------ restore


@dataclass
class Restoration:
    """What one restore did: SOP Instance UIDs stored again, already stored (nothing to
    do), in conflict (stored again meanwhile with other content: kept), failed (the kept
    bytes are no longer a valid instance, or storage failed); ``done`` False when the time
    ran out (the same restore goes on)."""

    restored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    done: bool = True
    #: SOP Instance UID -> the version restored (the sha256 its kept key names).
    versions: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """The answer's body."""
        return {
            "restored": len(self.restored),
            "alreadyStored": len(self.already),
            "conflicts": self.conflicts,
            "failed": self.failed,
            "done": self.done,
        }


def restore(  # noqa: PLR0913 - keyword-only: the target, the ports and the request's context
    target: Target,
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    calling_aet: str,
    base_url: str,
    deadline: Deadline | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Restoration:
    """Store again, byte for byte, the target's instances kept since their deletion. 404
    when none is kept (never deleted, or purged)."""
    until = deadline or Deadline.never()
    found = _kept(objects, index, target)
    if not found:
        raise NotFound(f"no deleted {target.level.lower()} with this UID is kept")
    _move_all(objects, target, DELETED_VERSIONS_PREFIX, VERSIONS_PREFIX, days=1)
    result = Restoration()
    for sop, key in sorted(found.items()):
        if until.expired():
            result.done = False
            break
        uids = object_uids(key, DELETED_PREFIX)
        if uids is not None:  # a restored instance is no longer rejected
            objects.delete(rejection_key(*uids))
        outcome = _restore_one(key, objects, index, calling_aet, base_url, clock)
        getattr(result, outcome).append(sop)
        if outcome == "restored":
            result.versions[sop] = key.removesuffix(".dcm").rsplit(".", 1)[-1].rsplit("/", 1)[-1]
        if outcome in ("restored", "already") and key.startswith(DELETED_PREFIX):
            objects.delete(key)
    logger.info(
        "restored",
        extra={
            "level": target.level,
            "restored": len(result.restored),
            "conflicts": len(result.conflicts),
            "failed": len(result.failed),
            "done": result.done,
        },
    )
    return result


def _kept(objects: ObjectStore, index: InstanceIndex, target: Target) -> dict[str, str]:
    """SOP Instance UID -> the key under ``deleted/`` of its newest kept copy: one kept
    there, or an object under ``dicom/`` that no entry names (a deletion cut off before its
    sweep), copied there first (a refused restore removes the object it wrote)."""
    newest: dict[str, ObjectInfo] = {}
    for prefix in (DELETED_PREFIX, STORED_PREFIX):
        for info in _objects_of(objects, target, prefix):
            uids = object_uids(info.key, prefix)
            if uids is None or (prefix == STORED_PREFIX and index.references(uids[2], info.key)):
                continue
            held = newest.get(uids[2])
            if held is None or info.modified > held.modified:
                newest[uids[2]] = info
    found = {}
    for sop, info in newest.items():
        found[sop] = info.key
        if info.key.startswith(STORED_PREFIX):
            found[sop] = deleted_key(info.key)
            objects.copy(info.key, found[sop])
    return found


def _restore_one(  # noqa: PLR0913, PLR0917 - one instance and where it goes
    key: str,
    objects: ObjectStore,
    index: InstanceIndex,
    calling_aet: str,
    base_url: str,
    clock: Callable[[], datetime],
) -> str:
    """Store one kept object again; which list of :class:`Restoration` it belongs to."""
    try:
        instance = validate(objects.get(key))
    except InstanceRejected:
        logger.warning("a kept object is not a valid instance", extra={"key": key})
        return "failed"

    def write(final: str) -> None:
        if final != key:
            objects.copy(key, final)

    outcome = store.commit(
        instance,
        calling_aet=calling_aet,
        base_url=base_url,
        objects=objects,
        index=index,
        write=write,
        clock=clock,
        restored=True,
        rejections=False,
    )
    if isinstance(outcome, Stored):
        return "already" if outcome.already_stored else "restored"
    if outcome.reason == failures.DUPLICATE_SOP_INSTANCE:
        return "conflicts"
    return "failed"
