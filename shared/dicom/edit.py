"""Metadata update of stored instances (``POST /studies/$bulkUpdate``): the DICOM part.

A change is a DICOM JSON data set (PS3.18 F.2) of new values for patient and study
attributes. :func:`parse_change` checks it, :func:`apply` writes a new Part 10 file with it,
:func:`already_applied` says whether an instance already holds it (a retried update).

Attributes an update may change (:data:`UPDATABLE`), none a UID or a sequence:

Patient: PatientName, PatientID, IssuerOfPatientID, TypeOfPatientID, OtherPatientNames,
PatientBirthName, PatientMotherBirthName, PatientBirthDate, PatientBirthTime, PatientSex,
PatientAge, PatientSize, PatientWeight, PatientAddress, PatientTelephoneNumbers, EthnicGroup,
Occupation, PatientComments, MedicalAlerts, Allergies, PregnancyStatus, SmokingStatus,
AdditionalPatientHistory, PatientReligiousPreference, MilitaryRank, BranchOfService,
CountryOfResidence, RegionOfResidence, ResponsiblePerson, ResponsibleOrganization.

Study: AccessionNumber, StudyDescription, StudyDate, StudyTime, StudyID,
ReferringPhysicianName, PhysiciansOfRecord, NameOfPhysiciansReadingStudy,
AdmittingDiagnosesDescription.

The new file keeps the preamble, the File Meta Information (group length recomputed), the
transfer syntax and the encoding the data set was actually written in; the elements before
the pixel data are re-encoded by pydicom (retired group lengths (gggg,0000) are dropped, as
pydicom writes none), and everything from the pixel data element on is copied byte for byte,
a chunk at a time. A Deflated data set is inflated and written again whole.

Nothing here logs or raises with a value of the data set: messages name tags only.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from pydicom import Dataset, config, dcmread, dcmwrite
from pydicom.charset import convert_encodings, decode_bytes, encode_string, python_encoding
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName, validate_value

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs

_PATIENT = (
    "PatientName PatientID IssuerOfPatientID TypeOfPatientID OtherPatientNames"
    " PatientBirthName PatientMotherBirthName PatientBirthDate PatientBirthTime PatientSex"
    " PatientAge PatientSize PatientWeight PatientAddress PatientTelephoneNumbers EthnicGroup"
    " Occupation PatientComments MedicalAlerts Allergies PregnancyStatus SmokingStatus"
    " AdditionalPatientHistory PatientReligiousPreference MilitaryRank BranchOfService"
    " CountryOfResidence RegionOfResidence ResponsiblePerson ResponsibleOrganization"
)
_STUDY = (
    "AccessionNumber StudyDescription StudyDate StudyTime StudyID ReferringPhysicianName"
    " PhysiciansOfRecord NameOfPhysiciansReadingStudy AdmittingDiagnosesDescription"
)
#: Keyword -> level ("PATIENT" or "STUDY") of every attribute an update may change.
UPDATABLE: dict[str, str] = {
    **dict.fromkeys(_PATIENT.split(), "PATIENT"),
    **dict.fromkeys(_STUDY.split(), "STUDY"),
}
#: Most attributes one change may hold (there are fewer updatable ones; a guard anyway).
MAX_TAGS = 64
#: Specific Character Set written when a new value does not fit the data set's own.
UTF8 = "ISO_IR 192"

_UPDATABLE_TAGS = frozenset(int(tag_for_keyword(keyword) or 0) for keyword in UPDATABLE)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_DEFAULT_REPERTOIRE = python_encoding["ISO_IR 6"]
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
#: VRs whose values may hold a backslash (for the others it separates values).
_BACKSLASH_ALLOWED = frozenset({"ST", "LT", "UT"})


class ChangeRefused(ValueError):
    """A change dataset the archive will not apply; str(exc) is a short reason for a 400
    (never echoes values)."""


@dataclass(frozen=True)
class Change:
    """A checked change: the new values, by tag (an element with no value = set empty)."""

    dataset: Dataset
    tags: tuple[int, ...]  # sorted

    def keywords(self) -> tuple[str, ...]:
        """The changed attributes' keywords, in tag order."""
        return tuple(keyword_for_tag(tag) for tag in self.tags)

    def as_json(self) -> dict[str, Any]:
        """The change as DICOM JSON (what :func:`parse_change` makes the same change of)."""
        document: dict[str, Any] = self.dataset.to_json_dict()
        return document


