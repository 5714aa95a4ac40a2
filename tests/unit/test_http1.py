"""The emulator's request head reader against the standard library's parser."""

from __future__ import annotations

import email.parser
import http.client
import io
import re

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


# ---------------------------------------------------------------- the body reader

LIMIT = 64 * 1024


class RecordingStream(io.BytesIO):
    """A body stream that records the largest read asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size >= 0, "an unbounded read"
        self.largest = max(self.largest, size)
        return super().read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size >= 0, "an unbounded line"
        self.largest = max(self.largest, size)
        return super().readline(size)


def headers(**fields: str) -> http.client.HTTPMessage:
    message = http.client.HTTPMessage()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


CHUNKED = headers(Transfer_Encoding="chunked")
_extensions = st.sampled_from([b"", b";a=b", b" ;x", b'; name="v"'])


def chunked(parts: list[bytes], extension: bytes = b"", trailer: bytes = b"") -> bytes:
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in parts if p)
    return framed + b"0\r\n" + trailer + b"\r\n"


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=3000), max_size=12),
    _extensions,
    st.sampled_from([b"", b"X-Trailer: 1\r\n"]),
)
def test_chunked_bodies_read_back_whole(
    parts: list[bytes], extension: bytes, trailer: bytes
) -> None:
    stream = RecordingStream(chunked(parts, extension, trailer) + b"NEXT")
    assert http1.read_body(CHUNKED, stream, LIMIT) == b"".join(parts)
    assert stream.getvalue()[stream.tell() :] == b"NEXT"  # the next request is left unread


@settings(max_examples=300)
@given(st.integers(LIMIT + 1, 2**64 - 1), st.binary(max_size=100))
def test_a_declared_chunk_over_the_limit_is_refused_before_it_is_read(
    size: int, data: bytes
) -> None:
    stream = RecordingStream(b"%x\r\n" % size + data)
    with pytest.raises(http1.BodyTooLarge):
        http1.read_body(CHUNKED, stream, LIMIT)
    assert stream.largest <= 4097  # the size line only


@settings(max_examples=200)
@given(st.lists(st.integers(1, 40_000), min_size=1, max_size=6))
def test_chunks_adding_up_over_the_limit_are_refused_at_the_one_that_crosses(
    sizes: list[int],
) -> None:
    parts = [b"a" * n for n in sizes]
    stream = RecordingStream(chunked(parts))
    if sum(sizes) <= LIMIT:
        assert len(http1.read_body(CHUNKED, stream, LIMIT)) == sum(sizes)
    else:
        with pytest.raises(http1.BodyTooLarge):
            http1.read_body(CHUNKED, stream, LIMIT)
    assert stream.largest <= LIMIT


@settings(max_examples=300)
@given(st.lists(st.binary(min_size=1, max_size=500), min_size=1, max_size=5), st.data())
def test_a_truncated_body_is_a_framing_error_never_a_shorter_body(
    parts: list[bytes], data: st.DataObject
) -> None:
    whole = chunked(parts)
    cut = data.draw(st.integers(0, len(whole) - 1))
    with pytest.raises(http1.BodyError):
        http1.read_body(CHUNKED, RecordingStream(whole[:cut]), LIMIT)
    body = b"".join(parts)
    short = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(http1.BodyError):
        http1.read_body(
            headers(Content_Length=str(len(body))), RecordingStream(body[:short]), LIMIT
        )


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_chunked_body_give_a_body_or_a_refusal(raw: bytes) -> None:
    stream = RecordingStream(raw)
    try:
        body = http1.read_body(CHUNKED, stream, LIMIT)
    except (http1.BodyError, http1.BodyTooLarge):
        pass
    else:
        assert len(body) <= LIMIT
    assert stream.largest <= max(4097, http1.HEAD_LIMIT + 1)


@settings(max_examples=300)
@given(st.text(st.characters(max_codepoint=0xFF), max_size=25))
def test_content_length_is_one_number_or_a_framing_error(value: str) -> None:
    number = re.fullmatch(r"[ \t]*([0-9]{1,19})[ \t]*", value)
    try:
        length = http1.content_length(headers(Content_Length=value))
    except http1.BodyError:
        assert number is None
    else:
        assert number is not None and length == int(number.group(1))


def test_conflicting_content_lengths_are_a_framing_error() -> None:
    message = headers(Content_Length="3")
    message["Content-Length"] = "4"
    with pytest.raises(http1.BodyError):
        http1.content_length(message)


# ---------------------------------------------------------------- the head, around its limit


@settings(max_examples=300)
@given(st.lists(st.integers(0, 4000), min_size=1, max_size=8), st.integers(-40, 40))
def test_heads_around_the_limit_are_refused_exactly_past_it(sizes: list[int], shift: int) -> None:
    total_values = sum(sizes)
    target = http1.HEAD_LIMIT + shift - len(LINE.rstrip(b"\r\n"))
    sizes[0] += max(target - total_values, -sizes[0])  # bring the total near the limit
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * n) for i, n in enumerate(sizes)) + b"\r\n"
    total = len(LINE.rstrip(b"\r\n")) + sum(sizes)
    stream = CountingStream(fields)
    if total <= http1.HEAD_LIMIT:
        assert len(http1.read_head(LINE, stream).headers) == len(sizes)
    else:
        with pytest.raises(http1.HeadError) as error:
            http1.read_head(LINE, stream)
        assert error.value.status == 431
    assert stream.taken <= http1.READ_LIMIT


@settings(max_examples=100)
@given(st.integers(http1.HEAD_LIMIT + 1, 200_000), st.sampled_from([b"a", b" ", b":", b"\xff"]))
def test_any_long_head_is_read_to_a_bound(size: int, filler: bytes) -> None:
    stream = CountingStream(b"X: " + filler * size + b"\r\n\r\n")
    try:
        head = http1.read_head(LINE, stream)
    except http1.HeadError as error:
        assert error.status == 431
    else:  # white space around a value is not part of it: an empty value fits
        assert head.headers["X"] == "" and filler == b" "
    assert stream.taken <= http1.READ_LIMIT
