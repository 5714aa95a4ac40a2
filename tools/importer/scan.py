"""Read the UIDs the importer needs from each Part 10 file (never the patient's data)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pydicom

from tools.importer.walk import Item

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"]


@dataclass(frozen=True)
class Entry:
    """An item with what its header says; UIDs are empty when they could not be read (the
    archive then decides, and says why it refuses the file)."""

    item: Item
    sop_instance_uid: str = ""
    study_instance_uid: str = ""

    @property
    def size(self) -> int:
        return self.item.size


def scan(item: Item) -> Entry:
    """The entry for ``item``; never raises on a broken file."""
    try:
        with item.open() as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_TAGS)
            sop = str(ds.get("SOPInstanceUID", "") or "").strip()
            study = str(ds.get("StudyInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - unreadable headers are the archive's to judge
        return Entry(item)
    return Entry(item, sop if _plausible(sop) else "", study if _plausible(study) else "")


def _plausible(uid: str) -> bool:
    return 0 < len(uid) <= 64 and all(c.isdigit() or c == "." for c in uid)
