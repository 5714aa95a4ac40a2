"""WADO-RS resources viewers need: metadata, frames, bulk data, rendered images, thumbnails
(PS3.18 §10.4, §8.3.5).

Metadata comes from the index: each instance's DICOM JSON was built once, when it was
stored (``shared.dicom.metadata``), so a series' metadata is one read of the index, not a
re-read of its Part 10 files (instances stored before that, and anonymized requests, are
built from the file). Frames, bulk data and images are read from the stored object; they
leave inline or, over the inline limit, through an assembled object and a 303, as every
WADO answer does (``services.retrieve``).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from shared.dicom import metadata as instance_metadata
from shared.dicom import pixels
from shared.dicom.render_params import PNG, RenderParameters
from shared.dicomweb import multipart, paths
from shared.dicomweb.wado import DICOM_JSON, FRAME_MEDIA, OCTET_STREAM, FrameAccept
from shared.errors import NotAcceptable, NotFound
from shared.ports import InstanceRow
from shared.services.retrieve import Delivery, Media, NotModified, Outcome, deliver, read_whole

if TYPE_CHECKING:
    from shared.dicomweb.wado import RenderedRequest

_NATIVE = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)
#: Uncompressed frames up to this many bytes are gzip-compressed when the client accepts it.
GZIP_MAX_BYTES = 16 << 20
#: Uncompressed little-endian instances from this size on have their frames read by range
#: (the header, then each frame's bytes), not whole: a frame of a 1 GB multi-frame costs a
#: frame of memory.
RANGED_MIN_BYTES = 32 << 20
#: How much of the file's start is read to find the pixel data's place.
_HEADER_BYTES = 1 << 20
_LITTLE_ENDIAN_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_UNCOMPRESSED = f"{OCTET_STREAM}; transfer-syntax=1.2.840.10008.1.2.1"
_PLACEHOLDER = re.compile(r',"BulkDataURI":"bulk:[^"]*"')


# ------------------------------------------------------------------ metadata


def etag(rows: list[InstanceRow], anonymize: bool) -> str:
    """A strong validator of the instances' metadata: their UIDs and content hashes."""
    digest = hashlib.sha256(b"anonymized" if anonymize else b"stored")
    for row in sorted(rows, key=lambda r: r.sop_instance_uid):
        digest.update(f"{row.sop_instance_uid}\n{row.blob_key}\n".encode())
    return f'"{digest.hexdigest()[:32]}"'


@dataclass(frozen=True)
class MetadataRequest:
    """What a metadata request asks besides the instances."""

    base_url: str
    anonymize: bool = False
    accepts_gzip: bool = False
    if_none_match: str | None = None


def metadata(rows: list[InstanceRow], request: MetadataRequest, delivery: Delivery) -> Outcome:
    """The DICOM JSON of the instances, as one array (PS3.18 §10.4.1.1.2)."""
    tag = etag(rows, request.anonymize)
    if request.if_none_match is not None and _matches(request.if_none_match, tag):
        return NotModified(tag)
    parts = []
    for row in rows:
        if not row.metadata or request.anonymize:  # read from the stored file: slow
            delivery.deadline.check("building the metadata")
        parts.append(_instance_text(row, request.base_url, request.anonymize, delivery))
    body = ("[" + ",".join(parts) + "]").encode("utf-8")
    media = Media(DICOM_JSON, filename="metadata.json", etag=tag, varies_by_encoding=True)
    if request.accepts_gzip:
        packed = gzip.compress(body, 6)
        if len(packed) <= delivery.inline_limit:  # decided on the compressed size
            return deliver(iter([packed]), dataclasses.replace(media, gzipped=True), delivery)
    return deliver(iter([body]), media, delivery)


