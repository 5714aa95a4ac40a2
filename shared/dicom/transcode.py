"""Re-encode a stored Part 10 object in another transfer syntax (WADO-URI and WADO-RS).

Targets: Explicit and Implicit VR Little Endian (native pixel data), JPEG Baseline (8-bit
data only, lossy), JPEG Lossless SV1 and JPEG 2000 lossless. Every frame is decoded with
``pixels.decode_frame`` and encoded with imagecodecs; encapsulated output carries a Basic
Offset Table. Lossless targets keep every stored value; the photometric interpretation is
updated where a codec changed the colour space (JPEG 2000 RCT, JPEG YCbCr), and the Lossy
Image Compression attributes record any lossy step, past or present (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import imagecodecs
import numpy as np
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    UID,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from shared import budget
from shared.dicom import pixels, syntaxes
from shared.errors import NotAcceptable

TARGETS = syntaxes.TARGETS
_NATIVE_TARGETS = syntaxes.NATIVE_TARGETS
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
BASELINE_QUALITY = 90
#: Peak memory of a transcode per byte of decoded pixels (tracemalloc, docs/limits.md):
#: the output pixel data, one decoded frame, the written file; 2.1-4.6x measured on large images.
PEAK_PER_DECODED_BYTE = 5
_ENCAPSULATED_ONLY = (
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)


def check_target(target: str) -> None:
    """406 for a valid transfer syntax UID we cannot produce."""
    syntaxes.require_producible(target)


def transcode_bytes(
    data: bytes, target: str, *, memory_budget: int = budget.request_budget()
) -> bytes:
    """A stored Part 10 file re-encoded in ``target`` (the bytes themselves when it is theirs)."""
    check_target(target)
    try:
        ds = dcmread(io.BytesIO(data))
    except Exception as exc:  # stored objects were read at STOW; this is a damaged copy
        raise pixels.Undecodable("the stored object cannot be read") from exc
    return transcode(data, ds, target, memory_budget=memory_budget)


def transcode(
    data: bytes, ds: Dataset, target: str, *, memory_budget: int = budget.request_budget()
) -> bytes:
    """``data`` (the Part 10 file ``ds`` was read from) re-encoded in ``target``.

    413 before decoding when the decoded pixels (as declared) times the measured peak factor
    exceed ``memory_budget``; every compressed frame's own header is checked too. 406 when
    the image attributes are missing or invalid, or the result cannot be written.
    """
    with pixels.refusing_inconsistent("the stored object's attributes are missing or invalid"):
        return _transcode(data, ds, target, memory_budget)


def _transcode(data: bytes, ds: Dataset, target: str, memory_budget: int) -> bytes:
    check_target(target)
    source = pixels.transfer_syntax(ds)
    if source == target:
        return data
    has_pixels = any(keyword in ds for keyword in pixels.PIXEL_KEYWORDS)
    if target not in _NATIVE_TARGETS and not pixels.is_image(ds):
        raise pixels.NotAnImage("the object has no image pixel data to compress")
    if "PixelData" in ds:
        limit = pixels.MemoryLimit(memory_budget, PEAK_PER_DECODED_BYTE, "transcoding this image")
        pixels.check_declared(ds, limit, frames=pixels.frame_count(ds))
        _recode_pixels(ds, source, target, limit)
    elif has_pixels and source == "1.2.840.10008.1.2.2":
        raise NotAcceptable("float pixel data cannot be converted from big endian")
    big_endian = source == "1.2.840.10008.1.2.2"
    if big_endian or _read_as_implicit(ds, source):
        # Decode every raw element so it is re-encoded, not copied: big endian, or a data
        # set in implicit VR although its transfer syntax says explicit (pydicom reads it).
        for _ in ds.iterall():
            pass
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    dcmwrite(
        out,
        ds,
        implicit_vr=target == str(ImplicitVRLittleEndian),
        little_endian=True,
        enforce_file_format=not big_endian,  # pydicom allows only one of the two
        force_encoding=big_endian,
    )
    return out.getvalue()


def _read_as_implicit(ds: Dataset, source: str) -> bool:
    if source == syntaxes.IMPLICIT_VR_LITTLE_ENDIAN:
        return False
    return any(isinstance(e, RawDataElement) and e.VR is None for e in ds.elements())


def _recode_pixels(ds: Dataset, source: str, target: str, limit: pixels.MemoryLimit) -> None:
    pixels.require_image(ds)
    bits = int(ds.BitsAllocated)
    if target == str(JPEGBaseline8Bit):
        _check_baseline(ds)
    elif target not in _NATIVE_TARGETS and (bits > 16 or bits == 1):
        raise NotAcceptable(f"{TARGETS[target]} holds 2 to 16 bits per sample, not {bits}")
    count = pixels.frame_count(ds)
    frames = (pixels.decode_frame(ds, i, limit=limit) for i in range(count))
    if target in _NATIVE_TARGETS:
        photometric, pixel_data = _native(ds, frames, count)
    else:
        precision = _stored_bits(ds)
        try:
            photometric, pixel_data = _encapsulated(ds, target, frames, precision)
        except _OutOfRange:  # values beyond BitsStored (unused high bits set): keep them all
            precision = bits
            frames = (pixels.decode_frame(ds, i, limit=limit) for i in range(count))
            photometric, pixel_data = _encapsulated(ds, target, frames, precision)
            ds.BitsStored, ds.HighBit = bits, bits - 1
    for keyword in _ENCAPSULATED_ONLY:
        if keyword in ds:
            del ds[keyword]
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OW" if target in _NATIVE_TARGETS and bits > 8 else "OB"
    ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        ds.PlanarConfiguration = 0
    _lossy_attributes(ds, source, target, len(pixel_data))


class _OutOfRange(Exception):
    """A frame holds values that do not fit in BitsStored bits."""


def _stored_bits(ds: Dataset) -> int:
    bits = int(ds.BitsAllocated)
    return max(min(int(ds.get("BitsStored") or bits), bits), 2) if bits > 8 else 8


def _fits(arr: np.ndarray, precision: int) -> bool:
    if precision >= arr.dtype.itemsize * 8:
        return True
    if arr.dtype.kind == "i":
        low, high = -(1 << (precision - 1)), (1 << (precision - 1)) - 1
        return bool(arr.min() >= low and arr.max() <= high)
    return bool(arr.max() < (1 << precision))


def _encapsulated(
    ds: Dataset, target: str, frames: Iterable[pixels.Frame], precision: int
) -> tuple[str, bytes]:
    """Encode every frame; the stream's sample precision is ``precision`` (BitsStored)."""
    encode = {
        syntaxes.JPEG_BASELINE: _baseline,
        syntaxes.JPEG_LOSSLESS_SV1: _sv1,
        syntaxes.JPEG_2000_LOSSLESS: _j2k_lossless,
    }[target]
    streams: list[bytes] = []
    photometric = ""
    for frame in frames:
        arr = np.ascontiguousarray(frame.array)
        if not _fits(arr, precision):
            raise _OutOfRange
        stream, photometric = encode(arr, frame.photometric, precision)
        streams.append(stream)
    return photometric, encapsulate(streams, has_bot=True)


