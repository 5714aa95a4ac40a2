"""Which attributes the index keeps at each level, and their DICOM JSON (PS3.18 Annex F).

The lists hold the PS3.18 §10.6.3.3 default return attributes of each level, the required
matching keys of Table 10.6.1-5, and a few attributes viewers commonly ask for with
``includefield``. JSON is UTF-8, so values are stored decoded and SpecificCharacterSet is
not copied (QIDO sets ISO_IR 192 when a value is not ASCII).
"""

from __future__ import annotations

import json
from typing import Any

from pydicom import Dataset

PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)

STUDY_KEYWORDS = (
    *PATIENT_KEYWORDS,
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "StudyDescription",
    "StudyInstanceUID",
    "StudyID",
)

SERIES_KEYWORDS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "ProtocolName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
)

INSTANCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "AcquisitionDateTime",
    "ImageType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "PhotometricInterpretation",
)

# Inside RequestAttributesSequence only these two are index material (PS3.18 Table 10.6.1-5).
_REQUEST_ATTRIBUTE_KEYS = ("ScheduledProcedureStepID", "RequestedProcedureID")


def level_json(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    """Return the DICOM JSON of the given top-level attributes that ds holds."""
    subset = Dataset()
    for keyword in keywords:
        if keyword not in ds:
            continue
        element = ds[keyword]
        if keyword == "RequestAttributesSequence":
            items = []
            for item in element.value:
                kept = Dataset()
                for key in _REQUEST_ATTRIBUTE_KEYS:
                    if key in item:
                        kept[key] = item[key]
                items.append(kept)
            subset.RequestAttributesSequence = items
        else:
            subset[keyword] = element
    result: dict[str, Any] = subset.to_json_dict(bulk_data_threshold=0)
    return result


def dumps(document: dict[str, Any]) -> str:
    """Compact UTF-8 JSON for storage."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def text(ds: Dataset, keyword: str) -> str:
    """Return a string attribute as stripped text ('' when absent or empty)."""
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()
