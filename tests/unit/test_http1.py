"""The emulator's request head reader against the standard library's parser."""

from __future__ import annotations

import email.parser
import http.client
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local import http1

LINE = b"GET /o3-dpacs-wado/qido/AE/studies?PatientID=1 HTTP/1.1\r\n"


def _stdlib(head: bytes) -> list[tuple[str, str]]:
    message = http.client.parse_headers(io.BytesIO(head))
    return list(message.items())


def test_reads_the_request_line_and_fields() -> None:
    head = http1.read_head(LINE, io.BytesIO(b"Host: h\r\nAccept: a, b\r\nX-Empty:\r\n\r\nbody"))
    assert (head.command, head.path, head.version) == (
        "GET",
        "/o3-dpacs-wado/qido/AE/studies?PatientID=1",
        "HTTP/1.1",
    )
    assert list(head.headers.items()) == [("Host", "h"), ("Accept", "a, b"), ("X-Empty", "")]
    assert head.headers.get("accept") == "a, b"  # names match case-insensitively


def test_repeated_fields_are_kept_and_the_body_is_left_unread() -> None:
    stream = io.BytesIO(b"Cookie: a\r\nCookie: b\r\n\r\nbody")
    head = http1.read_head(LINE, stream)
    assert head.headers.get_all("Cookie") == ["a", "b"]
    assert stream.read() == b"body"


def test_a_folded_field_is_joined() -> None:
    head = http1.read_head(LINE, io.BytesIO(b"X-Long: one\r\n  two\r\n\r\n"))
    assert head.headers["X-Long"] == "one two"


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n", 400),
        (b"GET / FTP/1.1\r\n", 400),
        (b"GET / HTTP/1.x\r\n", 400),
        (b"GET / HTTP/2.0\r\n", 505),
    ],
)
def test_a_bad_request_line_is_refused(line: bytes, status: int) -> None:
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(line, io.BytesIO(b"\r\n"))
    assert error.value.status == status


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        (b"NoColon\r\n\r\n", 400),
        (b": no name\r\n\r\n", 400),
        (b" folded first\r\n\r\n", 400),
        (b"X: " + b"a" * 65536 + b"\r\n\r\n", 431),
        (b"".join(b"X-%d: v\r\n" % i for i in range(http1.MAX_FIELDS + 1)) + b"\r\n", 431),
    ],
)
def test_bad_fields_are_refused(fields: bytes, status: int) -> None:
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(LINE, io.BytesIO(fields))
    assert error.value.status == status


def test_as_many_fields_as_the_standard_library_allows() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(http1.MAX_FIELDS)) + b"\r\n"
    assert len(http1.read_head(LINE, io.BytesIO(fields)).headers) == http1.MAX_FIELDS


_names = st.text("abcdefghijklmnopqrstuvwxyz-ABC0123456789", min_size=1, max_size=20)
_values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)


@settings(max_examples=300)
@given(st.lists(st.tuples(_names, _values), max_size=20))
def test_well_formed_fields_read_as_the_standard_library_reads_them(
    fields: list[tuple[str, str]],
) -> None:
    head = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in fields) + b"\r\n"
    assert list(http1.read_head(LINE, io.BytesIO(head)).headers.items()) == _stdlib(head)


@settings(max_examples=500)
@given(st.binary(max_size=300), st.binary(max_size=600))
def test_any_bytes_give_a_head_or_a_refusal(line: bytes, fields: bytes) -> None:
    try:
        head = http1.read_head(line, io.BytesIO(fields))
    except http1.HeadError as error:
        assert 400 <= error.status < 600
    else:
        assert isinstance(head.headers, http.client.HTTPMessage)


def test_the_email_parser_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the e-mail parser was called")

    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    assert http1.read_head(LINE, io.BytesIO(b"Host: h\r\n\r\n")).headers["Host"] == "h"


# ---------------------------------------------------------------- API Gateway's head limit


class CountingStream(io.BytesIO):
    """A stream that remembers how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        self.taken += len(line)
        return line


def _head_of(total: int) -> tuple[bytes, bytes]:
    """A request line and fields whose line and values hold ``total`` bytes."""
    line = b"GET /o3-dpacs-wado/qido/AE/studies HTTP/1.1"
    value = b"v" * (total - len(line) - 1)
    return line + b"\r\n", b"Host: h\r\nX-Pad: " + value + b"\r\n\r\n"


def test_a_head_of_exactly_the_api_gateway_limit_is_read() -> None:
    line, fields = _head_of(http1.HEAD_LIMIT)
    assert http1.read_head(line, io.BytesIO(fields)).headers["Host"] == "h"


def test_one_byte_more_than_the_api_gateway_limit_is_431() -> None:
    line, fields = _head_of(http1.HEAD_LIMIT + 1)
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(line, io.BytesIO(fields))
    assert error.value.status == 431
    assert "10,240" in error.value.message


def test_values_of_many_fields_count_together() -> None:
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(60)) + b"\r\n"
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(LINE, io.BytesIO(fields))
    assert error.value.status == 431


def test_a_request_line_over_the_limit_is_431() -> None:
    line = b"GET /" + b"a" * http1.HEAD_LIMIT + b" HTTP/1.1\r\n"
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(line, io.BytesIO(b"\r\n"))
    assert error.value.status == 431


@pytest.mark.parametrize("size", [20_000, 65_536, 1_000_000])
def test_a_huge_field_is_refused_after_a_bounded_read(size: int) -> None:
    stream = CountingStream(b"X-Big: " + b"a" * size + b"\r\n\r\n")
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(LINE, stream)
    assert error.value.status == 431
    assert stream.taken <= http1.READ_LIMIT


def test_refusals_do_not_echo_the_request() -> None:
    with pytest.raises(http1.HeadError) as error:
        http1.read_head(b"GET / HTTP/9<script>\r\n", io.BytesIO(b"\r\n"))
    assert "<script>" not in error.value.message
