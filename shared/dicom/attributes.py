"""DICOM JSON (PS3.18 Annex F) of the attributes the index keeps at each level.

The level lists live in :mod:`shared.dicom.levels`. JSON is UTF-8, so values are stored
decoded and SpecificCharacterSet is not copied (QIDO sets ISO_IR 192 when a value is not
ASCII).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydicom import DataElement, Dataset
from pydicom.tag import BaseTag, Tag

from shared.dicom.levels import (
    INSTANCE_KEYWORDS,
    PATIENT_KEYWORDS,
    REQUEST_ATTRIBUTE_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
)

__all__ = [
    "INSTANCE_KEYWORDS",
    "PATIENT_KEYWORDS",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "dumps",
    "level_json",
    "level_of",
    "text",
]


def level_json(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    """Return the DICOM JSON of the given top-level attributes that ds holds, by tag.

    A value DICOM JSON cannot carry as its VR says (``IS`` "1A", a ``DS`` that is not a
    number) is left out: the attribute is kept with its VR and no Value, as for an empty one.
    """
    result: dict[str, Any] = {}
    for tag in _tags(keywords):
        if tag not in ds:
            continue
        element = ds[tag]
        if element.keyword == "RequestAttributesSequence":
            element = _request_attributes(element)
        try:
            result[f"{tag:08X}"] = element.to_json_dict(None, bulk_data_threshold=0)
        except Exception:  # noqa: BLE001 - pydicom raises anything on a value it cannot carry
            result[f"{tag:08X}"] = {"vr": element.VR}
    return result


def level_of(document: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    """The given top-level attributes of an instance's whole DICOM JSON (``dicom.metadata``):
    the same attributes as :func:`level_json`, without converting them again. Bulk data
    references (never expected at these levels) become empty values."""
    result: dict[str, Any] = {}
    for tag in _tags(keywords):
        key = f"{tag:08X}"
        value = document.get(key)
        if value is None:
            continue
        if "BulkDataURI" in value:
            value = {"vr": value["vr"]}
        elif key == _REQUEST_ATTRIBUTES and value.get("Value"):
            kept = {f"{t:08X}" for t in _tags(REQUEST_ATTRIBUTE_KEYWORDS)}
            items = [{k: v for k, v in item.items() if k in kept} for item in value["Value"]]
            value = {"vr": "SQ", "Value": items}
        result[key] = value
    return result


_REQUEST_ATTRIBUTES = "00400275"


@functools.cache
def _tags(keywords: tuple[str, ...]) -> tuple[BaseTag, ...]:
    """The tags of ``keywords``, in tag order (the order of DICOM JSON objects)."""
    return tuple(sorted(Tag(keyword) for keyword in keywords))


def _request_attributes(element: DataElement) -> DataElement:
    """Request Attributes Sequence with only the item attributes the index keeps."""
    items = []
    for item in element.value:
        kept = Dataset()
        for key in REQUEST_ATTRIBUTE_KEYWORDS:
            if key in item:
                kept[key] = item[key]
        items.append(kept)
    return DataElement(element.tag, "SQ", items)


def dumps(document: dict[str, Any]) -> str:
    """Compact UTF-8 JSON for storage."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def text(ds: Dataset, keyword: str) -> str:
    """Return a string attribute as stripped text ('' when absent or empty)."""
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()