def parse_change(document: object) -> Change:
    """Check a DICOM JSON change dataset; raise :class:`ChangeRefused` with the reason.

    Refused: anything but a non-empty object of at most :data:`MAX_TAGS` attributes; a key
    that is not 8 hex digits; a tag not in :data:`UPDATABLE`; a missing "vr" or one other than
    the data dictionary's; BulkDataURI or InlineBinary; more than one value where the VM is
    1; a value its VR does not allow (pydicom's validation), or a backslash inside a value
    of a VR where it separates values.
    """
    if not isinstance(document, dict):
        raise ChangeRefused("the change dataset must be a DICOM JSON object")
    if not document:
        raise ChangeRefused("the change dataset is empty")
    if len(document) > MAX_TAGS:
        raise ChangeRefused(f"the change dataset has more than {MAX_TAGS} attributes")
    dataset = Dataset()
    for key, attribute in document.items():
        tag = _updatable_tag(key)
        _check_attribute(tag, attribute)
        element = _element(key, attribute)
        _check_value(element)
        if element.tag in dataset:
            raise ChangeRefused(f"{_tag_name(int(element.tag))} is given twice")
        dataset.add(element)
    return Change(dataset=dataset, tags=tuple(int(element.tag) for element in dataset))


def _element(key: str, attribute: dict[str, Any]) -> DataElement:
    """One attribute made a pydicom element (one at a time: a refusal names its tag)."""
    tag = int(key, 16)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            element: DataElement = Dataset.from_json({key: attribute})[tag]
    except Exception as exc:
        raise ChangeRefused(
            f"{_tag_name(tag)} has a value not valid for VR {attribute['vr']}"
        ) from exc
    return element


def _updatable_tag(key: object) -> int:
    """The tag a key of the change names, when an update may change it."""
    if not (
        isinstance(key, str) and len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)
    ):
        raise ChangeRefused("a key of the change dataset is not a tag of 8 hex digits")
    tag = int(key, 16)
    if tag not in _UPDATABLE_TAGS:
        raise ChangeRefused(f"{_tag_name(tag)} may not be updated")
    return tag


def _check_attribute(tag: int, attribute: object) -> None:
    """The JSON shape of one attribute: its VR and the kind of value it has."""
    name = _tag_name(tag)
    if not isinstance(attribute, dict):
        raise ChangeRefused(f"{name} is not a DICOM JSON attribute")
    vr = attribute.get("vr")
    if vr is None:
        raise ChangeRefused(f"{name} has no vr")
    if vr != dictionary_VR(tag):
        raise ChangeRefused(f"{name} must have vr {dictionary_VR(tag)}")
    if "BulkDataURI" in attribute or "InlineBinary" in attribute:
        raise ChangeRefused(f"{name}: bulk data is not accepted in a change")
    if set(attribute) - {"vr", "Value"}:
        raise ChangeRefused(f"{name} has members other than vr and Value")
    values = attribute.get("Value", [])
    if not isinstance(values, list):
        raise ChangeRefused(f"{name}: Value must be an array")
    if len(values) > 1 and dictionary_VM(tag) == "1":
        raise ChangeRefused(f"{name} takes one value")
    if vr not in _BACKSLASH_ALLOWED and any("\\" in text for text in _strings(values)):
        # pydicom would split the value in two where it is written
        raise ChangeRefused(f"{name}: a value holds a backslash")


def _strings(values: list[object]) -> Iterator[str]:
    """The strings in a JSON Value array (a person name's are its component groups)."""
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from (text for text in value.values() if isinstance(text, str))


