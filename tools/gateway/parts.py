"""Body parts of a ``multipart/related`` response read as it arrives (RFC 2046 §5.1): one
part in memory at a time, whatever the number of parts. Pure: takes chunks of bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

MAX_HEADERS = 16 * 1024


class MalformedMultipart(Exception):
    """The body does not follow the multipart framing."""


def split(chunks: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    """Each body part's content, in order, as soon as its closing delimiter is in.

    Tolerates a preamble, transport padding after a delimiter and an epilogue. Raises
    :class:`MalformedMultipart` when the body ends inside a part or before its close
    delimiter, or a part's headers run past :data:`MAX_HEADERS`."""
    reader = _Reader(boundary)
    for chunk in chunks:
        reader.buf += chunk
        while True:
            part = reader.step()
            if part is None:
                break
            if isinstance(part, _Marker):
                return
            yield part
    raise MalformedMultipart(f"the body ended in the {reader.state}")


class _Marker:
    """What a step of the reader found when it is not a part."""


_CLOSED = _Marker()  # the close delimiter was read
_MOVED = _Marker()  # a marker was passed: step again


class _Reader:
    """The framing state between chunks: the bytes not yet consumed and where in a part
    they are."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.closing = b"\r\n" + self.delimiter
        self.buf = bytearray()
        self.state = "preamble"
        self.scan = 0  # where the next search for the state's marker starts

    def _next(self, state: str, consumed: int) -> _Marker:
        del self.buf[:consumed]
        self.state, self.scan = state, 0
        return _MOVED

    def step(self) -> bytes | _Marker | None:
        """Read up to the next part: its content, :data:`_CLOSED`, or None (more bytes
        needed)."""
        while True:
            found: bytes | _Marker | None = getattr(self, f"_{self.state}")()
            if found is not _MOVED:
                return found

    def _preamble(self) -> _Marker | None:
        at = self.buf.find(self.delimiter, self.scan)
        if at < 0:
            self.scan = max(0, len(self.buf) - len(self.delimiter))
            return None
        return self._next("delimiter", at + len(self.delimiter))

    def _delimiter(self) -> _Marker | None:
        if len(self.buf) < 2:
            return None
        if self.buf.startswith(b"--"):
            return _CLOSED  # the epilogue is ignored
        end = self.buf.find(b"\n")
        return None if end < 0 else self._next("headers", end + 1)

    def _headers(self) -> _Marker | None:
        if self.buf.startswith(b"\r\n"):
            return self._next("content", 2)
        end = self.buf.find(b"\r\n\r\n", self.scan)
        if end >= 0:
            return self._next("content", end + 4)
        if len(self.buf) > MAX_HEADERS:
            raise MalformedMultipart("part headers too long")
        self.scan = max(0, len(self.buf) - 3)
        return None

    def _content(self) -> bytes | None:
        at = self.buf.find(self.closing, self.scan)
        if at < 0:
            self.scan = max(0, len(self.buf) - len(self.closing) + 1)
            return None
        part = bytes(self.buf[:at])
        self._next("delimiter", at + len(self.closing))
        return part


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a Content-Type header ('' when absent)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"')
    return ""
