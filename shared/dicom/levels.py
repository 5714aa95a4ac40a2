"""Which attributes belong to which query/retrieve level (no pydicom import).

The lists hold the PS3.18 §10.6.3.3 default return attributes of each level, the required
matching keys of Table 10.6.1-5, and a few attributes viewers commonly ask for with
``includefield``. The index stores exactly these at each level; QIDO matches and returns
them. Tags and VRs come from ``shared/_generated/dictionary.py`` (``tools/generate_dictionary.py``).
"""

from __future__ import annotations

from typing import Literal

Level = Literal["PATIENT", "STUDY", "SERIES", "INSTANCE"]

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
REQUEST_ATTRIBUTE_KEYWORDS = ("ScheduledProcedureStepID", "RequestedProcedureID")

# Attributes the archive computes (PS3.18 §10.6.3.3, PS3.4 C.3.4).
COMPUTED_KEYWORDS = {
    "PATIENT": (
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
    "STUDY": (
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "InstanceAvailability",
        "RetrieveURL",
    ),
    "SERIES": ("NumberOfSeriesRelatedInstances", "RetrieveURL"),
    "INSTANCE": ("InstanceAvailability", "RetrieveURL"),
}

# PS3.18 §10.6.3.3 default return attributes (plus the seed's patient level).
DEFAULT_RETURN = {
    "PATIENT": (*PATIENT_KEYWORDS, *COMPUTED_KEYWORDS["PATIENT"]),
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    ),
    "INSTANCE": (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}

STORED = {
    "PATIENT": PATIENT_KEYWORDS,
    "STUDY": STUDY_KEYWORDS,
    "SERIES": SERIES_KEYWORDS,
    "INSTANCE": INSTANCE_KEYWORDS,
}

ALL_KEYWORDS = tuple(
    dict.fromkeys(
        [
            *STUDY_KEYWORDS,
            *SERIES_KEYWORDS,
            *INSTANCE_KEYWORDS,
            *REQUEST_ATTRIBUTE_KEYWORDS,
            *(k for ks in COMPUTED_KEYWORDS.values() for k in ks),
            "SpecificCharacterSet",
        ]
    )
)
