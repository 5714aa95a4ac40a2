"""Media-type and Accept parsing (quoted and unquoted parameters are equivalent)."""

from __future__ import annotations

import pytest

from shared.dicomweb.media_types import accepts, parse, parse_list


@pytest.mark.parametrize(
    "value",
    [
        'multipart/related; type="application/dicom"; boundary=abc',
        "multipart/related; type=application/dicom; boundary=abc",
        'Multipart/Related;boundary="abc";TYPE="application/dicom"',
        'multipart/related ;  boundary = abc ; type = "application/dicom" ; start="<1>"',
    ],
)
def test_parameters_quoted_or_not_in_any_order(value: str) -> None:
    media = parse(value)
    assert media.essence == "multipart/related"
    assert media.param("type") == "application/dicom"
    assert media.param("boundary") == "abc"


def test_empty_value_has_no_essence() -> None:
    assert parse(None).essence == ""
    assert parse("  ").essence == ""


def test_accept_list_is_ordered_by_q() -> None:
    ranges = parse_list("application/json;q=0.5, application/dicom+json, */*;q=0.1")
    assert [m.essence for m, _ in ranges] == ["application/dicom+json", "application/json", "*/*"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, True),
        ("application/dicom+json", True),
        ("application/json", True),
        ("*/*", True),
        ("application/*", True),
        ("application/dicom+xml", False),
        ("application/dicom+json;q=0", False),
        ("text/html, image/png", False),
    ],
)
def test_accepts(accept: str | None, expected: bool) -> None:
    assert accepts(accept, ("application/dicom+json", "application/json")) is expected