def _check_value(element: DataElement) -> None:
    """Each value of an element as its VR allows (pydicom's validators, in RAISE mode)."""
    name = _tag_name(int(element.tag))
    vr = str(element.VR)
    if vr in {"SQ", "UI"}:  # not in UPDATABLE; kept as a guard should the list grow
        raise ChangeRefused(f"{name} may not be updated")
    for value in _values(element.value):
        if value is None or value == "":
            continue
        # validators take names and decimal/integer strings as text, not pydicom's types
        text = str(value) if isinstance(value, PersonName) or vr in {"DS", "IS"} else value
        try:
            validate_value(vr, text, config.RAISE)
        except (ValueError, TypeError) as exc:
            raise ChangeRefused(f"{name} has a value not valid for VR {vr}") from exc


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def already_applied(dataset: Dataset, change: Change) -> bool:
    """Whether ``dataset`` holds every value of ``change`` (a retried update skips it).

    Values are compared as pydicom reads them (a person name as its string, numbers as
    numbers, several values in order). An element of the change with no value matches only
    an element present and empty: an absent attribute is not "set empty".
    """
    for tag in change.tags:
        if tag not in dataset:
            return False
        if _normalised(dataset[tag].value) != _normalised(change.dataset[tag].value):
            return False
    return True


def _normalised(value: object) -> tuple[object, ...]:
    return tuple(
        str(item) if isinstance(item, PersonName) else item
        for item in _values(value)
        if item is not None and item != ""
    )


def apply(source: BinaryIO, change: Change, target: BinaryIO, *, chunk: int = 1 << 20) -> None:
    """Write to ``target`` the Part 10 file in ``source`` (read from its start) with the
    change's elements set: added when absent, replaced when present, empty when the change
    has no value.

    Only the elements before the pixel data are parsed and re-encoded; the rest of the file
    is copied ``chunk`` bytes at a time, so memory stays near the header's size whatever the
    pixel data's. A Deflated data set is read and written whole (the caller bounds its size).
    When a new text value cannot be encoded in the data set's Specific Character Set, the
    data set is re-encoded in UTF-8 (``ISO_IR 192``): every text value is decoded with the
    original character set first, so none changes meaning. Raises :class:`ChangeRefused`
    when the file cannot be parsed.
    """
    source.seek(0)
    dataset = _read(source, stop_before_pixels=True)
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    if not syntax:
        raise ChangeRefused("the file has no transfer syntax")
    deflated = syntax == DeflatedExplicitVRLittleEndian
    tail = 0
    if deflated:
        source.seek(0)
        dataset = _read(source, stop_before_pixels=False)
    implicit_vr, little_endian = _encoding(dataset)
    if not deflated:
        tail = _pixel_offset(source, little_endian=little_endian)
    _set(dataset, change)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcmwrite(
                target,
                dataset,
                implicit_vr=implicit_vr,
                little_endian=little_endian,
                force_encoding=True,  # as written, even where the transfer syntax says else
            )
    except Exception as exc:
        raise ChangeRefused("the file cannot be written back with the change") from exc
    if deflated:
        return
    source.seek(tail)
    while block := source.read(chunk):
        target.write(block)


def _read(source: BinaryIO, *, stop_before_pixels: bool) -> Dataset:
    """The data set in ``source``, refused when pydicom cannot parse it or when it ends
    early: pydicom keeps what it read of a cut file without complaint."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = dcmread(source, stop_before_pixels=stop_before_pixels, force=False)
    except Exception as exc:
        raise ChangeRefused("the DICOM file cannot be parsed") from exc
    if (
        not len(dataset)
        or any("End of file" in str(warning.message) for warning in caught)
        or any(_cut_short(element) for element in dataset._dict.values())
    ):
        raise ChangeRefused("the DICOM file is truncated")
    return dataset


def _cut_short(element: object) -> bool:
    """Whether a raw element holds fewer bytes than its length says."""
    return (
        isinstance(element, RawDataElement)
        and element.value is not None
        and element.length != _UNDEFINED_LENGTH
        and len(element.value) != element.length
    )


def _encoding(dataset: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) as the data set was actually read: pydicom reads a data
    set in implicit VR whose transfer syntax says explicit, and the pixel data that follows
    is encoded the same way, so the header is written back that way too."""
    for element in dataset._dict.values():
        if isinstance(element, RawDataElement):
            return bool(element.is_implicit_VR), bool(element.is_little_endian)
    implicit_vr, little_endian = dataset.original_encoding
    return bool(implicit_vr), bool(little_endian)


