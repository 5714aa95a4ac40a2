"""De-identification for WADO ``anonymize``: PS3.15 Annex E Basic Application Level Confidentiality
Profile, applied to a Part 10 file without touching its pixel data.

The action for each attribute is Table E.1-1 ("Basic Prof." column) as shipped by the
``dicom-anonymizer`` package (BSD, Kitware), whose tag lists per action category are scraped
from a dated edition of PS3.15 (``EDITION``). Only that data module is loaded, by path: the
package's own engine (random UIDs, global state, tqdm) is not used.

How each action is applied (PS3.15 §E.1.1, Table E.1-1 legend), at every depth of nesting:

``X``   remove the element.
``Z``   keep it with a zero-length value (a sequence with no items).
``D``   a dummy value consistent with the VR (:func:`_dummy`). A sequence is removed (or
        keeps one dummy item where the object needs one): its items are never kept.
``U``   each UID replaced by :func:`map_uid`, except well-known UIDs (``1.2.840.10008.``).
``K``   keep (a sequence: keep and clean its items).
``C``   no cleaner knows "values of similar meaning", so treated as ``Z/D``.
``Z/D``, ``X/D``, ``X/Z/D``  a non-empty original becomes a dummy (``D``): the dummy holds
        nothing from the original and is valid whatever the attribute's type in the IOD,
        which this code, working on any SOP Class without the PS3.3 module tables, cannot see.
``X/Z`` zero length (``Z``): the table uses X/Z only where the attribute is at most Type 2,
        and an empty value is valid for Types 2 and 3.
``X/Z/U*`` keep the sequence; the instance UIDs inside are replaced (they have action U).

Beyond the table (:data:`EXTRA_ACTIONS`, :func:`_default_action`): person names anywhere
become dummies, UN elements go, free text the table misses (document title, SR text values,
segment and content descriptions) is cleared, an encapsulated PDF becomes a blank page.

An element that is empty in the original stays empty (unless its action is X): there is
nothing to hide and a dummy would invent a value. Private elements, group lengths, curves
(50xx) and overlays (60xx, the whole group, so no Overlay Plane is left without its data)
are removed. The added attributes are listed in :func:`anonymize`.
"""

from __future__ import annotations

import io
import runpy
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.dicom.uid_map import (  # noqa: F401 - DICOM_UID_ROOT, map_uid: names used here before
    DICOM_UID_ROOT,
    map_uid,
    replace_uid,
)

#: Edition of PS3.15 Table E.1-1 used (a data module of ``dicom-anonymizer``).
EDITION = "dicomfields_2026c"
PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
METHOD = "PS3.15 E.1 Basic Profile; o3-dpacs-serverless"  # LO: at most 64 characters

_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
_META_REMOVED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)  # AE titles, private
_ENCAPSULATED_DOCUMENT, _DOCUMENT_LENGTH, _MIME_TYPE = 0x00420011, 0x00420015, 0x00420012
_VERIFYING_OBSERVER_SEQUENCE = 0x0040A073
#: Free text outside Table E.1-1 that this product clears too (docs/anonymization.md): a
#: document's title, segment and content descriptions, and SR text values wherever found.
EXTRA_ACTIONS: Mapping[int, str] = {
    0x00420010: "X/Z",  # Document Title (Encapsulated Document, Type 2)
    0x00700081: "X/Z",  # Content Description (PR, SEG: Type 2)
    0x00620005: "Z/D",  # Segment Label (Type 1)
    0x00620006: "X",  # Segment Description
    0x0040A160: "X",  # Text Value (SR content items)
}
_OVERLAY_DATA, _OVERLAY_COMMENTS = 0x3000, 0x4000
_BURNED_IN_ANNOTATION = 0x00280301
_TEXT = "ANONYMIZED"
_DUMMIES: Mapping[str, object] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "http://anonymized.invalid",
    "PN": "Anonymized",
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"), 0),
    **dict.fromkeys(("OB", "OW", "OD", "OF", "OL", "OV", "UN"), bytes(8)),
}


