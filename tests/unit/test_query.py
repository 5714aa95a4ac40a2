"""QIDO-RS parameter parsing and validation (PS3.18 §8.3.4, PS3.4 C.2.2.2)."""

from __future__ import annotations

import pytest

from shared.dicomweb.query import MAX_LIMIT, normalise, parse
from shared.errors import BadRequest


def one(level="STUDY", **params: str):
    return parse({k: [v] for k, v in params.items()}, level)


@pytest.mark.parametrize(
    ("params", "kind"),
    [
        ({"PatientID": "123"}, "single"),
        ({"PatientID": ""}, "universal"),
        ({"PatientID": "*"}, "universal"),
        ({"PatientID": '""'}, "empty"),
        ({"PatientID": "12*"}, "wildcard"),
        ({"PatientName": "DOE^J?HN"}, "wildcard"),
        ({"StudyInstanceUID": "1.2.3"}, "single"),
        ({"StudyInstanceUID": "1.2.3\\1.2.4"}, "list"),
        ({"StudyInstanceUID": "1.2.3,1.2.4"}, "list"),
        ({"StudyDate": "20200101"}, "single"),
        ({"StudyDate": "20200101-20201231"}, "range"),
        ({"StudyDate": "-20201231"}, "range"),
        ({"StudyDate": "20200101-"}, "range"),
        ({"StudyDate": "-"}, "universal"),
        ({"ModalitiesInStudy": "CT\\MR"}, "list"),
        ({"ModalitiesInStudy": "CT,MR"}, "list"),
    ],
)
def test_matching_types(params: dict[str, str], kind: str) -> None:
    (condition,) = one(**params).conditions
    assert condition.kind == kind


def test_keyword_or_tag() -> None:
    by_tag = one(**{"00100020": "X"}).conditions[0]
    by_keyword = one(PatientID="X").conditions[0]
    assert (by_tag.keyword, by_tag.tag, by_tag.vr) == (by_keyword.keyword, "00100020", "LO")
    assert one(**{"0020000d": "1.2"}).conditions[0].keyword == "StudyInstanceUID"  # lower-case hex


@pytest.mark.parametrize(
    "params",
    [
        {"Foo": "1"},
        {"12345678": "1"},
        {"StudyDate": "2020-13-45"},
        {"StudyDate": "abc"},
        {"StudyDate": "20200230"},
        {"StudyDate": "2020*"},
        {"StudyTime": "2500"},
        {"StudyDate": "20201231-20200101"},
        {"StudyInstanceUID": "1.02"},
        {"StudyInstanceUID": "abc"},
        {"NumberOfStudyRelatedInstances": "many"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "0"},
        {"offset": "-3"},
        {"offset": "99999999999999999999999"},  # found by the HTTP fuzz: 500 in islice
        {"offset": "²"},  # a digit to str.isdigit, not to int()
        {"limit": "٣"},
        {"fuzzymatching": "maybe"},
        {"includefield": "not a keyword!"},
        {"RequestAttributesSequence": "x"},
        {"Rows": "512"},  # an instance attribute at the study level
    ],
)
def test_bad_requests(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        one(**params)


def test_repeated_matching_key_is_400() -> None:
    with pytest.raises(BadRequest, match="more than once"):
        parse({"PatientID": ["a", "b"]}, "STUDY")
    with pytest.raises(BadRequest, match="more than once"):
        parse({"PatientID": ["a"], "00100020": ["b"]}, "STUDY")


def test_query_contradicting_the_path_is_400() -> None:
    with pytest.raises(BadRequest, match="contradicts"):
        parse({"StudyInstanceUID": ["1.2.4"]}, "SERIES", study_uid="1.2.3")
    assert parse({"StudyInstanceUID": ["1.2.3"]}, "SERIES", study_uid="1.2.3").conditions


def test_level_scoping_of_matching_keys() -> None:
    assert parse({"PatientID": ["x"]}, "SERIES").conditions  # all series: study keys too
    with pytest.raises(BadRequest):
        parse({"PatientID": ["x"]}, "SERIES", study_uid="1.2.3")
    assert parse({"Modality": ["CT"]}, "INSTANCE").conditions
    with pytest.raises(BadRequest):
        parse({"Modality": ["CT"]}, "INSTANCE", study_uid="1.2", series_uid="1.3")


def test_includefield_forms() -> None:
    query = parse({"includefield": ["StudyDescription,00081030", "PatientAge"]}, "STUDY")
    assert query.includefields == {"00081030", "00101010"}
    assert parse({"includefield": ["all"]}, "STUDY").include_all
    # A valid tag the index does not keep is ignored, not an error.
    assert parse({"includefield": ["7FE00010"]}, "STUDY").includefields == set()


def test_limit_is_capped_and_offset_defaults() -> None:
    query = parse({"limit": [str(MAX_LIMIT + 5)]}, "STUDY")
    assert (query.limit, query.limit_capped, query.offset) == (MAX_LIMIT, True, 0)
    assert parse({"limit": ["5"], "offset": ["10"]}, "STUDY").offset == 10


def test_fuzzy_and_combined_datetime() -> None:
    assert parse({"fuzzymatching": ["TRUE"]}, "STUDY").fuzzy
    combined = parse({"StudyDate": ["20060705-20060707"], "StudyTime": ["1000-1800"]}, "STUDY")
    assert combined.combined_datetime
    separate = parse({"StudyDate": ["20060705"], "StudyTime": ["1000-1800"]}, "STUDY")
    assert not separate.combined_datetime


def test_sequence_matching_path() -> None:
    (condition,) = parse(
        {"RequestAttributesSequence.RequestedProcedureID": ["RP1"]}, "SERIES"
    ).conditions
    assert (condition.tag, condition.item_tag) == ("00400275", "00401001")


@pytest.mark.parametrize(
    ("vr", "value", "end", "expected"),
    [
        ("DA", "20200102", "low", "20200102"),
        ("DA", "2020.01.02", "low", "20200102"),
        ("TM", "10", "low", "100000.000000"),
        ("TM", "10", "high", "105959.999999"),
        ("TM", "1030", "high", "103059.999999"),
        ("TM", "10:30:15.5", "low", "103015.500000"),
        ("DT", "2020", "low", "20200101000000.000000"),
        ("DT", "2020", "high", "20201231235959.999999"),
        ("DT", "20200102103015+0100", "low", "20200102103015.000000"),
    ],
)
def test_normalise(vr: str, value: str, end: str, expected: str) -> None:
    assert normalise(vr, value, end=end) == expected
