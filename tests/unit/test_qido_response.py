"""QIDO-RS negotiation, path UIDs and the warning text."""

from __future__ import annotations

import pytest

from shared.dicomweb.qido_response import MORE_RESULTS_WARNING, negotiate
from shared.dicomweb.uids import path_uid
from shared.errors import BadRequest, NotAcceptable


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/dicom+json"),
        ("", "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/dicom+json", "application/dicom+json"),
        ("application/json", "application/json"),
        ("application/json, application/dicom+json;q=0.9", "application/json"),
        ("text/html, application/*;q=0.1", "application/dicom+json"),
    ],
)
def test_negotiate(accept: str | None, media_type: str) -> None:
    assert negotiate(accept) == media_type


@pytest.mark.parametrize(
    "accept",
    ["application/dicom+xml", 'multipart/related; type="application/dicom+xml"', "text/html"],
)
def test_unacceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate(accept)


def test_path_uid() -> None:
    assert path_uid(None) is None
    assert path_uid("1.2.840.10008") == "1.2.840.10008"
    for bad in ("1.02", "abc", "1." * 40):
        with pytest.raises(BadRequest):
            path_uid(bad)


def test_warning_is_a_299_warning_with_quoted_text() -> None:
    code, agent, text = MORE_RESULTS_WARNING.split(" ", 2)
    assert (code, agent) == ("299", "o3-dpacs:")
    assert text.startswith('"') and text.endswith('"')


@pytest.mark.parametrize(
    ("value", "marked"),
    [
        ({"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]}, False),
        ({"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]}, True),
        ({"vr": "SQ", "Value": [{"00081030": {"vr": "LO", "Value": ["Échographie"]}}]}, True),
        ({"vr": "IS", "Value": [3]}, False),
    ],
)
def test_a_result_with_a_non_ascii_value_names_utf8(value: dict[str, object], marked: bool) -> None:
    from shared.services.search import _project

    result = _project({"00100010": value, "00100020": {"vr": "LO"}}, frozenset({"00100010"}))
    assert ("00080005" in result) is marked
    if marked:
        assert result["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
        assert list(result) == sorted(result)
