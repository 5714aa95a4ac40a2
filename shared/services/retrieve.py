"""WADO-RS and WADO-URI use cases: find the instances, transcode or render them when
asked, then answer inline or by redirect.

A Lambda response carries at most 6 MB (binary as base64), so bodies over the inline
limit go through S3: a single original object is served by a presigned GET of the object
itself (WADO-URI); anything else (WADO-RS bodies, anonymized objects) is assembled into
``retrieve/`` with a streamed multipart upload, one instance in memory at a time, and
served by a presigned GET of the assembled object (expired by a lifecycle rule).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared import budget
from shared.deadline import Deadline
from shared.dicom import syntaxes
from shared.dicom.render_params import PNG
from shared.dicomweb import multipart
from shared.dicomweb.wado import UriRequest
from shared.errors import NotAcceptable, NotFound, PayloadTooLarge
from shared.ports import Catalog, InstanceRow, ObjectStore

DICOM = "application/dicom"
ASSEMBLED_PREFIX = "retrieve/"
_ROWS, _COLUMNS, _BITS_ALLOCATED = "00280010", "00280011", "00280100"
_NUMBER_OF_FRAMES, _PHOTOMETRIC = "00280008", "00280004"
# Decoded pixels one WADO-RS request may transcode. Measured (README, `python -m bench --only
# render`): 12-25 MB/s for JPEG 2000 decode or encode on one core, so 256 MiB is 10-20 s of
# the 29 s API Gateway allows (the deadline, ``shared.deadline``, stops what is left). A
# single instance is always tried (up to transcode's 1 GiB).
TRANSCODE_BUDGET = 256 << 20


@dataclass(frozen=True)
class Media:
    """What a body is: the values ``shared.http`` writes as the answer's headers, and the
    type and name an object assembled for a redirect is served with."""

    media_type: str
    #: Set for a multipart/related body of ``media_type`` parts, delimited by it.
    boundary: str = ""
    #: The name a download is saved under.
    filename: str = ""
    #: Whether an inline answer names ``filename`` too: a file to save, not to show.
    attachment: bool = False
    #: A strong validator of the body (``If-None-Match`` compares with it).
    etag: str = ""
    #: The body is gzip-compressed.
    gzipped: bool = False
    #: The body depends on whether the client accepts gzip.
    varies_by_encoding: bool = False

    @property
    def content_type(self) -> str:
        """The body's media type, with its multipart parameters."""
        if self.boundary:
            return multipart.related_type(self.media_type, self.boundary)
        return self.media_type


@dataclass(frozen=True)
class Inline:
    """A body returned by the function."""

    body: bytes
    media: Media


@dataclass(frozen=True)
class Redirect:
    """303 See Other to a short-lived presigned URL."""

    url: str


@dataclass(frozen=True)
class NotModified:
    """304: the client's copy (``If-None-Match``) is current."""

    etag: str


Outcome = Inline | Redirect | NotModified


class Anonymizer(Protocol):
    """PS3.15 Basic Profile with the deployment key."""

    def __call__(self, data: bytes) -> bytes:
        """The de-identified Part 10 file."""

    def uid(self, uid: str) -> str:
        """The UID that replaces ``uid`` in de-identified objects."""


@dataclass(frozen=True)
class Delivery:
    """How bodies leave the function."""

    store: ObjectStore
    inline_limit: int
    presign_ttl: int
    anonymizer: Anonymizer
    memory_budget: int = field(default_factory=budget.request_budget)
    #: When to stop starting work on another instance (``shared.deadline``).
    deadline: Deadline = field(default_factory=Deadline.never)


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


def _attr(row: InstanceRow, tag: str) -> Any:
    """First value of an instance attribute kept in the index (DICOM JSON), or None."""
    element = row.attrs.get(tag) or {}
    values = element.get("Value") or [None]
    return values[0]


def _is_image(row: InstanceRow) -> bool:
    return _attr(row, _ROWS) is not None


