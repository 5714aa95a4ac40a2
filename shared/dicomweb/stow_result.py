"""The Store Instances Response Module (PS3.18 Annex I) and the STOW HTTP status rules.

Per-instance failures are data, not exceptions; their Failure Reason values are in
:mod:`shared.dicom.failures` (re-exported here for the response's users).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.dicom.failures import (
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    STUDY_UID_MISMATCH,
    TOO_LARGE,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)

__all__ = [
    "CANNOT_UNDERSTAND",
    "DUPLICATE_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "STUDY_UID_MISMATCH",
    "TOO_LARGE",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "Failed",
    "StoreResult",
    "Stored",
]

_RETRIEVE_URL = "00081190"
_FAILED_SEQUENCE = "00081198"
_REFERENCED_SEQUENCE = "00081199"
_CLASS_UID = "00081150"
_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


@dataclass(frozen=True)
class Stored:
    """An instance that is in the archive after this request (new or identical re-send)."""

    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str
    study_uid: str
    #: The archive held identical bytes under this SOP Instance UID already.
    already_stored: bool = False
    #: A rejection note: the SOP Instance UIDs it names (IOCM).
    rejected: tuple[str, ...] = ()
    #: Stored, and hidden at once: a rejection note named it before it came.
    hidden: bool = False
    #: A rejection note: (SOP Instance UID, sha256 of the version) of each it hid now.
    hid: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Failed:
    """An instance that was not stored, with its failure reason and a log-safe message."""

    reason: int
    message: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


@dataclass
class StoreResult:
    """Outcome of one STOW-RS request."""

    stored: list[Stored] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    study_retrieve_url: str = ""

    @property
    def status(self) -> int:
        """200 all stored, 202 some stored, 409 none stored (PS3.18 Table 10.5.3-1)."""
        if self.stored and not self.failed:
            return 200
        if self.stored:
            return 202
        return 409

    def to_json(self) -> dict[str, Any]:
        """The response dataset in the DICOM JSON model (tags ascending)."""
        document: dict[str, Any] = {}
        if self.stored and self.study_retrieve_url:
            document[_RETRIEVE_URL] = {"vr": "UR", "Value": [self.study_retrieve_url]}
        if self.failed:
            document[_FAILED_SEQUENCE] = {
                "vr": "SQ",
                "Value": [_failed_item(f) for f in self.failed],
            }
        if self.stored:
            document[_REFERENCED_SEQUENCE] = {
                "vr": "SQ",
                "Value": [
                    {
                        _CLASS_UID: {"vr": "UI", "Value": [s.sop_class_uid]},
                        _INSTANCE_UID: {"vr": "UI", "Value": [s.sop_instance_uid]},
                        _RETRIEVE_URL: {"vr": "UR", "Value": [s.retrieve_url]},
                    }
                    for s in self.stored
                ],
            }
        return document


def _failed_item(failure: Failed) -> dict[str, Any]:
    item: dict[str, Any] = {}
    item[_CLASS_UID] = _ui(failure.sop_class_uid)
    item[_INSTANCE_UID] = _ui(failure.sop_instance_uid)
    item[_FAILURE_REASON] = {"vr": "US", "Value": [failure.reason]}
    return item


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}
