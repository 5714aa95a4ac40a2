"""The DICOM JSON of a whole instance (PS3.18 Annex F) for WADO-RS metadata.

Built once, when the instance is stored, and kept compressed in its index entry, so that
a series' metadata is a read of the index, never a re-read of every Part 10 file. Binary
values longer than :data:`BULK_THRESHOLD` bytes (pixel data, overlays, LUTs, waveforms,
at any depth) are not inlined: their ``BulkDataURI`` is stored as ``bulk:<path>`` and made
absolute for each request (:func:`with_urls`), so that it is right behind any stage prefix
or custom domain. A path names the element through its sequences, in one URL segment:
``7FE00010``, ``00540016.0.00181074`` (sequence tag, item index, tag).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement

#: Binary values longer than this are served as bulk data, not inlined (bytes).
BULK_THRESHOLD = 1024
#: Compressed metadata larger than this is not kept in the index entry (DynamoDB items hold
#: at most 400 KB); it is then built from the Part 10 file when asked for.
MAX_STORED = 96 * 1024
_PLACEHOLDER = '"BulkDataURI":"bulk:'
_MAX_PATH_DEPTH = 64


def instance_json(ds: Dataset) -> dict[str, Any]:
    """Every attribute of the data set (not the File Meta), bulk data by reference."""
    return _dataset_json(ds, "")


def _dataset_json(ds: Dataset, prefix: str) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key in sorted(ds._dict):  # tag order, as iterating a Dataset gives
        tag = f"{key:08X}"
        path = f"{prefix}{tag}"
        raw = ds._dict.get(key)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            # Left on disk by validate_file (a large value): bulk data, never read here.
            document[tag] = {"vr": _vr_of(raw), "BulkDataURI": f"bulk:{path}"}
            continue
        element = ds[key]
        if element.VR == "SQ":
            items = [_dataset_json(item, f"{path}.{i}.") for i, item in enumerate(element.value)]
            document[tag] = {"vr": "SQ", "Value": items}  # empty too, as pydicom writes it
            continue
        document[tag] = _element_json(element, path)
    return document


def _vr_of(raw: RawDataElement) -> str:
    """The VR of an element not read: explicit, or the dictionary's (OW for the ambiguous
    pixel data of an implicit VR file, as PS3.5 Annex A.1 says)."""
    if raw.VR:
        return str(raw.VR)
    try:
        vr = str(dictionary_VR(raw.tag))
    except KeyError:
        return "UN"
    return "OW" if " or " in vr else vr


def _element_json(element: DataElement, path: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = element.to_json_dict(
            lambda _: f"bulk:{path}", bulk_data_threshold=BULK_THRESHOLD
        )
    except Exception:  # noqa: BLE001 - pydicom raises anything on a value it cannot carry
        return {"vr": element.VR}
    return found


def pack(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, compressed (what the index keeps)."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return zlib.compress(text.encode("utf-8"), 6)


def unpack(packed: bytes) -> str:
    """The JSON text of packed metadata."""
    return zlib.decompress(packed).decode("utf-8")


def with_urls(text: str, instance_url: str) -> str:
    """The stored JSON text with every ``BulkDataURI`` absolute under ``instance_url``.

    The placeholder is matched with its key: inside a JSON string a quote is escaped, so
    no attribute value can contain it.
    """
    return text.replace(_PLACEHOLDER, f'"BulkDataURI":"{instance_url}/bulk/')


def bulk_element(ds: Dataset, path: str) -> DataElement | None:
    """The element a bulk data path names, or None when there is none."""
    parts = path.split(".")
    if not parts or len(parts) > _MAX_PATH_DEPTH or len(parts) % 2 != 1:
        return None
    current = ds
    for index in range(0, len(parts) - 1, 2):
        element = _get(current, parts[index])
        if element is None or element.VR != "SQ" or not parts[index + 1].isdigit():
            return None
        item = int(parts[index + 1])
        if item >= len(element.value):
            return None
        current = element.value[item]
    return _get(current, parts[-1])


def _get(ds: Dataset, tag_text: str) -> DataElement | None:
    if len(tag_text) != 8:
        return None
    try:
        tag = int(tag_text, 16)
    except ValueError:
        return None
    if tag not in ds:
        return None
    element: DataElement = ds[tag]
    return element
