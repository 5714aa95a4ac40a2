"""SOP Class Extended Negotiation for C-FIND (PS3.4 C.5.1.1): of the four query options,
the gateway accepts combined date-time matching only, as the archive's QIDO-RS does it
(StudyDate with StudyTime, 4.4 of the conformance statement). Relational queries, fuzzy
semantic matching of person names and timezone query adjustment are answered 0."""

from __future__ import annotations

import weakref
from typing import Any

FIND_MODELS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R Information Model - FIND
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R Information Model - FIND
    }
)
DATE_TIME = 1  # byte 2 of the Service Class Application Information (0-based 1)

# The FIND models whose association accepted combined date-time matching
_combined: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def answer(requested: dict[str, bytes]) -> tuple[dict[str, bytes], set[str]]:
    """The response to each FIND model's extended negotiation item, and the models that got
    combined date-time matching."""
    responses: dict[str, bytes] = {}
    combined: set[str] = set()
    for uid, info in requested.items():
        uid = str(uid)  # noqa: PLW2901 - pynetdicom hands UID objects
        if uid not in FIND_MODELS or not info:
            continue
        asked = len(info) > DATE_TIME and info[DATE_TIME] == 1
        responses[uid] = bytes([0, 1]) if asked else bytes([0] * min(len(info), 2))
        if asked:
            combined.add(uid)
    return responses, combined


def sop_extended(event: Any) -> dict[str, bytes]:
    """``EVT_SOP_EXTENDED`` handler."""
    responses, combined = answer(dict(event.app_info))
    if combined:
        _combined[event.assoc] = combined
    return responses


def combined_datetime(event: Any) -> bool:
    """Whether the C-FIND's association accepted combined date-time matching for its model."""
    found = _combined.get(event.assoc, set())
    return str(event.request.AffectedSOPClassUID) in found
