"""multipart/related parsing (RFC 2046 §5.1) as STOW-RS clients actually send it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.dicomweb.multipart import build_related, new_boundary, parse_related
from shared.errors import BadRequest


def test_round_trip_of_two_parts() -> None:
    body = build_related([(b"one", "application/dicom"), (b"two\r\n", "application/dicom")], "b1")
    parts = parse_related(body, "b1")
    assert [p.content for p in parts] == [b"one", b"two\r\n"]
    assert all(p.content_type == "application/dicom" for p in parts)


def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"this is a preamble\r\n--XX\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--XX--\r\nepilogue"
    assert [p.content for p in parse_related(body, "XX")] == [b"DATA"]


def test_bare_lf_line_ends_and_transport_padding() -> None:
    body = b"--XX  \nContent-Type: application/dicom\n\nDATA\n--XX--\n"
    assert [p.content for p in parse_related(body, "XX")] == [b"DATA"]


def test_part_without_headers() -> None:
    body = b"--XX\r\n\r\nDATA\r\n--XX--"
    parts = parse_related(body, "XX")
    assert parts[0].content == b"DATA"
    assert parts[0].content_type is None


def test_boundary_lookalike_inside_content_is_content() -> None:
    content = b"abc\r\n--XXY not a delimiter\r\n--XX-but-also-not"
    body = build_related([(content, "application/dicom")], "XX")
    assert parse_related(body, "XX")[0].content == content


def test_header_names_are_case_insensitive() -> None:
    body = b"--XX\r\ncOnTeNt-TyPe: application/dicom\r\nContent-ID: <1>\r\n\r\nD\r\n--XX--"
    part = parse_related(body, "XX")[0]
    assert part.content_type == "application/dicom"
    assert part.headers["content-id"] == "<1>"


def test_body_ending_after_last_delimiter_without_close_is_tolerated() -> None:
    assert parse_related(b"--XX\r\n\r\nD\r\n--XX\r\n", "XX")[0].content == b"D"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no delimiter at all",
        b"--XX\r\nContent-Type: application/dicom\r\n\r\nDATA never closed",
        b"--XX--",
        b"--XX\r\nContent-Type application/dicom\r\n\r\nD\r\n--XX--",
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_related(body, "XX")


def test_missing_boundary_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_related(b"--\r\n", "")


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_any_binary_content_round_trips(contents: list[bytes]) -> None:
    boundary = new_boundary()
    body = build_related([(c, "application/dicom") for c in contents], boundary)
    assert [p.content for p in parse_related(body, boundary)] == contents


def _tiny_parts(count: int) -> bytes:
    return build_related([(b"x", "application/dicom")] * count, "XX")


def test_a_hundred_thousand_tiny_parts_parse_in_linear_time() -> None:
    """Parsing is linear in the body: a parser that copied the rest of the body for every
    part would be quadratic in the number of parts."""
    import time

    body = _tiny_parts(100_000)  # ~4.4 MB, the inline limit
    started = time.perf_counter()
    parts = parse_related(body, "XX", max_parts=None)
    elapsed = time.perf_counter() - started
    assert len(parts) == 100_000 and parts[-1].content == b"x"
    assert elapsed < 5, f"{elapsed:.1f} s for 100k parts: not linear"


def test_more_parts_than_the_limit_is_413_before_reading_them_all() -> None:
    from shared.dicomweb.multipart import MAX_PARTS
    from shared.errors import PayloadTooLarge

    assert len(parse_related(_tiny_parts(MAX_PARTS), "XX")) == MAX_PARTS
    with pytest.raises(PayloadTooLarge, match=f"at most {MAX_PARTS} body parts"):
        parse_related(_tiny_parts(MAX_PARTS + 1), "XX")
