"""Decode the pixel data of any transfer syntax the archive holds, one frame at a time.

Native, deflated, big-endian and RLE data go through pydicom's own decoders; JPEG (Baseline,
Extended, Lossless), JPEG-LS, JPEG 2000 and HTJ2K through imagecodecs, which is not a pydicom
plugin, hence the glue here (choice measured in docs/decisions/0004-codecs.md).

A decoded frame is an array of stored values (rows, columns[, samples]) with the dtype
pydicom would give, plus the photometric interpretation *of that array*: codecs that undo a
colour transform (JPEG YCbCr, JPEG 2000 RCT/ICT) hand back RGB, and the caller must know.

This module imports numpy, imagecodecs and Pillow; import it only where pixels are touched
(shared.services.retrieve does so lazily), so requests that never decode skip their cost.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pixel_array

from shared import budget
from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.errors import DicomWebError, NotAcceptable, PayloadTooLarge

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_NATIVE = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",  # RLE: pydicom's own decoder
    }
)
_JPEG_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
_JPEG_LOSSLESS = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
_JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
JPEG_2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_HTJ2K = frozenset(
    {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
)
DECODABLE = _NATIVE | _JPEG_LOSSY | _JPEG_LOSSLESS | _JPEG_LS | JPEG_2000 | _HTJ2K


class NotAnImage(NotAcceptable):
    """The object has no pixel data this service can turn into an image."""


class Undecodable(NotAcceptable):
    """The stored pixel data is in a syntax we do not decode, or is damaged."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame and the photometric interpretation of its array."""

    array: np.ndarray
    photometric: str
    reduced: int = 0  # resolution levels dropped (J2K reduced decoding): size / 2**reduced


def transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax UID of a dataset read from a Part 10 file."""
    return str(ds.file_meta.get("TransferSyntaxUID", ""))


def is_image(ds: Dataset) -> bool:
    """Whether the object carries integer pixel data (rendering and JPEG need it)."""
    return "PixelData" in ds and "Rows" in ds and "Columns" in ds


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent or empty."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


@contextlib.contextmanager
def refusing_inconsistent(message: str) -> Iterator[None]:
    """Turn what pydicom and numpy raise on missing or invalid image attributes into a 406
    with ``message``; the service's own refusals (4xx) and running out of memory pass."""
    try:
        yield
    except (DicomWebError, MemoryError):
        raise
    except Exception as exc:  # they raise anything on inconsistent attributes
        raise Undecodable(message) from exc