class BurnedInAnnotation(Exception):
    """The object says Burned In Annotation (0028,0301) = YES: its pixels identify the patient."""


class NotPart10(ValueError):
    """The input is not a readable DICOM Part 10 file."""


@dataclass(frozen=True)
class ActionTable:
    """Basic Profile actions of PS3.15 Table E.1-1, by tag and by repeating-group mask."""

    by_tag: Mapping[int, str]
    masked: tuple[tuple[int, int, str], ...]  # (mask, value, action): tag & mask == value

    def action(self, tag: int) -> str | None:
        """The Basic Profile action of ``tag`` (``None``: not in the table)."""
        found = self.by_tag.get(tag)
        if found is not None:
            return found
        for mask, value, masked_action in self.masked:
            if tag & mask == value:
                return masked_action
        return None


@cache
def action_table() -> ActionTable:
    """Load Table E.1-1 (edition :data:`EDITION`) from the ``dicom-anonymizer`` distribution."""
    relative = f"dicomanonymizer/dicom_anonymization_databases/{EDITION}.py"
    path = Path(str(metadata.distribution("dicom-anonymizer").locate_file(relative)))
    module = runpy.run_path(str(path))  # a data file: tag lists, no imports
    by_tag: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for category, action in _CATEGORIES.items():
        for entry in module[category]:
            if len(entry) == 2:
                by_tag[entry[0] << 16 | entry[1]] = action
            else:  # (group, element, group mask, element mask), e.g. curves 50xx
                group, element, group_mask, element_mask = entry
                masked.append((group_mask << 16 | element_mask, group << 16 | element, action))
    return ActionTable(by_tag=by_tag, masked=tuple(masked))


