"""IOCM rejection notes (IHE RAD TF-1 §42 Imaging Object Change Management; PS3.3 §A.35.4
Key Object Selection Document; the document titles of CID 7011).

A Key Object Selection document whose Concept Name is one of :data:`CODES` is a *rejection
note*: it is stored and searchable like any instance, and the instances its
CurrentRequestedProcedureEvidenceSequence references are *hidden*: removed from the index
and their objects moved to ``deleted/``, exactly as a DELETE does
(:func:`shared.services.lifecycle.delete`), so that no search or retrieval answers them
and an admin can restore them within the restore window. For each referenced instance a
*rejection record* is kept (``rejections/{study}/{series}/{sop}.json``: the code, the
note's UID, when, whether it was applied). A STOW of a rejected instance later (the note
came first, or the instance is sent again) stores it and hides it at once. 113039 (Data
Retention Policy Expired) deletes as DELETE does: applied once, after which the instance
may be stored again, as after a DELETE.

Ordering, so that a note and a STOW of an instance it names never miss each other: the
note writes the record, then removes the entry; a STOW adds the entry, then reads the
record. Whichever comes second sees the other (both reads are consistent: S3 is
read-after-write consistent, the index's removal reads what it removes).

This module is reached from :func:`shared.services.store.commit`, the code STOW, the
upload path and the gateway (which stores through STOW) all end in; its cost for an
ordinary instance is one read of a record that is not there.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from pydicom import Dataset

from shared.deadline import Deadline
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, NotFound
from shared.ports import Catalog, InstanceIndex, ObjectStore
from shared.services import lifecycle
from shared.services.lifecycle import REJECTIONS_PREFIX, Target, rejection_key

logger = logging.getLogger(__name__)

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
#: Document titles of a rejection note (DCM codes, CID 7011), with their meanings.
CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: The code that deletes (once) rather than hides for good.
RETENTION_EXPIRED = "113039"
#: Job records of rejection notes being applied (:func:`apply_note`).
JOBS_PREFIX = "jobs/reject/"
#: Records listed per page by :func:`listing`, at most.
PAGE = 1000
#: A listing's cursor: a record's key below ``rejections/``.
_CURSOR = re.compile(r"[0-9.]{1,64}/[0-9.]{1,64}/[0-9.]{1,64}\.json")


@dataclass(frozen=True)
class Rejection:
    """One instance a rejection note names: what, by which note, when, and whether it has
    been hidden (``applied``; False: the instance was not stored yet)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    code: str
    note_uid: str
    rejected: str
    applied: bool = False

    @property
    def key(self) -> str:
        """Where the record is kept."""
        return rejection_key(self.study_uid, self.series_uid, self.sop_instance_uid)

    @property
    def target(self) -> Target:
        """The instance, as DELETE names it."""
        return Target(self.study_uid, self.series_uid, self.sop_instance_uid)

    @property
    def hides(self) -> bool:
        """Whether an instance stored under this SOP Instance UID is to be hidden now: always
        for a rejection, once for 113039 (afterwards it may be stored again)."""
        return self.code != RETENTION_EXPIRED or not self.applied

    def dump(self) -> bytes:
        """The record's bytes."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def load(cls, data: bytes) -> Rejection | None:
        """A record read back; None when unreadable."""
        try:
            found = json.loads(data)
            return cls(**{name: found[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            return None

    def as_json(self) -> dict[str, Any]:
        """As the admin listing answers it (no patient data: UIDs, the code, times)."""
        return {
            "studyInstanceUID": self.study_uid,
            "seriesInstanceUID": self.series_uid,
            "sopInstanceUID": self.sop_instance_uid,
            "code": {"value": self.code, "scheme": "DCM", "meaning": CODES.get(self.code, "")},
            "rejectionNoteUID": self.note_uid,
            "rejected": self.rejected,
            "state": "applied" if self.applied else "pending",
        }


def rejection_code(dataset: Dataset) -> str | None:
    """The rejection code of a Key Object Selection document that is a rejection note; None
    for any other instance."""
    if str(dataset.get("SOPClassUID", "")) != KEY_OBJECT_SELECTION:
        return None
    names = dataset.get("ConceptNameCodeSequence") or []
    if len(names) != 1:
        return None
    value = str(names[0].get("CodeValue", "")).strip()
    scheme = str(names[0].get("CodingSchemeDesignator", "")).strip()
    return value if scheme == "DCM" and value in CODES else None


def rejections_of(dataset: Dataset, now: datetime) -> tuple[Rejection, ...]:
    """The instances a rejection note names (none for any other instance), in the note's
    order, each once; references that are not valid UIDs, and the note itself, are left
    out."""
    code = rejection_code(dataset)
    if code is None:
        return ()
    note_uid = str(dataset.get("SOPInstanceUID", ""))
    when = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    found: dict[str, Rejection] = {}
    for study in dataset.get("CurrentRequestedProcedureEvidenceSequence") or []:
        study_uid = str(study.get("StudyInstanceUID", ""))
        for series in study.get("ReferencedSeriesSequence") or []:
            series_uid = str(series.get("SeriesInstanceUID", ""))
            for sop in series.get("ReferencedSOPSequence") or []:
                sop_uid = str(sop.get("ReferencedSOPInstanceUID", ""))
                uids = (study_uid, series_uid, sop_uid)
                if not all(valid_uid(u) for u in uids) or sop_uid == note_uid:
                    continue
                found.setdefault(sop_uid, Rejection(*uids, code, note_uid, when))
    return tuple(found.values())


@dataclass(frozen=True)
class Application:
    """What applying a note did now: the SOP Instance UIDs hidden, and whether every
    instance it names was handled (False: the time ran out; its job record stays and the
    Lifecycle function's schedule, or the note sent again, goes on)."""

    hidden: tuple[str, ...]
    done: bool
    #: (SOP Instance UID, the version hidden: sha256 of its bytes), for the audit trail.
    versions: tuple[tuple[str, str], ...] = ()


def apply_note(  # noqa: PLR0913 - keyword-only: the ports, the window and the deadline
    rejections: tuple[Rejection, ...],
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    deadline: Deadline | None = None,
    catalog: Callable[[], Catalog] | None = None,
) -> Application:
    """Keep a record of each instance a note names, then hide it if it is stored (the
    others are hidden when they arrive), until the deadline: a job record
    (``jobs/reject/{note}.json``, the whole list) is written first, cut down to what is
    left when the time runs out, and removed once every instance is handled, so that one
    cut off is finished by :func:`finish_pending`. A
    record that replaces an applied one stays applied unless the instance was stored
    again meanwhile (a note sent twice, or a second note of a hidden instance, is no
    "pending" one). With ``catalog`` (built when first needed), a study or series left with
    a hidden instance's attributes takes those of one it still holds (as after a DELETE)."""
    if not rejections:
        return Application((), done=True)
    until = deadline or Deadline.never()
    job = job_key(rejections[0].note_uid)
    objects.put(job, json.dumps([asdict(r) for r in rejections]).encode())
    hidden: list[str] = []
    versions: list[tuple[str, str]] = []
    for number, named in enumerate(rejections):
        if number and until.expired():  # the job goes on with what is left
            left = rejections[number:]
            objects.put(job, json.dumps([asdict(r) for r in left]).encode())
            logger.warning("rejection note cut off", extra={"left": len(left)})
            return Application(tuple(hidden), done=False, versions=tuple(versions))
        prior = objects.read(named.key)
        kept = Rejection.load(prior) if prior is not None else None
        rejection = replace(named, applied=kept is not None and kept.applied)
        objects.put(rejection.key, rejection.dump())
        version = _hide(rejection, objects, index, retention_days, catalog)
        if version:
            hidden.append(rejection.sop_instance_uid)
            versions.append((rejection.sop_instance_uid, version))
    objects.delete(job)
    logger.info(
        "rejection note applied",
        extra={"named": len(rejections), "hidden": len(hidden), "code": rejections[0].code},
    )
    return Application(tuple(hidden), done=True, versions=tuple(versions))


def job_key(note_uid: str) -> str:
    """The job record of a rejection note being applied."""
    return f"{JOBS_PREFIX}{note_uid}.json"


def finish_pending(
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    deadline: Deadline | None = None,
    catalog: Callable[[], Catalog] | None = None,
) -> dict[str, int]:
    """Apply again every rejection note cut off before it was done (its job record), until
    the deadline: the scheduled part of a large note. Counts of notes ``finished`` and
    still ``pending``."""
    until = deadline or Deadline.never()
    counts = {"finished": 0, "pending": 0}
    for info in list(objects.listing(JOBS_PREFIX)):
        kept = objects.read(info.key) if not until.expired() else None
        if kept is None:
            counts["pending"] += 1
            continue
        try:
            rejections = tuple(Rejection(**r) for r in json.loads(kept))
        except (ValueError, TypeError):
            objects.delete(info.key)  # unreadable: nothing can be done with it
            continue
        done = apply_note(
            rejections,
            objects=objects,
            index=index,
            retention_days=retention_days,
            deadline=until,
            catalog=catalog,
        ).done
        counts["finished" if done else "pending"] += 1
    return counts


def hide_if_rejected(
    uids: tuple[str, str, str],
    *,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    catalog: Callable[[], Catalog] | None = None,
) -> bool:
    """After the entry of the instance of these (study, series, SOP Instance) UIDs was
    committed: hide it at once when a rejection of it is kept (one read of a record that is
    usually not there). Whether it was hidden."""
    kept = objects.read(rejection_key(*uids))
    rejection = Rejection.load(kept) if kept is not None else None
    if rejection is None or not rejection.hides:
        return False
    return bool(_hide(rejection, objects, index, retention_days, catalog))


def _hide(
    rejection: Rejection,
    objects: ObjectStore,
    index: InstanceIndex,
    retention_days: int,
    catalog: Callable[[], Catalog] | None,
) -> str:
    """Remove the instance as DELETE does; the record says so once its entry is gone. The
    version hidden (the sha256 of its bytes), '' when none was."""
    try:
        deletion = lifecycle.delete(
            rejection.target,
            objects=objects,
            index=index,
            retention_days=retention_days,
            catalog=catalog() if catalog is not None else None,
            rejected=rejection.code != RETENTION_EXPIRED,  # 113039 deletes, as DELETE does
        )
    except NotFound:
        return ""  # not stored (yet)
    if not deletion.removed:
        return ""
    if not rejection.applied:
        objects.put(rejection.key, replace(rejection, applied=True).dump())
    logger.info(
        "rejected instance hidden",
        extra={"sop_instance_uid": rejection.sop_instance_uid, "code": rejection.code},
    )
    return deletion.removed[0].sha256


@dataclass(frozen=True)
class Page:
    """Which rejection records a listing asks for."""

    study_uid: str | None = None
    after: str = ""
    limit: int = PAGE

    @classmethod
    def parse(cls, *, study_uid: str | None, after: str, limit: str | None) -> Page:
        """From the request's parameters; 400 when one is malformed."""
        if study_uid is not None and not valid_uid(study_uid):
            raise BadRequest("StudyInstanceUID is not a valid UID")
        if after and not _CURSOR.fullmatch(after):
            raise BadRequest("after must be the 'next' of a page before")
        try:
            count = int(limit) if limit is not None else PAGE
        except ValueError as exc:
            raise BadRequest("limit must be a whole number") from exc
        if not 1 <= count <= PAGE:
            raise BadRequest(f"limit must be between 1 and {PAGE}")
        return cls(study_uid or None, after, count)


def listing(
    objects: ObjectStore, study_uid: str | None = None, after: str = "", limit: int = PAGE
) -> tuple[list[Rejection], str]:
    """Rejection records (all, or one study's) in key order, after the cursor ``after``, at
    most ``limit``; and the cursor to go on from ('' when there are no more)."""
    prefix = REJECTIONS_PREFIX + (f"{study_uid}/" if study_uid else "")
    start = f"{REJECTIONS_PREFIX}{after}" if after else ""
    found: list[Rejection] = []
    for info in _records(objects, prefix, start):
        if len(found) == limit:
            return found, found[-1].key.removeprefix(REJECTIONS_PREFIX)
        kept = objects.read(info)
        rejection = Rejection.load(kept) if kept is not None else None
        if rejection is not None:
            found.append(rejection)
    return found, ""


def _records(objects: ObjectStore, prefix: str, start: str) -> Iterator[str]:
    for info in objects.listing(prefix, start_after=start):
        if info.key.endswith(".json"):
            yield info.key
