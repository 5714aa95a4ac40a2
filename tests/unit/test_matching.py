"""Attribute matching on DICOM JSON (PS3.4 C.2.2.2) with our documented PN choices."""

from __future__ import annotations

from typing import Any

import pytest

from shared.dicomweb.matching import matches
from shared.dicomweb.query import parse

STUDY: dict[str, Any] = {
    "00080020": {"vr": "DA", "Value": ["20060706"]},
    "00080030": {"vr": "TM", "Value": ["093000.5"]},
    "00080050": {"vr": "SH", "Value": ["ACC-001"]},
    "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
    "00081030": {"vr": "LO", "Value": ["Chest CT"]},
    "00100010": {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    },
    "00100020": {"vr": "LO", "Value": ["PAT-1"]},
    "00100030": {"vr": "DA"},
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
    "00201208": {"vr": "IS", "Value": [12]},
}
FRENCH: dict[str, Any] = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Buc^Jérôme"}]}}


def match(dataset: dict[str, Any], level: str = "STUDY", **params: str) -> bool:
    return matches(parse({k: [v] for k, v in params.items()}, level), dataset)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientID": "PAT-1"}, True),
        ({"PatientID": "pat-1"}, False),  # other strings are case-sensitive
        ({"PatientID": "PAT-*"}, True),
        ({"PatientID": "PAT-?"}, True),
        ({"PatientID": "PAT-??"}, False),
        ({"PatientID": "*"}, True),
        ({"PatientID": ""}, True),
        ({"AccessionNumber": "ACC-00*"}, True),
        ({"StudyDescription": "*CT"}, True),
        ({"StudyDescription": "*ct"}, False),
        ({"PatientBirthDate": '""'}, True),  # empty value matches empty
        ({"PatientID": '""'}, False),
        ({"PatientBirthDate": "19700101"}, False),  # empty never matches a value
        ({"StudyInstanceUID": "1.2.3.4"}, True),
        ({"StudyInstanceUID": "1.2.3.5\\1.2.3.4"}, True),
        ({"StudyInstanceUID": "1.2.3.5,1.2.3.6"}, False),
        ({"ModalitiesInStudy": "CT"}, True),
        ({"ModalitiesInStudy": "SR"}, True),
        ({"ModalitiesInStudy": "MR"}, False),
        ({"ModalitiesInStudy": "MR\\SR"}, True),
        ({"NumberOfStudyRelatedInstances": "12"}, True),
        ({"NumberOfStudyRelatedInstances": "13"}, False),
    ],
)
def test_single_list_wildcard_universal_empty(params: dict[str, str], expected: bool) -> None:
    assert match(STUDY, **params) is expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"StudyDate": "20060706"}, True),
        ({"StudyDate": "20060705-20060707"}, True),
        ({"StudyDate": "20060707-"}, False),
        ({"StudyDate": "-20060706"}, True),
        ({"StudyDate": "20060706-20060706"}, True),
        ({"StudyTime": "0900-1000"}, True),
        ({"StudyTime": "0931-"}, False),
        ({"StudyTime": "093000.5"}, True),
        ({"StudyTime": "-0930"}, True),  # 09:30 as an upper bound covers 09:30:59.999999
        # Combined: one continuous range 2006-07-05 10:00 .. 2006-07-06 09:00.
        ({"StudyDate": "20060705-20060706", "StudyTime": "1000-0900"}, False),
        ({"StudyDate": "20060705-20060706", "StudyTime": "1000-1000"}, True),
        ({"StudyDate": "20060706-20060707", "StudyTime": "0800-0700"}, True),
        ({"StudyDate": "20060706-", "StudyTime": "0931-"}, False),
    ],
)
def test_date_time_ranges(params: dict[str, str], expected: bool) -> None:
    assert match(STUDY, **params) is expected


def test_datetime_range_on_dt() -> None:
    instance = {"0008002A": {"vr": "DT", "Value": ["20200102103015.25"]}}
    assert match(instance, "INSTANCE", AcquisitionDateTime="2020-2020")
    assert match(instance, "INSTANCE", AcquisitionDateTime="20200102-20200102")
    assert not match(instance, "INSTANCE", AcquisitionDateTime="202001021031-")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Yamada^Tarou", True),
        ("yamada^tarou", True),  # PN: case-insensitive
        ("YAMADA*", True),
        ("山田*", True),  # ideographic group
        ("やまだ^たろう", True),  # phonetic group
        ("Yamada", False),  # single value: the whole name
        ("*tar?u", True),
        ("Tarou*", False),
    ],
)
def test_person_names(value: str, expected: bool) -> None:
    assert match(STUDY, PatientName=value) is expected


@pytest.mark.parametrize(
    ("value", "fuzzy", "expected"),
    [
        ("buc^jérôme", False, True),
        ("buc^jerome", False, False),  # accents matter without fuzzy matching
        ("buc^jerome", True, True),
        ("jero", True, True),  # any component by prefix
        ("JER BU", True, True),
        ("erome", True, False),  # prefixes, not infixes
        ("*jer*", True, True),  # wildcards are word separators in fuzzy mode
    ],
)
def test_fuzzy_person_names(value: str, fuzzy: bool, expected: bool) -> None:
    params = {"PatientName": [value], "fuzzymatching": ["true" if fuzzy else "false"]}
    assert matches(parse(params, "STUDY"), FRENCH) is expected


def test_sequence_item_matching() -> None:
    series = {
        "00400275": {
            "vr": "SQ",
            "Value": [
                {"00401001": {"vr": "SH", "Value": ["RP1"]}},
                {"00400009": {"vr": "SH", "Value": ["SPS7"]}},
            ],
        }
    }
    assert match(series, "SERIES", **{"RequestAttributesSequence.RequestedProcedureID": "RP1"})
    assert match(series, "SERIES", **{"RequestAttributesSequence.ScheduledProcedureStepID": "SPS*"})
    assert not match(series, "SERIES", **{"RequestAttributesSequence.RequestedProcedureID": "X"})


def test_all_conditions_must_hold() -> None:
    assert match(STUDY, PatientID="PAT-1", ModalitiesInStudy="CT")
    assert not match(STUDY, PatientID="PAT-1", ModalitiesInStudy="MR")