def _check_baseline(ds: Dataset) -> None:
    bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored") or 0)
    if bits != 8 or stored != 8:
        raise NotAcceptable(
            f"JPEG Baseline holds 8-bit samples; this image has {stored} bits stored"
            f" in {bits}: ask for a lossless transfer syntax"
        )
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        raise NotAcceptable("JPEG Baseline cannot hold palette indices; ask for a lossless one")
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        raise NotAcceptable("JPEG Baseline holds unsigned samples; ask for a lossless one")


def _native(ds: Dataset, frames: Iterable[pixels.Frame], count: int) -> tuple[str, bytes]:
    """Frames written one by one into a single buffer of the declared size (one copy of the
    decoded pixels at a time); a frame of another size than the attributes say is refused."""
    photometric = str(ds.PhotometricInterpretation)
    if int(ds.BitsAllocated) == 1:
        return _native_one_bit(ds, frames, count)
    size = pixels.frame_bytes(ds)
    out = bytearray(size * count + (size * count) % 2)
    precision, overflow = _stored_bits(ds), False
    for index, frame in enumerate(frames):
        photometric = frame.photometric
        overflow = overflow or not _fits(frame.array, precision)
        data = np.ascontiguousarray(frame.array).astype(frame.array.dtype.newbyteorder("<"))
        if data.nbytes != size:
            raise pixels.Undecodable("a decoded frame does not match Rows, Columns and samples")
        out[index * size : (index + 1) * size] = data.data.cast("B")
        del data
    if overflow:  # a codec gave values above BitsStored: say they are there, keep them
        bits = int(ds.BitsAllocated)
        ds.BitsStored, ds.HighBit = bits, bits - 1
    return photometric, bytes(out)


