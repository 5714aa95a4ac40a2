"""IOCM rejection notes for the tests, built by highdicom (a Key Object Selection document,
PS3.3 §A.35.4, whose title is a rejection code of CID 7011)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom
import pydicom
from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from pydicom.sr.coding import Code

from shared.services.rejection import CODES


def rejection_note(
    rejected: Sequence[bytes], code: str = "113001", *, note_uid: str | None = None
) -> bytes:
    """A rejection note naming the instances ``rejected`` (Part 10 bytes: highdicom takes
    their UIDs, class and study from them), in their study, as Part 10 bytes."""
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in rejected]
    title = Code(code, "DCM", CODES[code])
    document = KeyObjectSelectionDocument(
        evidence=datasets,
        content=KeyObjectSelection(document_title=title, referenced_objects=datasets),
        series_instance_uid=highdicom.UID(),
        series_number=990,
        sop_instance_uid=note_uid or highdicom.UID(),
        instance_number=1,
        manufacturer="o3-dpacs tests",
    )
    out = io.BytesIO()
    document.save_as(out, enforce_file_format=True)
    return out.getvalue()