def _pixel_offset(source: BinaryIO, *, little_endian: bool) -> int:
    """Where the pixel data element starts: pydicom, told to stop before it, rewinds to its
    tag. Checked, not trusted: the next bytes must be one of the pixel data tags, or the
    end of the file (no pixel data)."""
    offset = source.tell()
    head = source.read(4)
    if not head:
        return offset
    order: Literal["little", "big"] = "little" if little_endian else "big"
    if len(head) == 4:
        tag = int.from_bytes(head[:2], order) << 16 | int.from_bytes(head[2:], order)
        if tag in _PIXEL_TAGS:
            return offset
    raise ChangeRefused("the DICOM file cannot be parsed up to its pixel data")


def _set(dataset: Dataset, change: Change) -> None:
    """Set the change's elements, first moving the data set to UTF-8 when it must."""
    if not _fits(dataset, change):
        _decode_all(dataset)
        dataset.SpecificCharacterSet = UTF8
    for tag in change.tags:
        new = change.dataset[tag]
        dataset[tag] = DataElement(tag, new.VR, _fresh(new.value))


def _fresh(value: object) -> object:
    """A copy of a value to set. A PersonName keeps the bytes of its first encoding and
    returns them whatever encodings it is asked for next: each data set gets new ones."""
    if isinstance(value, PersonName):
        return PersonName(str(value))
    if isinstance(value, MultiValue | list):
        return [_fresh(item) for item in value]
    return copy.deepcopy(value)


def _fits(dataset: Dataset, change: Change) -> bool:
    """Whether every new text value can be encoded in the data set's character set, and
    read back the same (pydicom's ISO 2022 code extensions do not always round-trip)."""
    encodings = convert_encodings(dataset._character_set)
    # pydicom reads the default repertoire (ISO_IR 6) as Latin-1; only ASCII belongs to it
    strict = ["ascii" if name == _DEFAULT_REPERTOIRE else name for name in encodings]
    with _raising_on_unencodable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in change.tags:
            element = change.dataset[tag]
            if element.VR not in _TEXT_VRS:
                continue
            for value in _values(element.value):
                text = str(value)
                try:
                    if isinstance(value, PersonName):
                        encoded = PersonName(text).encode(strict)
                        back = str(PersonName(encoded, encodings))
                    else:
                        encoded = encode_string(text, strict)
                        back = decode_bytes(encoded, encodings, TEXT_VR_DELIMS)
                except (UnicodeError, ValueError, LookupError):
                    return False
                if back != text:
                    return False
    return True


@contextmanager
def _raising_on_unencodable() -> Iterator[None]:
    """pydicom encodes what a character set lacks as '?' unless writing validation raises."""
    settings = config.settings
    before = settings.writing_validation_mode
    settings.writing_validation_mode = config.RAISE
    try:
        yield
    finally:
        settings.writing_validation_mode = before


def _decode_all(dataset: Dataset) -> None:
    """Turn every raw element, at every depth, into a value decoded with the character set
    it was written in. pydicom decodes lazily with the data set's *current* character set,
    and writes undecoded elements back as their original bytes: both would be wrong once
    (0008,0005) changes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in dataset.iterall():
                pass
    except Exception as exc:
        raise ChangeRefused("a value of the file cannot be decoded") from exc