def frame_bytes(ds: Dataset) -> int:
    """Bytes of one decoded frame as the attributes declare it (at least a byte a sample)."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        return 0
    return max(rows, 0) * max(columns, 0) * max(samples, 1) * ((max(bits, 8) + 7) // 8)


@dataclass(frozen=True)
class MemoryLimit:
    """What one operation may use: ``budget`` bytes, about ``factor`` bytes per decoded byte
    (the measured peak of the operation, docs/limits.md)."""

    budget: int
    factor: int
    what: str

    def check(self, decoded: int) -> None:
        """413 with the numbers when ``decoded`` bytes would take more than the budget."""
        needed = decoded * self.factor
        if needed > self.budget:
            raise PayloadTooLarge(budget.too_large(self.what, needed, self.budget))


def check_declared(ds: Dataset, limit: MemoryLimit, *, frames: int = 1) -> None:
    """413 when ``frames`` decoded frames of ``ds`` (as declared) exceed ``limit``."""
    limit.check(frame_bytes(ds) * frames)


_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_LS_SOF = 0xF7
_HEADER_SCAN = 1 << 16


def codestream_bytes(stream: bytes) -> int | None:
    """Decoded bytes a compressed frame declares in its own header, before any decoding.

    JPEG and JPEG-LS: the SOF segment (lines x samples per line x components x bytes);
    JPEG 2000 and HTJ2K (raw codestream or JP2): the SIZ segment. None when neither is found
    in the first 64 KB (the codec then fails on its own).
    """
    if stream[:2] == b"\xff\xd8":
        return _jpeg_declared(stream)
    start = stream.find(b"\xff\x4f\xff\x51", 0, _HEADER_SCAN)
    if start < 0 or len(stream) < start + 42:
        return None
    siz = start + 4
    x, y, x0, y0 = (int.from_bytes(stream[siz + o : siz + o + 4], "big") for o in (4, 8, 12, 16))
    components = int.from_bytes(stream[siz + 36 : siz + 38], "big")
    depths = stream[siz + 38 : siz + 38 + 3 * components : 3]
    width = max(8, *((d & 0x7F) + 1 for d in depths))
    return max(x - x0, 0) * max(y - y0, 0) * max(components, 1) * ((width + 7) // 8)


def _jpeg_declared(stream: bytes) -> int | None:
    position = 2
    end = min(len(stream), _HEADER_SCAN)
    while position + 4 <= end:
        if stream[position] != 0xFF:
            return None
        marker = stream[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if marker in _SOF or marker == _JPEG_LS_SOF:
            segment = stream[position + 4 : position + 10]
            if len(segment) < 6:
                return None
            precision, lines, samples, components = (
                segment[0],
                int.from_bytes(segment[1:3], "big"),
                int.from_bytes(segment[3:5], "big"),
                segment[5],
            )
            return lines * samples * max(components, 1) * ((max(precision, 8) + 7) // 8)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def _check_codestream(ds: Dataset, stream: bytes, limit: MemoryLimit | None) -> None:
    """A compressed frame whose header declares a larger image than the attributes is
    damaged (406); one that fits them but not the memory budget is refused (413)."""
    declared = codestream_bytes(stream)
    if declared is None:
        return
    if declared > 2 * max(frame_bytes(ds), 1):
        raise Undecodable("the compressed frame declares a larger image than Rows and Columns")
    if limit is not None:
        limit.check(declared)


def require_image(ds: Dataset) -> None:
    """406 unless the object has pixel data in a syntax we decode."""
    if not is_image(ds):
        raise NotAnImage("the object has no image pixel data")
    if transfer_syntax(ds) not in DECODABLE:
        raise Undecodable("the stored transfer syntax cannot be decoded by this service")


def decode_frame(
    ds: Dataset, index: int, *, reduce: int = 0, limit: MemoryLimit | None = None
) -> Frame:
    """Frame ``index`` (0-based) of ``ds``.

    ``reduce`` > 0 asks JPEG 2000 data for a lower resolution level (each level halves both
    sides); other syntaxes, and codestreams where it does not work, decode at full size.
    ``limit``: 413 before decoding when the attributes or the compressed frame's own header
    declare a frame too large for it (a small file can declare 40k x 40k pixels).
    """
    require_image(ds)
    ts = transfer_syntax(ds)
    if limit is not None:
        check_declared(ds, limit)
    try:
        if ts in _NATIVE:
            return _native(ds, index)
        stream = get_frame(ds.PixelData, index, number_of_frames=frame_count(ds))
        _check_codestream(ds, stream, limit)
        if reduce > 0 and ts in JPEG_2000:
            frame = _j2k_reduced(ds, stream, reduce)
            if frame is not None:
                return frame
        return _compressed(ds, ts, stream)
    except (NotAnImage, Undecodable, PayloadTooLarge):
        raise
    except Exception as exc:  # codec errors have no common base class
        raise Undecodable("the stored pixel data could not be decoded") from exc


def _native(ds: Dataset, index: int) -> Frame:
    arr = pixel_array(ds, index=index, raw=True)
    if not arr.dtype.isnative:  # big endian source
        arr = arr.astype(arr.dtype.newbyteorder("="))
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "YBR_FULL_422":  # pydicom expands the subsampled chroma
        photometric = "YBR_FULL"
    return Frame(arr, photometric)


def _compressed(ds: Dataset, ts: str, stream: bytes) -> Frame:
    photometric = str(ds.PhotometricInterpretation)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if ts in _JPEG_LOSSY:
        if samples == 3 and photometric == "RGB" and not _has_jfif(stream):
            # DICOM says RGB and no JFIF marker claims YCbCr: no colour transform (as pydicom)
            arr = imagecodecs.jpeg8_decode(stream, colorspace="RGB", outcolorspace="RGB")
        else:
            arr = imagecodecs.jpeg8_decode(stream)
        out = "RGB" if samples == 3 else photometric
    elif ts in _JPEG_LOSSLESS:
        arr = imagecodecs.jpeg8_decode(stream)
        out = photometric
    elif ts in _JPEG_LS:
        arr = imagecodecs.jpegls_decode(stream)
        out = photometric
    elif ts in JPEG_2000:
        arr = imagecodecs.jpeg2k_decode(stream)
        out = "RGB" if photometric in ("RGB", "YBR_RCT", "YBR_ICT") else photometric
    else:
        arr = imagecodecs.htj2k_decode(stream)
        out = "RGB" if photometric in ("RGB", "YBR_RCT", "YBR_ICT") else photometric
    return Frame(stored_values(arr, ds), out)


def _has_jfif(stream: bytes) -> bool:
    return b"JFIF\x00" in stream[:256] or b"Adobe" in stream[:256]


def stored_values(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """A codec's output with the dtype and sign pydicom would give for ``ds``.

    Signed data sits in the codestream as a two's-complement bit pattern: its precision may
    be BitsStored or wider (some encoders sign-extend to 16), so keep BitsStored bits and
    sign-extend from there, which is right in both cases.
    """
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits, 8) // 8}")
    if arr.dtype == dtype:
        return arr
    if signed and arr.dtype.kind == "u":
        stored = int(ds.get("BitsStored") or bits)
        wide = arr.astype(np.int64) & ((1 << stored) - 1)
        wide = np.where(wide >= 1 << (stored - 1), wide - (1 << stored), wide)
        return wide.astype(dtype)
    return arr.astype(dtype)


def _j2k_siz(stream: bytes) -> tuple[int, int, bool, int] | None:
    """(components, precision, signed, decomposition levels) from a raw J2K codestream."""
    if stream[:4] != b"\xff\x4f\xff\x51" or len(stream) < 48:
        return None
    components = int.from_bytes(stream[40:42], "big")
    ssiz = [stream[42 + 3 * c] for c in range(components)]
    if len(set(ssiz)) != 1:
        return None
    precision, signed = (ssiz[0] & 0x7F) + 1, bool(ssiz[0] & 0x80)
    lsiz = int.from_bytes(stream[4:6], "big")
    cod = 4 + lsiz
    if stream[cod : cod + 2] != b"\xff\x52":
        return None
    levels = stream[cod + 9]
    return components, precision, signed, levels


def _j2k_reduced(ds: Dataset, stream: bytes, reduce: int) -> Frame | None:
    """Decode a JPEG 2000 frame at a lower resolution level with Pillow (OpenJPEG's reduce).

    imagecodecs exposes no resolution level; Pillow does, but scales samples to 16 bits (and
    offsets signed ones), which is undone here. None when Pillow cannot do it for this stream:
    the caller decodes at full size.
    """

    siz = _j2k_siz(stream)
    if siz is None:
        return None
    components, precision, signed, levels = siz
    photometric = str(ds.PhotometricInterpretation)
    if components == 3:
        if precision != 8 or signed:
            return None
    elif components != 1 or precision > 16:
        return None
    for level in range(min(reduce, levels), 0, -1):
        try:
            with Image.open(io.BytesIO(stream)) as image:
                image.reduce = level  # type: ignore[assignment,method-assign]
                image.load()
                arr: Any = np.asarray(image)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # some codestreams fail at deeper levels in Pillow: try a shallower one
        if components == 3:
            out = "RGB" if photometric in ("RGB", "YBR_RCT", "YBR_ICT") else photometric
            return Frame(arr, out, level)
        if arr.dtype == np.uint16 or image.mode.startswith("I;16"):
            wide = arr.astype(np.int32)
            if signed:
                wide -= 1 << 15
            wide >>= 16 - precision
            arr = wide
        return Frame(stored_values(np.asarray(arr), ds), photometric, level)
    return None
