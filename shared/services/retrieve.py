"""WADO-RS and WADO-URI use cases: find the instances, then answer inline or by redirect.

A Lambda response carries at most 6 MB (binary as base64), so bodies over the inline
limit go through S3: a single original object is served by a presigned GET of the object
itself (WADO-URI); anything else (WADO-RS bodies, anonymized objects) is assembled into
``retrieve/`` with a streamed multipart upload, one instance in memory at a time, and
served by a presigned GET of the assembled object (expired by a lifecycle rule).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shared.dicomweb.multipart import new_boundary
from shared.errors import NotAcceptable, NotFound
from shared.ports import Catalog, InstanceRow, ObjectStore

DICOM = "application/dicom"
ASSEMBLED_PREFIX = "retrieve/"
_PART_OVERHEAD = 160  # boundary and part headers per instance
_ANONYMIZED_GROWTH = 4096  # added attributes, longer UIDs (private tags usually shrink it)


@dataclass(frozen=True)
class Inline:
    """A body returned by the function."""

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Redirect:
    """303 See Other to a short-lived presigned URL."""

    url: str


Outcome = Inline | Redirect


@dataclass(frozen=True)
class Delivery:
    """How bodies leave the function."""

    store: ObjectStore
    inline_limit: int
    presign_ttl: int
    anonymizer: Callable[[bytes], bytes]  # PS3.15 Basic Profile with the deployment key


def locate(
    catalog: Catalog, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[InstanceRow]:
    """The stored instances of a study, series or instance; 404 when there are none."""
    if sop_uid is not None:
        rows = [
            r
            for r in catalog.instances_by_uid([sop_uid])
            if r.study_uid == study_uid and (series_uid is None or r.series_uid == series_uid)
        ]
    else:
        rows = list(catalog.instances(study_uid, series_uid))
    if not rows:
        raise NotFound("no such study, series or instance")
    return rows


def _check_transfer_syntax(rows: list[InstanceRow], transfer_syntax: str | None) -> None:
    if transfer_syntax is None:
        return
    if any(r.transfer_syntax != transfer_syntax for r in rows):
        raise NotAcceptable(
            "transcoding is not available yet: ask for transfer-syntax=* (the stored encoding)"
        )


def _instance_bytes(row: InstanceRow, anonymize: bool, delivery: Delivery) -> bytes:
    data = delivery.store.get(row.blob_key)
    return delivery.anonymizer(data) if anonymize else data


def _part_header(boundary: str, row: InstanceRow) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={row.transfer_syntax}\r\n\r\n"
    ).encode("ascii")


def retrieve_rs(
    rows: list[InstanceRow],
    *,
    transfer_syntax: str | None,
    anonymize: bool,
    delivery: Delivery,
) -> Outcome:
    """multipart/related; type="application/dicom" of the instances (PS3.18 §10.4)."""
    _check_transfer_syntax(rows, transfer_syntax)
    boundary = new_boundary()
    content_type = f'multipart/related; type="{DICOM}"; boundary={boundary}'
    estimate = sum(r.size + _PART_OVERHEAD for r in rows) + 64
    if anonymize:
        estimate += _ANONYMIZED_GROWTH * len(rows)
    if estimate <= delivery.inline_limit:
        chunks = list(_multipart(rows, boundary, anonymize, delivery))
        body = b"".join(chunks)
        if len(body) <= delivery.inline_limit:
            return Inline(body, content_type)
        return _assembled(iter(chunks), content_type, "retrieve.multipart", delivery)
    return _assembled(
        _multipart(rows, boundary, anonymize, delivery),
        content_type,
        "retrieve.multipart",
        delivery,
    )


def _multipart(
    rows: list[InstanceRow], boundary: str, anonymize: bool, delivery: Delivery
) -> Iterator[bytes]:
    for row in rows:
        yield _part_header(boundary, row)
        if anonymize:
            yield _instance_bytes(row, True, delivery)
        else:
            yield from delivery.store.chunks(row.blob_key)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def _assembled(
    chunks: Iterator[bytes], content_type: str, filename: str, delivery: Delivery
) -> Redirect:
    key = f"{ASSEMBLED_PREFIX}{uuid.uuid4()}"
    delivery.store.put_stream(key, chunks, content_type)
    url = delivery.store.presign_get(
        key, expires=delivery.presign_ttl, content_type=content_type, filename=filename
    )
    return Redirect(url)


def retrieve_uri(
    row: InstanceRow, *, transfer_syntax: str | None, anonymize: bool, delivery: Delivery
) -> Outcome:
    """The Part 10 file of one instance (WADO-URI, PS3.18 §9)."""
    _check_transfer_syntax([row], transfer_syntax)
    filename = f"{row.sop_instance_uid}.dcm"
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if not anonymize:
        if row.size <= delivery.inline_limit:
            return Inline(delivery.store.get(row.blob_key), DICOM, disposition)
        url = delivery.store.presign_get(
            row.blob_key, expires=delivery.presign_ttl, content_type=DICOM, filename=filename
        )
        return Redirect(url)
    data = _instance_bytes(row, True, delivery)
    if len(data) <= delivery.inline_limit:
        return Inline(data, DICOM, disposition)
    return _assembled(iter([data]), DICOM, filename, delivery)
