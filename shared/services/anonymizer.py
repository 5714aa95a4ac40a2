"""De-identification with the deployment key, as WADO answers it (PS3.15 E.1 Basic Profile).

Wraps :mod:`shared.dicom.anonymize` (imported on first use: pydicom is not loaded by a
function that never anonymizes) and says what its refusals mean to a client: an instance
with burned-in annotation is a conflict (409: its pixels would still identify the patient),
an object that is no Part 10 file cannot be served de-identified (406).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import Conflict, NotAcceptable

_PROFILE = "shared.dicom.anonymize"


@dataclass(frozen=True)
class Anonymizer:
    """The profile with the key ``key()`` returns (read when first needed)."""

    key: Callable[[], bytes]

    def __call__(self, data: bytes) -> bytes:
        """The de-identified Part 10 file; 409 for burned-in annotation, 406 for an object
        that is not Part 10."""
        profile = importlib.import_module(_PROFILE)
        try:
            result: bytes = profile.anonymize(data, self.key())
        except profile.BurnedInAnnotation as exc:
            raise Conflict(
                "the instance has burned-in annotation (BurnedInAnnotation YES): pixel data "
                "would still identify the patient, so it is not served anonymized"
            ) from exc
        except profile.NotPart10 as exc:
            raise NotAcceptable("the stored object cannot be de-identified") from exc
        return result

    def uid(self, uid: str) -> str:
        """The UID that replaces ``uid`` in de-identified objects."""
        mapped: str = importlib.import_module(_PROFILE).map_uid(uid, self.key())
        return mapped

    def attributes(self, document: dict[str, Any]) -> dict[str, Any]:
        """DICOM JSON attributes (a QIDO result) de-identified; ``ValueError`` if they cannot be."""
        cleaned: dict[str, Any] = importlib.import_module(_PROFILE).anonymize_json(
            document, self.key()
        )
        return cleaned
