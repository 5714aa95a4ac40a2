"""An HTTP/1.x request read for the emulator: the head, then the body's framing.

``http.server`` parses header fields with the e-mail parser, which took a fifth of the
server's CPU for a small QIDO request. :func:`read_head` reads them directly and returns the
same ``http.client.HTTPMessage``, within API Gateway's limit: the request line and the
header values together hold at most :data:`HEAD_LIMIT` bytes (REST API quota), refused with
``431`` after reading at most :data:`READ_LIMIT` bytes of head. At most 100 fields, as the
standard library allows. :func:`read_body` reads a ``Content-Length`` or chunked body and
never holds more than the limit it is given: declared sizes are checked before reading.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Protocol

#: API Gateway (REST): "total combined size of request line and header values", in bytes.
HEAD_LIMIT = 10_240
#: Bytes of head read at most, field names, separators and line ends included.
READ_LIMIT = HEAD_LIMIT + 8_192
MAX_FIELDS = 100
_SPACE = " \t"  # optional white space around a value (RFC 9110 5.6.3)
TOO_LARGE = (
    f"Request header fields too large: the request line and header values hold more than "
    f"{HEAD_LIMIT:,} bytes (API Gateway's limit)"
)


class HeadError(Exception):
    """The head cannot be read: answer ``status`` with ``message`` and close."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Lines(Protocol):
    """Where the head is read from (the connection's buffered reader)."""

    def readline(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Head:
    command: str
    path: str
    version: str
    headers: http.client.HTTPMessage


def read_head(request_line: bytes, stream: Lines) -> Head:
    """Parse the request line already read, then the header fields from ``stream``."""
    line = request_line.rstrip(b"\r\n")
    if len(line) > HEAD_LIMIT:
        raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE)
    words = line.decode("iso-8859-1").split()
    if len(words) != 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request syntax")
    command, path, version = words
    if not version.startswith("HTTP/"):
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request version")
    number = version[5:].split(".")
    if len(number) != 2 or not all(p.isdigit() and len(p) <= 10 for p in number):
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request version")
    if int(number[0]) >= 2:
        raise HeadError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "Invalid HTTP version")
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # not a scheme-relative URL
    headers = _fields(stream, READ_LIMIT - len(request_line), HEAD_LIMIT - len(line))
    return Head(command, path, version, headers)


def _fields(stream: Lines, readable: int, values_left: int) -> http.client.HTTPMessage:
    """Header fields, reading at most ``readable`` bytes and accepting at most
    ``values_left`` bytes of values."""
    headers = http.client.HTTPMessage()
    name, value = "", ""
    for count in range(MAX_FIELDS + 2):
        line = stream.readline(max(readable, 0) + 1)
        readable -= len(line)
        if readable < 0:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE)
        if line in (b"\r\n", b"\n", b""):
            break
        if count >= MAX_FIELDS:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):  # an obsolete folded continuation
            if not name:
                raise HeadError(HTTPStatus.BAD_REQUEST, "Bad header field")
            value = f"{value} {text.strip(_SPACE)}"
            continue
        if name:
            values_left = _keep(headers, name, value, values_left)
        name, sep, value = text.partition(":")
        name, value = name.strip(_SPACE), value.strip(_SPACE)
        if not sep or not name:
            raise HeadError(HTTPStatus.BAD_REQUEST, "Bad header field")
    if name:
        _keep(headers, name, value, values_left)
    return headers


def _keep(headers: http.client.HTTPMessage, name: str, value: str, values_left: int) -> int:
    """Add a field; return the bytes of values still allowed (431 when none are left)."""
    values_left -= len(value)
    if values_left < 0:
        raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE)
    headers[name] = value
    return values_left


# ---------------------------------------------------------------- the body


class BodyError(Exception):
    """The body's framing is broken (or the body ends early): answer 400 with ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BodyTooLarge(Exception):
    """The body is over the limit: answered before the rest of it is read."""


class Reader(Lines, Protocol):
    """Where the body is read from."""

    def read(self, size: int = -1, /) -> bytes: ...


_BLOCK = 1024 * 1024
_CHUNK_LINE = 4096  # a chunk-size line with its extensions, at most
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LENGTH = re.compile(r"[0-9]{1,19}")


def read_body(headers: Message, stream: Reader, limit: int) -> bytes:
    """The body framed by ``Transfer-Encoding: chunked`` or ``Content-Length``.

    Never holds more than ``limit`` bytes: a declared length or a chunk size is compared with
    what is left of the limit before anything is read (:class:`BodyTooLarge`). Malformed
    framing, or a body that ends before its framing says, is a :class:`BodyError`.
    """
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(stream, limit)
    length = content_length(headers)
    if length > limit:
        raise BodyTooLarge
    return _read_exactly(stream, length, "request body ended before its Content-Length")


def content_length(headers: Message) -> int:
    """The declared length (0 when absent); BodyError unless every value is one number."""
    values = {value.strip(" \t") for value in headers.get_all("Content-Length") or []}
    if not values:
        return 0
    if len(values) > 1:
        raise BodyError("conflicting Content-Length headers")
    text = values.pop()
    if not _LENGTH.fullmatch(text):
        raise BodyError("Content-Length must be a number of bytes")
    return int(text)


def _read_exactly(stream: Reader, size: int, ended: str) -> bytes:
    kept = bytearray()
    while len(kept) < size:
        data = stream.read(min(_BLOCK, size - len(kept)))
        if not data:
            raise BodyError(ended)
        kept += data
    return bytes(kept)


def _read_chunked(stream: Reader, limit: int) -> bytes:
    kept = bytearray()
    while True:
        line = stream.readline(_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            raise BodyError("chunked body: a chunk-size line is missing or too long")
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise BodyError("chunked body: a chunk size is not a hexadecimal number")
        size = int(size_text, 16)
        if size == 0:
            _skip_trailers(stream)
            return bytes(kept)
        if len(kept) + size > limit:
            raise BodyTooLarge
        kept += _read_exactly(stream, size, "chunked body: ended inside a chunk")
        if stream.readline(3) not in (b"\r\n", b"\n"):
            raise BodyError("chunked body: a chunk is longer than its size")


def _skip_trailers(stream: Reader) -> None:
    """Read the trailer fields after the last chunk (at most HEAD_LIMIT bytes of them)."""
    left = HEAD_LIMIT
    while True:
        line = stream.readline(left + 1)
        left -= len(line)
        if left < 0 or not line.endswith(b"\n"):
            raise BodyError("chunked body: trailer fields too long or unterminated")
        if line in (b"\r\n", b"\n"):
            return