def _matches(header: str, tag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or tag in candidates


def _instance_text(row: InstanceRow, base_url: str, anonymize: bool, delivery: Delivery) -> str:
    url = paths.instance_url(base_url, row.study_uid, row.series_uid, row.sop_instance_uid)
    if row.metadata and not anonymize:
        return instance_metadata.with_urls(instance_metadata.unpack(row.metadata), url)
    document = instance_metadata.instance_json(_dataset(row, anonymize, delivery))
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    if not anonymize:
        return instance_metadata.with_urls(text, url)
    # A URI would name the instance by its original UIDs, which de-identification replaces:
    # de-identified metadata refers to no bulk data (the anonymized instance holds it).
    return _PLACEHOLDER.sub("", text)


def _dataset(row: InstanceRow, anonymize: bool, delivery: Delivery) -> Dataset:
    data = read_whole(row, delivery, "reading this instance")
    if anonymize:
        data = delivery.anonymizer(data)
    return dcmread(io.BytesIO(data))


# ------------------------------------------------------------------ frames and bulk data


def frames(
    row: InstanceRow,
    numbers: tuple[int, ...],
    accept: FrameAccept,
    *,
    anonymize: bool,
    delivery: Delivery,
) -> Outcome:
    """The frames' pixel data as multipart/related, one part per frame (PS3.18 §10.4.1.1.4).

    Uncompressed frames are gzip-compressed (level 1) when the client accepts it
    (``accept.gzip``) and the
    compressed body fits the inline limit: half the bytes of a CT frame on the wire."""
    layout = None if anonymize or row.size < RANGED_MIN_BYTES else _layout(row, delivery)
    if layout is not None:
        _check_frames(numbers, layout.count)
        if not (accept.original or accept.uncompressed):
            raise NotAcceptable("the frames are uncompressed: accept application/octet-stream")
        ranged = (layout.frame(row, n, delivery) for n in _in_time(numbers, delivery))
        return _frames_answer(
            ranged, _UNCOMPRESSED, layout.frame_size * len(numbers), accept, delivery
        )
    ds = _dataset(row, anonymize, delivery)
    pixels.require_image(ds)
    count = pixels.frame_count(ds)
    _check_frames(numbers, count)
    syntax = pixels.transfer_syntax(ds)
    media = FRAME_MEDIA.get(syntax)
    if syntax in _NATIVE or media is None:
        if not (accept.original or accept.uncompressed):
            raise NotAcceptable("the frames are uncompressed: accept application/octet-stream")
        kind = _UNCOMPRESSED
        payloads = (_native_frame(ds, n - 1) for n in numbers)
    elif accept.original or media in accept.media or "image/*" in accept.media:
        kind = f"{OCTET_STREAM if accept.original else media}; transfer-syntax={syntax}"
        payloads = (_stored_frame(ds, n - 1, count) for n in numbers)
    elif accept.uncompressed:
        kind = _UNCOMPRESSED
        payloads = (_decoded_frame(ds, n - 1, delivery) for n in _in_time(numbers, delivery))
    else:
        raise NotAcceptable(f"the frames are stored as {media}: accept it or octet-stream")
    return _frames_answer(payloads, kind, pixels.frame_bytes(ds) * len(numbers), accept, delivery)


def _check_frames(numbers: tuple[int, ...], count: int) -> None:
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise NotFound(f"frame {beyond[0]} is beyond the instance's {count} frames")


def _frames_answer(
    payloads: Iterator[bytes], kind: str, size: int, accept: FrameAccept, delivery: Delivery
) -> Outcome:
    parts = ((kind, iter([p])) for p in payloads)
    if accept.gzip and kind == _UNCOMPRESSED and size <= GZIP_MAX_BYTES:
        return _gzipped_multipart(parts, kind, delivery)
    return _multipart(parts, kind, delivery)


@dataclass(frozen=True)
class _Layout:
    """Where the frames of an uncompressed little-endian instance lie in its file."""

    offset: int
    frame_size: int
    count: int

    def frame(self, row: InstanceRow, number: int, delivery: Delivery) -> bytes:
        start = self.offset + (number - 1) * self.frame_size
        return delivery.store.read_range(row.blob_key, start, self.frame_size)


def _layout(row: InstanceRow, delivery: Delivery) -> _Layout | None:
    """The frames' place, from the file's first megabyte; None when another path must read
    the whole file (compressed, big endian, 1-bit, or the pixel data further in)."""
    head = delivery.store.read_range(row.blob_key, 0, _HEADER_BYTES)
    try:
        ds = dcmread(io.BytesIO(head), defer_size=1024)  # values over 1 KB: not read
    except Exception:  # noqa: BLE001 - the whole-file path reports what is wrong
        return None
    raw = ds._dict.get(BaseTag(0x7FE00010))
    if (
        pixels.transfer_syntax(ds) not in _LITTLE_ENDIAN_NATIVE
        or not isinstance(raw, RawDataElement)
        or raw.value is not None  # read whole: small, or cut by the header's end
        or raw.length == 0xFFFFFFFF
        or int(ds.get("BitsAllocated") or 0) not in (8, 16, 32, 64)
    ):
        return None
    size, count = pixels.frame_bytes(ds), pixels.frame_count(ds)
    if size <= 0 or size * count > raw.length or raw.value_tell + raw.length > row.size:
        return None
    return _Layout(raw.value_tell, size, count)


def _native_frame(ds: Dataset, index: int) -> bytes:
    data: bytes = ds.PixelData
    if int(ds.get("BitsAllocated") or 8) == 1:  # frames are bit-packed end to end
        return _bit_frame(ds, data, index)
    size = pixels.frame_bytes(ds)
    return bytes(data[index * size : (index + 1) * size])


def _bit_frame(ds: Dataset, data: bytes, index: int) -> bytes:
    """Frame ``index`` of 1-bit pixel data, re-packed from its first bit (frames of a size
    that is not a multiple of 8 pixels start inside a byte)."""
    import numpy as np  # noqa: PLC0415 - pixel libraries only when needed

    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    start = index * bits
    if start % 8 == 0 and bits % 8 == 0:
        return bytes(data[start // 8 : (start + bits) // 8])
    chunk = np.frombuffer(data, np.uint8, count=min(len(data), (start + bits + 7) // 8))
    unpacked = np.unpackbits(chunk, bitorder="little")[start : start + bits]
    return bytes(np.packbits(unpacked, bitorder="little").tobytes())


def _stored_frame(ds: Dataset, index: int, count: int) -> bytes:
    from pydicom.encaps import get_frame  # noqa: PLC0415

    return bytes(get_frame(ds.PixelData, index, number_of_frames=count))


def _decoded_frame(ds: Dataset, index: int, delivery: Delivery) -> bytes:
    limit = pixels.MemoryLimit(delivery.memory_budget, 4, "decoding one frame")
    frame = pixels.decode_frame(ds, index, limit=limit)
    array = frame.array
    return bytes(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def bulk(row: InstanceRow, path: str, *, anonymize: bool, delivery: Delivery) -> Outcome:
    """The value behind a ``BulkDataURI`` handed out with the metadata (PS3.18 §10.4.1.1.5)."""
    ds = _dataset(row, anonymize, delivery)
    element = instance_metadata.bulk_element(ds, path)
    if element is None or element.VR == "SQ" or element.value is None:
        raise NotFound("no bulk data at that path")
    value = element.value
    data = bytes(value) if isinstance(value, (bytes, bytearray)) else b""
    if not data:
        raise NotFound("no bulk data at that path")
    kind = OCTET_STREAM
    return _multipart(iter([(kind, iter([data]))]), kind, delivery)


def _gzipped_multipart(
    parts: Iterator[tuple[str, Iterator[bytes]]], kind: str, delivery: Delivery
) -> Outcome:
    media = _related(kind)
    body = b"".join(multipart.stream_related(parts, media.boundary))
    packed = gzip.compress(body, 1)
    if len(packed) <= delivery.inline_limit:  # else the plain body, as metadata does
        packed_media = dataclasses.replace(media, gzipped=True, varies_by_encoding=True)
        return deliver(iter([packed]), packed_media, delivery)
    return deliver(iter([body]), media, delivery)


def _multipart(
    parts: Iterator[tuple[str, Iterator[bytes]]], kind: str, delivery: Delivery
) -> Outcome:
    media = _related(kind)
    return deliver(multipart.stream_related(parts, media.boundary), media, delivery)


def _related(kind: str) -> Media:
    """A multipart/related body whose parts are of the media type of ``kind``."""
    return Media(kind.split(";", 1)[0], boundary=multipart.new_boundary(), filename="frames")


# ------------------------------------------------------------------ rendered and thumbnails


def representative(rows: list[InstanceRow]) -> InstanceRow:
    """The instance shown for a series or study: the middle image of its first series."""
    series = rows[0].series_uid
    images = [r for r in rows if r.series_uid == series and "00280010" in r.attrs] or [
        r for r in rows if "00280010" in r.attrs
    ]
    if not images:
        raise NotAcceptable("the study or series holds no image to render")
    return images[len(images) // 2]


def rendered(
    row: InstanceRow, request: RenderedRequest, frames_asked: tuple[int, ...], delivery: Delivery
) -> Outcome:
    """One image (JPEG or PNG) per frame asked: one frame answers the image itself, several
    a multipart/related of images."""
    from shared.dicom import render  # noqa: PLC0415 - pixel libraries only when needed

    data = read_whole(row, delivery, "rendering this instance")
    if request.anonymize:  # refuses burned-in annotation (409); the image has no header
        data = delivery.anonymizer(data)
    ds = dcmread(io.BytesIO(data))
    count = pixels.frame_count(ds) if pixels.is_image(ds) else 1
    beyond = [n for n in frames_asked if n > count]
    if beyond:
        raise NotFound(f"frame {beyond[0]} is beyond the instance's {count} frames")

    def image(frame: int) -> bytes:
        parameters = _with_frame(request, frame)
        return render.render(ds, parameters, request.media, memory_budget=delivery.memory_budget)

    extension = "png" if request.media == PNG else "jpg"
    if len(frames_asked) <= 1:
        body = image(frames_asked[0] if frames_asked else 1)
        return deliver(iter([body]), Media(request.media, filename=f"image.{extension}"), delivery)
    parts = ((request.media, iter([image(n)])) for n in _in_time(frames_asked, delivery))
    return _multipart(parts, request.media, delivery)


def _in_time(numbers: tuple[int, ...], delivery: Delivery) -> Iterator[int]:
    """The frame numbers, checking the request's deadline before each decode or render."""
    for number in numbers:
        delivery.deadline.check("decoding these frames")
        yield number


def _with_frame(request: RenderedRequest, frame: int) -> RenderParameters:
    return dataclasses.replace(request.rendering, frame=frame)