def _native_one_bit(ds: Dataset, frames: Iterable[pixels.Frame], count: int) -> tuple[str, bytes]:
    """1-bit frames are packed end to end, not byte aligned."""
    photometric = str(ds.PhotometricInterpretation)
    arrays = []
    for frame in frames:
        photometric = frame.photometric
        arrays.append(np.ascontiguousarray(frame.array, dtype=np.uint8))
    data = pack_bits(np.stack(arrays) if count > 1 else arrays[0], pad=False)
    return photometric, data + b"\x00" * (len(data) % 2)


def _baseline(arr: np.ndarray, photometric: str, precision: int) -> tuple[bytes, str]:
    if photometric == "YBR_FULL":
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    if arr.ndim == 3:
        # libjpeg converts RGB to YCbCr and halves the chroma horizontally: YBR_FULL_422
        stream = imagecodecs.jpeg8_encode(arr, BASELINE_QUALITY, subsampling="422")
        return bytes(stream), "YBR_FULL_422"
    return bytes(imagecodecs.jpeg8_encode(arr, BASELINE_QUALITY)), photometric


def _sv1(arr: np.ndarray, photometric: str, precision: int) -> tuple[bytes, str]:
    if arr.dtype.kind == "i":  # the stream keeps the two's complement bit pattern
        arr = arr.view(arr.dtype.str.replace("i", "u")) & ((1 << precision) - 1)
    colour = "RGB" if arr.ndim == 3 else None  # no colour transform: samples kept as they are
    stream = imagecodecs.jpeg8_encode(
        arr,
        lossless=True,
        predictor=1,
        bitspersample=precision,
        colorspace=colour,
        outcolorspace=colour,
    )
    return bytes(stream), photometric


def _j2k_lossless(arr: np.ndarray, photometric: str, precision: int) -> tuple[bytes, str]:
    mct = arr.ndim == 3 and photometric == "RGB"
    stream = imagecodecs.jpeg2k_encode(
        arr, codecformat="J2K", reversible=True, mct=mct, bitspersample=precision
    )
    return bytes(stream), "YBR_RCT" if mct else photometric


def _lossy_attributes(ds: Dataset, source: str, target: str, size: int) -> None:
    methods = list(_values(ds.get("LossyImageCompressionMethod")))
    ratios = list(_values(ds.get("LossyImageCompressionRatio")))
    if source in _LOSSY_METHOD and str(ds.get("LossyImageCompression", "")) != "01":
        ds.LossyImageCompression = "01"
        if not methods:
            methods.append(_LOSSY_METHOD[source])
    if target == str(JPEGBaseline8Bit):
        ds.LossyImageCompression = "01"
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        raw = int(ds.Rows) * int(ds.Columns) * samples * pixels.frame_count(ds)
        ratios.append(f"{raw / max(size, 1):.2f}")
        methods.append("ISO_10918_1")
    if methods:
        ds.LossyImageCompressionMethod = methods
    if ratios:
        ds.LossyImageCompressionRatio = ratios


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]
