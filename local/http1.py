"""The request head (request line and header fields) of HTTP/1.x, read for the emulator.

``http.server`` parses header fields with the e-mail parser, which took a fifth of the
server's CPU for a small QIDO request. This reads them directly, with the same limits
(65,536 bytes a line, 100 fields) and the same answers to what it refuses, and returns the
same ``http.client.HTTPMessage``.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

MAX_LINE = 65536
MAX_FIELDS = 100
_SPACE = " \t"  # optional white space around a value (RFC 9110 5.6.3)


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
    words = request_line.decode("iso-8859-1").rstrip("\r\n").split()
    if len(words) != 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request syntax")
    command, path, version = words
    if not version.startswith("HTTP/"):
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
    number = version[5:].split(".")
    if len(number) != 2 or not all(p.isdigit() and len(p) <= 10 for p in number):
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
    if int(number[0]) >= 2:
        raise HeadError(
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version[5:]})"
        )
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # not a scheme-relative URL
    return Head(command, path, version, _fields(stream))


def _fields(stream: Lines) -> http.client.HTTPMessage:
    headers = http.client.HTTPMessage()
    name, value = "", ""
    for count in range(MAX_FIELDS + 2):
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
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
            headers[name] = value
        name, sep, value = text.partition(":")
        name, value = name.strip(_SPACE), value.strip(_SPACE)
        if not sep or not name:
            raise HeadError(HTTPStatus.BAD_REQUEST, "Bad header field")
    if name:
        headers[name] = value
    return headers
