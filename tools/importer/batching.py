"""STOW-RS request bodies that stay under the archive's payload limit (pure functions)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TypeVar

PAYLOAD_LIMIT = 4_500_000  # bytes of request body the STOW function accepts (413 above)
MAX_PARTS = 1000  # parts in one request the STOW function accepts (413 above)
BOUNDARY_BYTES = 16
CONTENT_TYPE_PART = b"Content-Type: application/dicom"

T = TypeVar("T")


def new_boundary() -> str:
    """A fresh boundary of fixed length (so the framing cost is the same for every body)."""
    return secrets.token_hex(BOUNDARY_BYTES)


def part_overhead(boundary: str) -> int:
    """Bytes a part adds besides its payload: delimiter, header, blank line, CRLF."""
    return len(b"--") + len(boundary) + 2 + len(CONTENT_TYPE_PART) + 4 + 2


def closing_overhead(boundary: str) -> int:
    return len(b"--") + len(boundary) + len(b"--\r\n")


def body_size(sizes: Sequence[int], boundary: str) -> int:
    """Exact length of :func:`encode` for payloads of these sizes."""
    return sum(sizes) + len(sizes) * part_overhead(boundary) + closing_overhead(boundary)


def encode(payloads: Sequence[bytes], boundary: str) -> bytes:
    """``multipart/related`` body of ``application/dicom`` parts (PS3.18 §8.6.1.2)."""
    chunks: list[bytes] = []
    delimiter = b"--" + boundary.encode("ascii")
    for payload in payloads:
        chunks += [delimiter, b"\r\n", CONTENT_TYPE_PART, b"\r\n\r\n", payload, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    return b"".join(chunks)


def fits_alone(size: int, limit: int = PAYLOAD_LIMIT) -> bool:
    """Whether one payload of ``size`` bytes fits in a STOW body of at most ``limit``."""
    return body_size([size], "x" * (2 * BOUNDARY_BYTES)) <= limit


def plan(
    items: Sequence[T],
    sizes: Sequence[int],
    limit: int = PAYLOAD_LIMIT,
    max_parts: int = MAX_PARTS,
) -> tuple[list[list[T]], list[T]]:
    """Split ``items`` into STOW batches whose body is at most ``limit`` bytes and holds at
    most ``max_parts`` parts, in the order given (first fit, a batch closes when the next
    item does not fit), and the items too large for any body (the upload path's).
    """
    boundary_length = 2 * BOUNDARY_BYTES
    per_part = part_overhead("x" * boundary_length)
    closing = closing_overhead("x" * boundary_length)
    batches: list[list[T]] = []
    large: list[T] = []
    current: list[T] = []
    current_size = closing
    for item, size in zip(items, sizes, strict=True):
        cost = size + per_part
        if closing + cost > limit:
            large.append(item)
            continue
        if current and (current_size + cost > limit or len(current) >= max_parts):
            batches.append(current)
            current, current_size = [], closing
        current.append(item)
        current_size += cost
    if current:
        batches.append(current)
    return batches, large
