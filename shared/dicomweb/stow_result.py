"""The Store Instances Response Module (PS3.18 Annex I) and the STOW HTTP status rules.

Per-instance failures are data, not exceptions. Failure Reason values:

* 0xC000 Cannot understand: not Part 10, unparseable, truncated, required UID missing or
  invalid, or a body part that is not ``application/dicom``.
* 0xC122 Referenced Transfer Syntax not supported: unknown Transfer Syntax UID.
* 0xC409 Study Instance UID mismatch: the dataset's study differs from the URL's
  (the value dcm4chee-arc uses).
* 0x0111 Duplicate SOP Instance: the SOP Instance UID is stored with different content.
* 0x0110 Processing failure: the PatientID differs from the one stored for the study.
* 0xA700 Out of resources: storage was unavailable; the client may retry.
* 0xA701 Out of resources: the instance would take more memory to read than this archive
  gives one request (a deflated data set inflating beyond the budget); retrying cannot help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
STUDY_UID_MISMATCH = 0xC409
DUPLICATE_SOP_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
TOO_LARGE = 0xA701

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