def _frames(row: InstanceRow) -> int:
    try:
        return max(int(_attr(row, _NUMBER_OF_FRAMES) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _decoded_size(row: InstanceRow) -> int:
    """Bytes of decoded pixels of an instance, from the index (0 for non-images)."""
    try:
        rows, columns = int(_attr(row, _ROWS) or 0), int(_attr(row, _COLUMNS) or 0)
        bits = int(_attr(row, _BITS_ALLOCATED) or 8)
    except (TypeError, ValueError):
        return 0
    samples = 1 if str(_attr(row, _PHOTOMETRIC) or "").startswith(("MONO", "PALETTE")) else 3
    return rows * columns * samples * max(bits, 8) // 8 * _frames(row)


def _check_transfer_syntax(rows: list[InstanceRow], transfer_syntax: str | None) -> None:
    """406 (or 413) up front for what cannot be produced, before any instance is read."""
    changed = [
        r for r in rows if transfer_syntax is not None and r.transfer_syntax != transfer_syntax
    ]
    if not changed:
        return
    syntaxes.require_producible(transfer_syntax)
    if transfer_syntax == syntaxes.JPEG_BASELINE:
        for row in changed:
            bits = _attr(row, _BITS_ALLOCATED)
            if bits is not None and int(bits) != 8:
                raise NotAcceptable(
                    "JPEG Baseline holds 8-bit samples only; an instance has"
                    f" {int(bits)}-bit samples: ask for a lossless transfer syntax"
                )
    if len(changed) > 1 and sum(_decoded_size(r) for r in changed) > TRANSCODE_BUDGET:
        raise PayloadTooLarge(
            f"transcoding more than {TRANSCODE_BUDGET >> 20} MiB of pixels would not finish"
            " within the API's 29 s: ask series by series or instance by instance"
        )


def _stored_syntax(row: InstanceRow, transfer_syntax: str | None) -> str:
    """The transfer syntax an instance leaves in."""
    return row.transfer_syntax if transfer_syntax is None else transfer_syntax


#: Reading a file whole to work on it (parse, anonymize, transcode, render) holds it at
#: least twice: the bytes and what is made of them.
WHOLE_READ_FACTOR = 2


def read_whole(row: InstanceRow, delivery: Delivery, what: str) -> bytes:
    """The stored object, read whole to work on it; 413 with the numbers when that alone
    would exceed the request's memory budget (a frame of such an object is read by range)."""
    needed = row.size * WHOLE_READ_FACTOR
    if needed > delivery.memory_budget:
        raise PayloadTooLarge(budget.too_large(what, needed, delivery.memory_budget))
    return delivery.store.get(row.blob_key)


def _instance_bytes(
    row: InstanceRow, anonymize: bool, transfer_syntax: str | None, delivery: Delivery
) -> bytes:
    data = read_whole(row, delivery, "re-encoding this instance")
    if anonymize:
        data = delivery.anonymizer(data)
    if transfer_syntax is not None and transfer_syntax != row.transfer_syntax:
        from shared.dicom import transcode  # noqa: PLC0415 - pixel libraries only when needed

        data = transcode.transcode_bytes(
            data, transfer_syntax, memory_budget=delivery.memory_budget
        )
    return data


def retrieve_rs(
    rows: list[InstanceRow],
    *,
    transfer_syntax: str | None,
    anonymize: bool,
    delivery: Delivery,
) -> Outcome:
    """multipart/related; type="application/dicom" of the instances (PS3.18 §10.4)."""
    _check_transfer_syntax(rows, transfer_syntax)
    media = Media(DICOM, boundary=multipart.new_boundary(), filename="retrieve.multipart")
    chunks = _multipart(rows, media.boundary, anonymize, transfer_syntax, delivery)
    return deliver(chunks, media, delivery)


def _multipart(
    rows: list[InstanceRow],
    boundary: str,
    anonymize: bool,
    transfer_syntax: str | None,
    delivery: Delivery,
) -> Iterator[bytes]:
    def content(row: InstanceRow) -> Iterator[bytes]:
        # Between instances: a body being assembled in S3 is aborted by put_stream.
        delivery.deadline.check("retrieving these instances")
        if anonymize or _stored_syntax(row, transfer_syntax) != row.transfer_syntax:
            yield _instance_bytes(row, anonymize, transfer_syntax, delivery)
        else:
            yield from delivery.store.chunks(row.blob_key)

    parts = (
        (f"{DICOM}; transfer-syntax={_stored_syntax(row, transfer_syntax)}", content(row))
        for row in rows
    )
    return multipart.stream_related(parts, boundary)


def deliver(chunks: Iterator[bytes], media: Media, delivery: Delivery) -> Outcome:
    """Inline when the whole body fits the limit, else the body assembled in S3 and a
    redirect: chunks are buffered up to the limit, then streamed (one instance in memory)."""
    buffered: list[bytes] = []
    size = 0
    for chunk in chunks:
        buffered.append(chunk)
        size += len(chunk)
        if size > delivery.inline_limit:
            return _assembled(itertools.chain(buffered, chunks), media, delivery)
    return Inline(b"".join(buffered), media)


def _assembled(chunks: Iterator[bytes], media: Media, delivery: Delivery) -> Redirect:
    key = f"{ASSEMBLED_PREFIX}{uuid.uuid4()}"
    delivery.store.put_stream(key, chunks, media.content_type)
    url = delivery.store.presign_get(
        key, expires=delivery.presign_ttl, content_type=media.content_type, filename=media.filename
    )
    return Redirect(url)


def retrieve_uri(row: InstanceRow, request: UriRequest, delivery: Delivery) -> Outcome:
    """One instance as a Part 10 file or a rendered image (WADO-URI, PS3.18 §9)."""
    chosen = request.choose(image=_is_image(row), single_frame=_frames(row) <= 1)
    if chosen != DICOM:
        return _rendered(row, request, chosen, delivery)
    transfer_syntax = request.transfer_syntax
    if transfer_syntax == row.transfer_syntax:
        transfer_syntax = None
    _check_transfer_syntax([row], transfer_syntax)
    filename = f"{_download_uid(row, request.anonymize, delivery)}.dcm"
    download = Media(DICOM, filename=filename, attachment=True)
    if not request.anonymize and transfer_syntax is None:
        if row.size <= delivery.inline_limit:
            return Inline(delivery.store.get(row.blob_key), download)
        url = delivery.store.presign_get(
            row.blob_key, expires=delivery.presign_ttl, content_type=DICOM, filename=filename
        )
        return Redirect(url)
    data = _instance_bytes(row, request.anonymize, transfer_syntax, delivery)
    return deliver(iter([data]), download, delivery)


def _rendered(row: InstanceRow, request: UriRequest, media: str, delivery: Delivery) -> Outcome:
    from shared.dicom import render  # noqa: PLC0415 - pixel libraries only when needed

    data = read_whole(row, delivery, "rendering this instance")
    if request.anonymize:  # refuses burned-in annotation (409); the image has no header
        data = delivery.anonymizer(data)
    body = render.render_bytes(data, request.rendering, media, memory_budget=delivery.memory_budget)
    extension = "png" if media == PNG else "jpg"
    name = f"{_download_uid(row, request.anonymize, delivery)}.{extension}"
    return deliver(iter([body]), Media(media, filename=name), delivery)


def _download_uid(row: InstanceRow, anonymize: bool, delivery: Delivery) -> str:
    """The SOP Instance UID a download is named after: the replaced one when anonymized."""
    return delivery.anonymizer.uid(row.sop_instance_uid) if anonymize else row.sop_instance_uid
