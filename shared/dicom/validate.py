"""Validation of one Part 10 file received by STOW-RS (PS3.10 §7, PS3.18 §10.5)."""

from __future__ import annotations

import hashlib
import io
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.filereader import _read_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian

from shared.dicom import (
    failures,
    quiet,  # noqa: F401 - no dataset values in the logs
)

#: Sequences nested deeper than this are refused: real objects (SR trees included) stay far
#: below, and every later reader (JSON, anonymizer, transcoder) walks them recursively.
MAX_NESTING = 64
#: Inflated size of a Deflated Explicit VR data set when the caller gives no budget.
DEFAULT_INFLATE_LIMIT = 256 << 20
#: Peak memory of reading a deflated file per inflated byte (2.3-4.1x measured): pydicom
#: holds the inflated bytes, its buffer and the parsed values (docs/limits.md).
PEAK_PER_INFLATED_BYTE = 5
_INFLATE_CHUNK = 1 << 16
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: Values longer than this are not read into memory when a file is validated from disk
#: (pixel data of large objects): they are checked to lie whole within the file.
DEFER_SIZE = 1 << 16
_HASH_CHUNK = 1 << 20
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_KNOWN_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in AllTransferSyntaxes)


@dataclass(frozen=True)
class ValidInstance:
    """A parsed instance that passed validation, with the facts the store needs."""

    dataset: Dataset
    #: The Part 10 bytes when validated from memory (STOW); empty when validated from a
    #: file (the upload path), whose large values stay on disk (``dataset`` defers them).
    data: bytes
    sha256: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    size: int


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


def validate(
    data: bytes,
    expected_study_uid: str | None = None,
    *,
    inflate_limit: int = DEFAULT_INFLATE_LIMIT,
) -> ValidInstance:
    """Parse and check one Part 10 file; raise :class:`InstanceRejected` with a reason.

    Checks: 128-byte preamble + ``DICM`` + File Meta Information; a deflated data set
    inflates to at most ``inflate_limit`` bytes (checked by streaming, before pydicom
    inflates it whole); the whole file parses with every element complete (truncated files
    fail) and every value readable as its VR says, sequences nested at most
    :data:`MAX_NESTING` deep; a known Transfer Syntax; SOP Class, SOP Instance, Study and
    Series Instance UIDs present and valid (PS3.5 §9.1); the Study Instance UID equal to the
    one in the request URL when given.
    """
    if not data:
        raise InstanceRejected(failures.CANNOT_UNDERSTAND, "empty body part")
    dataset = _parse(data, inflate_limit)
    return _checked(dataset, expected_study_uid, data, hashlib.sha256(data).hexdigest(), len(data))


