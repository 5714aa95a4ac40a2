"""What the index is given and what it answers, in domain words."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index keeps about one stored instance and its parents."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    sha256: str
    size: int
    blob_key: str
    calling_aet: str
    received: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    accession_number: str
    modality: str
    instance_number: str
    study_json: str
    series_json: str
    instance_json: str
    patient_json: str
    #: The whole instance as compressed DICOM JSON (``shared.dicom.metadata``); empty when
    #: too large to keep in the index entry.
    metadata: bytes = b""


class AddOutcome(enum.Enum):
    """What the index did with an instance."""

    STORED = "stored"
    ALREADY_STORED = "already-stored"  # identical content under the same SOP Instance UID
    DIFFERENT_CONTENT = "different-content"  # same SOP Instance UID, other bytes: refused
    PATIENT_MISMATCH = "patient-mismatch"  # the study is stored with another PatientID
    REJECTED = "rejected"  # the index cannot hold this record (too large, invalid): permanent


class ReplaceOutcome(enum.Enum):
    """What the index did with a replacement of an instance's record."""

    REPLACED = "replaced"
    NOT_FOUND = "not-found"  # no instance with this SOP Instance UID
    MOVED = "moved"  # the record names another study or series: a removal and an add
    PATIENT_MISMATCH = "patient-mismatch"  # other instances of the study name another patient
    REJECTED = "rejected"  # the index cannot hold this record (too large, invalid)


@dataclass(frozen=True)
class Entry:
    """An instance's entry as the index holds it: where it sorts and which object it names
    (a removal returns these, so that the caller can sweep the objects no entry names)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    sha256: str
    blob_key: str
    sort_key: str


ChangeKind = Literal["add", "remove", "replace", "restore", "reject"]


@dataclass(frozen=True)
class Change:
    """One committed change of the index, as its change log lists it.

    ``blob_key``: the object the entry names after an add or a replacement, or named before
    a removal; ``previous_key``: a replacement's object before (the one to sweep when no
    entry names it any more). ``position``: the cursor just after this change;
    ``sequence``: the change's number in the feed, 1, 2, 3... without gaps (SQLite: its
    row number; DynamoDB: the number the sequencer gave its log entry; see
    docs/decisions/0008-change-feed.md)."""

    kind: ChangeKind
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    blob_key: str
    previous_key: str = ""
    at: str = ""
    position: str = ""
    sequence: int = 0


@dataclass(frozen=True)
class ChangePage:
    """Changes in commit order, and the cursor to read the next ones from (the one given
    when there were none)."""

    changes: tuple[Change, ...]
    cursor: str


@dataclass(frozen=True)
class Replacement:
    """What a replacement did, and the entry it replaced (None unless REPLACED)."""

    outcome: ReplaceOutcome
    previous: Entry | None = None
