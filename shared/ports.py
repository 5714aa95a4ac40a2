"""The few storage operations the services need, as Protocols typed with our dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


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


class AddOutcome(enum.Enum):
    """What the index did with an instance."""

    STORED = "stored"
    ALREADY_STORED = "already-stored"  # identical content under the same SOP Instance UID
    DIFFERENT_CONTENT = "different-content"  # same SOP Instance UID, other bytes: refused
    PATIENT_MISMATCH = "patient-mismatch"  # the study is stored with another PatientID


class BlobStore(Protocol):
    """Part 10 files by key."""

    def put(self, key: str, data: bytes) -> None:
        """Store bytes under key (overwriting identical content is harmless)."""

    def delete(self, key: str) -> None:
        """Remove the object under key, if any."""


class InstanceIndex(Protocol):
    """The patient/study/series/instance index."""

    def add(self, record: InstanceRecord) -> AddOutcome:
        """Add an instance atomically with its parents' counters and aggregates."""