def validate_file(
    path: Path,
    expected_study_uid: str | None = None,
    *,
    inflate_limit: int = DEFAULT_INFLATE_LIMIT,
) -> ValidInstance:
    """:func:`validate` for a file of any size, in bounded memory.

    The same checks; values longer than :data:`DEFER_SIZE` bytes (pixel data) are not
    read but must lie whole within the file. A deflated data set is inflated in memory as
    STOW does, so it is refused above ``inflate_limit`` bytes on disk.
    """
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as source:
        head = source.read(132)
        digest.update(head)
        while chunk := source.read(_HASH_CHUNK):
            digest.update(chunk)
    if size < 132 or head[128:132] != b"DICM":
        raise _not_part10()
    if _file_syntax(path) == DeflatedExplicitVRLittleEndian:
        if size > inflate_limit:
            raise InstanceRejected(
                failures.TOO_LARGE,
                f"a deflated file of {size:,} bytes is more than this archive inflates"
                f" ({inflate_limit:,}); store it in another transfer syntax",
            )
        return validate(path.read_bytes(), expected_study_uid, inflate_limit=inflate_limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = dcmread(str(path), force=False, defer_size=DEFER_SIZE)
        except RecursionError as exc:
            raise _nested_too_deeply() from exc
        except Exception as exc:
            raise InstanceRejected(
                failures.CANNOT_UNDERSTAND, "the DICOM file cannot be parsed"
            ) from exc
        deferred = _deferred(dataset)
        if (
            any("End of file reached" in str(w.message) for w in caught)
            or _truncated(dataset)
            or any(end > size for end in deferred.values())
        ):
            raise InstanceRejected(failures.CANNOT_UNDERSTAND, "the DICOM file is truncated")
        _read_every_value(dataset, skip=frozenset(deferred))
    return _checked(dataset, expected_study_uid, b"", digest.hexdigest(), size)


def _file_syntax(path: Path) -> str:
    """The Transfer Syntax UID of a file's File Meta Information ('' when unreadable)."""
    with path.open("rb") as source:
        source.seek(132)
        try:  # the value is decoded on access: a broken one raises there
            meta = _read_file_meta_info(source)
            return str(meta.get("TransferSyntaxUID", "")).strip("\0 ")
        except Exception:  # noqa: BLE001 - dcmread reports a broken File Meta with its reason
            return ""


def _deferred(dataset: Dataset) -> dict[int, int]:
    """Top-level elements whose value was left on disk: tag -> end offset of the value
    (0 for an undefined length, which pydicom has already scanned to its delimiter)."""
    found = {}
    for tag, element in dataset._dict.items():
        if isinstance(element, RawDataElement) and element.value is None and element.length:
            defined = element.length != _UNDEFINED_LENGTH
            found[int(tag)] = element.value_tell + element.length if defined else 0
    return found


def is_deferred(dataset: Dataset, tag: int) -> bool:
    """Whether the element's value was left on disk by :func:`validate_file`."""
    element = dataset._dict.get(BaseTag(tag))
    return isinstance(element, RawDataElement) and element.value is None and bool(element.length)


def _checked(
    dataset: Dataset, expected_study_uid: str | None, data: bytes, sha256: str, size: int
) -> ValidInstance:
    ts = str(dataset.file_meta.get("TransferSyntaxUID", "") or "").strip()
    uids = {kw: str(dataset.get(kw, "") or "").strip() for kw in _REQUIRED_UIDS}
    sop_class, sop_instance = uids["SOPClassUID"], uids["SOPInstanceUID"]
    sop_class_ref = sop_class if UID(sop_class).is_valid else ""
    sop_instance_ref = sop_instance if UID(sop_instance).is_valid else ""

    def reject(reason: int, message: str) -> InstanceRejected:
        return InstanceRejected(reason, message, sop_class_ref, sop_instance_ref)

    if len(dataset.group_dataset(0)):
        raise reject(
            failures.CANNOT_UNDERSTAND,
            "command elements (0000,eeee) are not allowed in a stored data set (PS3.10 7.1)",
        )
    if not ts:
        raise reject(failures.CANNOT_UNDERSTAND, "File Meta Information has no TransferSyntaxUID")
    if ts not in _KNOWN_TRANSFER_SYNTAXES:
        raise reject(failures.TRANSFER_SYNTAX_NOT_SUPPORTED, f"unknown transfer syntax {ts}")
    for keyword, value in uids.items():
        if not value:
            raise reject(failures.CANNOT_UNDERSTAND, f"{keyword} is missing")
        if not UID(value).is_valid or dataset[keyword].VR != "UI":
            raise reject(failures.CANNOT_UNDERSTAND, f"{keyword} is not a valid UID")
    if expected_study_uid is not None and uids["StudyInstanceUID"] != expected_study_uid:
        raise reject(
            failures.STUDY_UID_MISMATCH,
            "StudyInstanceUID differs from the study in the request URL",
        )
    return ValidInstance(
        dataset=dataset,
        data=data,
        sha256=sha256,
        size=size,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        transfer_syntax=ts,
    )


def _not_part10() -> InstanceRejected:
    return InstanceRejected(
        failures.CANNOT_UNDERSTAND,
        "not a DICOM Part 10 file (no 128-byte preamble followed by 'DICM')",
    )


def _parse(data: bytes, inflate_limit: int) -> Dataset:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _not_part10()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_inflated_size(data, inflate_limit)
        try:
            dataset = dcmread(io.BytesIO(data), force=False)
        except RecursionError as exc:
            raise _nested_too_deeply() from exc
        except Exception as exc:
            raise InstanceRejected(
                failures.CANNOT_UNDERSTAND, "the DICOM file cannot be parsed"
            ) from exc
        if any("End of file reached" in str(w.message) for w in caught) or _truncated(dataset):
            raise InstanceRejected(failures.CANNOT_UNDERSTAND, "the DICOM file is truncated")
        _read_every_value(dataset)
    return dataset


def _nested_too_deeply() -> InstanceRejected:
    return InstanceRejected(
        failures.CANNOT_UNDERSTAND, f"sequences are nested more than {MAX_NESTING} levels deep"
    )


_DEFLATED_UID = str(DeflatedExplicitVRLittleEndian).encode("ascii")


def _may_be_deflated(data: bytes) -> bool:
    """False when the Deflated transfer syntax UID is nowhere in the file (most files: the
    File Meta Information need not be parsed twice). The whole file is searched, not the
    span its group length declares: that length is the sender's to get wrong."""
    return _DEFLATED_UID in data


def _check_inflated_size(data: bytes, limit: int) -> None:
    """Refuse a Deflated Explicit VR file that inflates beyond ``limit`` (a deflate bomb).

    pydicom inflates the whole data set in one call; this streams it first, holding at most
    one chunk, and stops as soon as the limit is passed.
    """
    if not _may_be_deflated(data):
        return
    stream = io.BytesIO(data)
    stream.seek(132)
    try:
        meta = _read_file_meta_info(stream)
        syntax = str(meta.get("TransferSyntaxUID", "")).strip("\0 ")
    except Exception:  # noqa: BLE001 - dcmread reports a broken File Meta with its reason
        return
    if syntax != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)[stream.tell() :]
    inflated = 0
    try:
        for start in range(0, len(view), _INFLATE_CHUNK):
            pending: bytes | memoryview = view[start : start + _INFLATE_CHUNK]
            while pending and inflated <= limit and not inflater.eof:
                before = len(pending)
                produced = len(inflater.decompress(pending, _INFLATE_CHUNK))
                inflated += produced
                pending = inflater.unconsumed_tail
                if not produced and len(pending) == before:
                    break  # no progress: the stream is damaged; dcmread says how
            if inflated > limit or inflater.eof:
                break
    except zlib.error as exc:
        raise InstanceRejected(
            failures.CANNOT_UNDERSTAND, "the deflated data set cannot be inflated"
        ) from exc
    if inflated > limit:
        raise InstanceRejected(
            failures.TOO_LARGE,
            f"the deflated data set inflates to more than {limit:,} bytes"
            f" ({len(view):,} bytes sent); store it uncompressed or in another syntax",
        )


def _read_every_value(dataset: Dataset, skip: frozenset[int] = frozenset()) -> None:
    """Convert every element at every depth, so that no later reader meets a value pydicom
    cannot read (unknown VR, a length that is not a multiple of the value size, ...).
    ``skip``: top-level tags whose values stay on disk."""
    pending: list[tuple[Dataset, int]] = [(dataset, 0), (dataset.file_meta, 0)]
    while pending:
        current, depth = pending.pop()
        if depth > MAX_NESTING:
            raise _nested_too_deeply()
        for tag in list(current.keys()):
            if current is dataset and int(tag) in skip:
                continue
            try:
                element = current[tag]
                if element.VR == "SQ":
                    pending.extend((item, depth + 1) for item in element.value)
            except Exception as exc:
                raise InstanceRejected(
                    failures.CANNOT_UNDERSTAND,
                    f"element {tag} cannot be read as its value representation says",
                ) from exc


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
