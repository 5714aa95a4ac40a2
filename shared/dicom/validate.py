"""Validation of one Part 10 file received by STOW-RS (PS3.10 §7, PS3.18 §10.5)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, AllTransferSyntaxes

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.dicomweb import stow_result

_UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_KNOWN_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in AllTransferSyntaxes)


@dataclass(frozen=True)
class ValidInstance:
    """A parsed instance that passed validation, with the facts the store needs."""

    dataset: Dataset
    data: bytes
    sha256: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str


class InstanceRejected(Exception):
    """The instance cannot be stored; carries a DICOM failure reason."""

    def __init__(
        self, reason: int, message: str, sop_class_uid: str = "", sop_instance_uid: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


def validate(data: bytes, expected_study_uid: str | None = None) -> ValidInstance:
    """Parse and check one Part 10 file; raise :class:`InstanceRejected` with a reason.

    Checks: 128-byte preamble + ``DICM`` + File Meta Information; the whole file parses
    with every element complete (truncated files fail); a known Transfer Syntax; SOP Class,
    SOP Instance, Study and Series Instance UIDs present and valid (PS3.5 §9.1); the Study
    Instance UID equal to the one in the request URL when given.
    """
    if not data:
        raise InstanceRejected(stow_result.CANNOT_UNDERSTAND, "empty body part")
    dataset = _parse(data)
    ts = str(dataset.file_meta.get("TransferSyntaxUID", "") or "").strip()
    uids = {kw: str(dataset.get(kw, "") or "").strip() for kw in _REQUIRED_UIDS}
    sop_class, sop_instance = uids["SOPClassUID"], uids["SOPInstanceUID"]
    sop_class_ref = sop_class if UID(sop_class).is_valid else ""
    sop_instance_ref = sop_instance if UID(sop_instance).is_valid else ""

    def reject(reason: int, message: str) -> InstanceRejected:
        return InstanceRejected(reason, message, sop_class_ref, sop_instance_ref)

    if not ts:
        raise reject(
            stow_result.CANNOT_UNDERSTAND, "File Meta Information has no TransferSyntaxUID"
        )
    if ts not in _KNOWN_TRANSFER_SYNTAXES:
        raise reject(stow_result.TRANSFER_SYNTAX_NOT_SUPPORTED, f"unknown transfer syntax {ts}")
    for keyword, value in uids.items():
        if not value:
            raise reject(stow_result.CANNOT_UNDERSTAND, f"{keyword} is missing")
        if not UID(value).is_valid:
            raise reject(stow_result.CANNOT_UNDERSTAND, f"{keyword} is not a valid UID")
    if expected_study_uid is not None and uids["StudyInstanceUID"] != expected_study_uid:
        raise reject(
            stow_result.STUDY_UID_MISMATCH,
            "StudyInstanceUID differs from the study in the request URL",
        )
    return ValidInstance(
        dataset=dataset,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        transfer_syntax=ts,
    )


def _parse(data: bytes) -> Dataset:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InstanceRejected(
            stow_result.CANNOT_UNDERSTAND,
            "not a DICOM Part 10 file (no 128-byte preamble followed by 'DICM')",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = dcmread(io.BytesIO(data), force=False)
        except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
            raise InstanceRejected(
                stow_result.CANNOT_UNDERSTAND, "the DICOM file cannot be parsed"
            ) from exc
    if any("End of file reached" in str(w.message) for w in caught) or _truncated(dataset):
        raise InstanceRejected(stow_result.CANNOT_UNDERSTAND, "the DICOM file is truncated")
    return dataset


def _truncated(dataset: Dataset) -> bool:
    """Whether any top-level element holds fewer bytes than its length says."""
    for element in dataset._dict.values():  # raw elements, not yet decoded
        if (
            isinstance(element, RawDataElement)
            and element.value is not None
            and element.length != _UNDEFINED_LENGTH
            and len(element.value) != element.length
        ):
            return True
    return False