def anonymize(data: bytes, key: bytes) -> bytes:
    """Part 10 bytes in, Part 10 bytes out: PS3.15 Annex E Basic Application Level
    Confidentiality Profile.

    Raises :class:`NotPart10` for input that is not a Part 10 file and
    :class:`BurnedInAnnotation` (before any change) when Burned In Annotation is YES. Pixel
    Data and the Transfer Syntax are left as they are (never decoded). Added: Patient Identity
    Removed = YES, De-identification Method, De-identification Method Code Sequence
    (113100, DCM) and Longitudinal Temporal Information Modified = REMOVED (PS3.15 §E.1.1);
    File Meta Media Storage SOP Instance UID follows the new SOP Instance UID.
    """
    dataset = _read(data)
    if str(dataset.get(_BURNED_IN_ANNOTATION, DataElement(0, "CS", "")).value).upper() == "YES":
        raise BurnedInAnnotation("the object has burned-in annotation (0028,0301 = YES)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = io.BytesIO()
        try:
            _Cleaner(action_table(), key).clean(dataset)
            _mark(dataset)
            _fix_meta(dataset)
            dataset.save_as(out, enforce_file_format=True)
        except Exception as exc:
            # Values pydicom read but cannot convert or write back (a damaged object):
            # nothing is served rather than a half-cleaned file.
            raise NotPart10("the object cannot be de-identified and written as Part 10") from exc
    return out.getvalue()


def anonymize_json(document: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The Basic Profile applied to attributes in DICOM JSON (a QIDO-RS result): the same
    actions, at every depth, as :func:`anonymize` applies to a file, without the marks it
    adds (a result carries the attributes asked for). Raises :class:`NotPart10` (with no
    value in its message) when the attributes cannot be read or written back."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = Dataset.from_json(dict(document))
            _Cleaner(action_table(), key).clean(dataset)
            cleaned: dict[str, Any] = dataset.to_json_dict()
    except Exception as exc:
        raise NotPart10("the attributes cannot be de-identified") from exc
    return cleaned


def _read(data: bytes) -> Dataset:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise NotPart10("not a DICOM Part 10 file (no 128-byte preamble followed by 'DICM')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise NotPart10("the DICOM file cannot be parsed") from exc
    if "TransferSyntaxUID" not in dataset.file_meta:
        raise NotPart10("File Meta Information has no TransferSyntaxUID")
    return dataset


class _Cleaner:
    """Walks a dataset and its sequences, applying the table's action to each element."""

    def __init__(self, table: ActionTable, key: bytes) -> None:
        self.table = table
        self.key = key

    def clean(self, dataset: Dataset) -> None:
        """Clean ``dataset`` in place, and the items of every sequence it keeps."""
        overlay_groups: set[int] = set()
        for tag in list(dataset.keys()):
            if self._drop_outright(tag, overlay_groups):
                del dataset[tag]
                continue
            element = dataset[tag]  # converts a raw element; never decodes pixel data
            action = self.table.action(tag) or EXTRA_ACTIONS.get(tag) or _default_action(element)
            if action is None:  # not in the table: kept, and a sequence's items cleaned
                self._recurse(element)
                continue
            if self._apply(dataset, element, action) == "X":
                del dataset[tag]
        for tag in [e.tag for e in dataset if e.tag >> 16 in overlay_groups]:
            del dataset[tag]

    @staticmethod
    def _drop_outright(tag: BaseTag, overlay_groups: set[int]) -> bool:
        group, element = tag >> 16, tag & 0xFFFF
        if tag.is_private or (element == 0 and group != 0x0002):  # private; group lengths
            return True
        if group & 0xFF01 == 0x6000 and element in (_OVERLAY_DATA, _OVERLAY_COMMENTS):
            overlay_groups.add(group)  # Overlay Data / Comments are X: drop the whole plane
            return True
        return False

    def _apply(self, dataset: Dataset, element: DataElement, action: str) -> str:
        """Apply ``action``; return the action taken (``X`` means: remove the element)."""
        if element.VR == "SQ":
            return self._apply_to_sequence(element, action)
        taken = _resolve(action, element)
        if taken == "U" and element.VR not in ("UI", "UN"):
            return "X"  # a UID attribute read with another VR: nothing valid to map it to
        if taken == "Z":
            element.clear()
        elif taken == "U" or (taken == "D" and element.VR == "UI"):
            self._map_uids(element)
        elif taken == "D" and element.tag == _ENCAPSULATED_DOCUMENT:
            _replace_document(dataset, element)
        elif taken == "D":
            element.value = _dummy(element.VR)
        return taken

    def _apply_to_sequence(self, element: DataElement, action: str) -> str:
        """A sequence follows its action as a whole, its items are never kept and cleaned
        (Content Sequence, observer and annotation sequences hold names and free text at any
        depth): X removes it; Z and X/Z empty it (zero items); D and the combined D actions
        put one dummy item where the object needs one (Verifying Observer Sequence) and
        otherwise remove it, which leaves valid objects since such sequences are Type 1C or
        3 where they can be absent. K and X/Z/U* (references) are kept, items cleaned."""
        if action in ("K", "X/Z/U*"):
            self._recurse(element)
            return "K"
        if action == "X" or (element.is_empty and "Z" not in action):
            return "X"
        if action in ("Z", "X/Z") or element.is_empty:
            element.value = []
            return "Z"
        items = _dummy_items(element.tag)
        if not items:
            return "X"
        element.value = items
        return "D"

    def _recurse(self, element: DataElement) -> None:
        if element.VR == "SQ" and element.value:
            for item in element.value:
                self.clean(item)

    def _map_uids(self, element: DataElement) -> None:
        if element.is_empty:
            return
        if element.VR == "UN" and isinstance(element.value, bytes):  # implicit VR, unknown tag
            text = element.value.decode("ascii", "replace").strip("\0 ")
            mapped = "\\".join(self._map_one(uid) for uid in text.split("\\"))
            element.value = (mapped + "\0" * (len(mapped) % 2)).encode("ascii")
            return
        values = _as_list(element.value)
        mapped_values = [self._map_one(str(uid)) for uid in values]
        element.value = mapped_values if len(mapped_values) > 1 else mapped_values[0]

    def _map_one(self, uid: str) -> str:
        return replace_uid(uid, self.key)


def _resolve(action: str, element: DataElement) -> str:
    """Reduce a Table E.1-1 action (possibly combined) to one of X, Z, D, U, K."""
    if action in ("X", "U", "K"):
        return action
    if action == "X/Z/U*":
        return "K"  # keep the reference sequence; its instance UIDs have action U themselves
    if element.is_empty:
        return "Z"  # nothing to hide; Type 1 attributes are never empty in a valid object
    if action in ("Z", "X/Z"):
        return "Z"
    return "D"  # D, Z/D, X/D, X/Z/D and C: a dummy is valid whatever the attribute's type


def _default_action(element: DataElement) -> str | None:
    """The action of an attribute Table E.1-1 does not list: a person's name is a dummy
    wherever it is (PN), and a value of unknown representation (UN), which cannot be
    inspected, is removed; everything else is kept."""
    if element.VR == "PN":
        return "Z/D"
    if element.VR == "UN":
        return "X"
    return None


def _dummy_items(tag: int) -> list[Dataset]:
    """Items a cleared sequence keeps: one dummy observer where SR needs it, else none."""
    if tag != _VERIFYING_OBSERVER_SEQUENCE:
        return []
    item = Dataset()
    item.VerifyingObserverName = _DUMMIES["PN"]
    item.VerifyingObserverIdentificationCodeSequence = Sequence([])
    item.VerifyingOrganization = _TEXT
    item.VerificationDateTime = _DUMMIES["DT"]
    return [item]


def _blank_pdf() -> bytes:
    """A valid one-page blank PDF (the dummy of an encapsulated PDF document)."""
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


BLANK_PDF = _blank_pdf()


def _replace_document(dataset: Dataset, element: DataElement) -> None:
    """An encapsulated document cannot be cleaned: a PDF becomes a blank page, anything
    else a dummy value; Encapsulated Document Length follows."""
    mime = str(dataset.get(_MIME_TYPE, DataElement(0, "LO", "")).value or "").strip().lower()
    document = BLANK_PDF if mime == "application/pdf" else bytes(_DUMMIES["OB"])  # type: ignore[call-overload]
    element.value = document + b"\0" * (len(document) % 2)
    if _DOCUMENT_LENGTH in dataset:
        dataset[_DOCUMENT_LENGTH].value = len(document)


def _dummy(vr: str) -> object:
    """A fixed, non-identifying value valid for ``vr`` (PS3.5 §6.2)."""
    return _DUMMIES.get(vr, _TEXT)


def _as_list(value: object) -> list[object]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _mark(dataset: Dataset) -> None:
    """Add the attributes that record the de-identification (PS3.15 §E.1.1, PS3.3 C.7.1.1)."""
    dataset.PatientIdentityRemoved = "YES"
    methods = [str(m) for m in _as_list(dataset.get("DeidentificationMethod", None)) if m]
    if METHOD not in methods:
        methods.append(METHOD)
    dataset.DeidentificationMethod = methods if len(methods) > 1 else methods[0]
    codes = dataset.get("DeidentificationMethodCodeSequence", None)
    items = list(codes) if codes else []
    code_value, scheme, meaning = PROFILE_CODE
    if not any(
        item.get("CodeValue") == code_value and item.get("CodingSchemeDesignator") == scheme
        for item in items
    ):
        item = Dataset()
        item.CodeValue = code_value
        item.CodingSchemeDesignator = scheme
        item.CodeMeaning = meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = Sequence(items)
    dataset.LongitudinalTemporalInformationModified = "REMOVED"


def _fix_meta(dataset: Dataset) -> None:
    """File Meta: follow the new SOP Instance UID; drop AE titles and private information."""
    meta = dataset.file_meta
    for tag in _META_REMOVED:
        if tag in meta:
            del meta[tag]
    if "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if not meta.get("MediaStorageSOPClassUID") and "SOPClassUID" in dataset:
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    for tag in [e.tag for e in meta if e.tag.is_private]:
        del meta[tag]
