"""Reference table of the real DICOM files used by the tests (pydicom + pydicom-data).

Files are addressed by name and found on disk; nothing is downloaded. The table says what
STOW-RS must do with each: store it, or reject it with a given failure reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from shared.ports import InstanceRecord

CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: int
    why: str


# Files that must fail, with the reason (names unique across both packages).
REJECTED = (
    Rejected("MR_truncated.dcm", CANNOT_UNDERSTAND, "pixel data cut short"),
    Rejected("rtplan_truncated.dcm", CANNOT_UNDERSTAND, "sequence cut short"),
    Rejected("emri_small_jpeg_2k_lossless_too_short.dcm", CANNOT_UNDERSTAND, "no delimiter"),
    Rejected("no_meta.dcm", CANNOT_UNDERSTAND, "no preamble, no file meta"),
    Rejected("ExplVR_BigEndNoMeta.dcm", CANNOT_UNDERSTAND, "no file meta"),
    Rejected("OT-PAL-8-face.dcm", CANNOT_UNDERSTAND, "no file meta"),
    Rejected("meta_missing_tsyntax.dcm", CANNOT_UNDERSTAND, "no TransferSyntaxUID"),
    Rejected("JPEGLSNearLossless_08.dcm", CANNOT_UNDERSTAND, "no StudyInstanceUID"),
    Rejected("UN_sequence.dcm", CANNOT_UNDERSTAND, "no SOPClassUID"),
    Rejected("bad_sequence.dcm", CANNOT_UNDERSTAND, "SOPInstanceUID not a valid UID"),
    Rejected("rtstruct.dump", CANNOT_UNDERSTAND, "a text dump, not DICOM"),
)

# One stored file per transfer syntax found in the corpus (distinct SOP Instance UIDs).
BY_TRANSFER_SYNTAX = {
    "1.2.840.10008.1.2": "rtplan.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.2": "ExplVR_BigEnd.dcm",
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",
    "1.2.840.10008.1.2.4.51": "JPGExtended.dcm",
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",
    "1.2.840.10008.1.2.4.80": "emri_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.90": "GDCMJ2K_TextGBR.dcm",
    "1.2.840.10008.1.2.4.91": "693_J2KI.dcm",
    "1.2.840.10008.1.2.5": "rtdose_rle.dcm",
}


def roots() -> list[Path]:
    """The folders of test files: pydicom's own, then pydicom-data's when installed."""
    found = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        found.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - dev extras missing
        pass
    return found


@cache
def _index() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in roots():
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found.setdefault(path.name, path)
    return found


def path(name: str) -> Path:
    """Path of a corpus file by name (KeyError if neither package has it)."""
    return _index()[name]


def data(name: str) -> bytes:
    """Bytes of a corpus file by name."""
    return path(name).read_bytes()


def storable(max_size: int | None = None) -> list[str]:
    """Part 10 files STOW accepts, by name, one per SOP Instance UID (the corpus repeats
    some instances in other encodings)."""
    from shared.dicom.validate import InstanceRejected, validate

    names, seen = [], set()
    for name in sorted(part10_files(max_size)):
        try:
            instance = validate(data(name))
        except InstanceRejected:
            continue
        if instance.sop_instance_uid not in seen:
            seen.add(instance.sop_instance_uid)
            names.append(name)
    return names


def part10_files(max_size: int | None = None) -> list[str]:
    """Names of every file that starts like a Part 10 file (preamble + DICM)."""
    names = []
    for name, file in _index().items():
        if max_size is not None and file.stat().st_size > max_size:
            continue
        with file.open("rb") as fp:
            head = fp.read(132)
        if head[128:132] == b"DICM":
            names.append(name)
    return names


def with_new_uids(
    name: str = "CT_small.dcm",
    *,
    study: str | None = None,
    series: str | None = None,
    patient_id: str | None = None,
    **changes: object,
) -> bytes:
    """A real file re-written with fresh (or given) UIDs: a new instance nobody stored."""
    ds = pydicom.dcmread(path(name))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def changed(data: bytes, **values: object) -> bytes:
    """The same instance (same UIDs) with attributes set anew: a replacement's bytes."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def record_of(data: bytes, calling_aet: str = "AE1") -> InstanceRecord:
    """The index record STOW would write for these bytes (validated, received now)."""
    from shared.dicom.validate import validate
    from shared.services.store import _record

    return _record(validate(data), calling_aet, datetime.now(UTC))


def available() -> bool:
    """Whether pydicom-data is installed (the large reference files)."""
    return "693_UNCI.dcm" in _index() and path("693_UNCI.dcm").stat().st_size > 0
