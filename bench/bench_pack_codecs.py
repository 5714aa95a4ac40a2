"""Lossless codecs for native pixel data in series packs (issue 24, docs/decisions/0011).

``python -m bench --only pack-codecs`` or ``python -m bench.bench_pack_codecs``.

Every native (uncompressed: implicit, explicit little and explicit big endian) image of the
pydicom + pydicom-data corpus is cut into its frames, as stored (raw bytes, high bits and byte
order included, since a pack must give back the exact bytes received). Frames repeated across
the corpus (the same pixels in another encoding) are counted once. Each candidate encodes each
frame and decodes it again; the decoded frame, turned back into bytes in the stored byte order,
must equal the stored frame exactly, or the frame is a lossless failure.

- image codecs (JPEG-LS via CharLS, HTJ2K via OpenJPH, both from imagecodecs) get the frame as
  an array: unsigned of the allocated width (JPEG-LS, as DICOM's JPEG-LS does for signed
  pixels) or signed when Pixel Representation is 1 (HTJ2K takes int16), native byte order,
  colour interleaved; 1-bit frames are unpacked to 0/1 bytes; JPEG-LS takes at most 16 bits,
  so 32-bit frames are *unsupported* and count as stored raw in its total ratio;
  ``jpegls-flip`` flips the top bit of signed pixels first (-1 and 0 become neighbours
  instead of 65535 and 0), which is not DICOM's JPEG-LS but is exactly reversible;
- ``htj2k-or-zstd-3`` keeps, frame by frame, the smaller of the two (a one-byte tag says which);
- byte codecs (zstd, blosc2 with byte shuffle or bit shuffle of the sample size) get the
  stored bytes.

Per codec: total ratio (raw pixel bytes / encoded bytes), median encode and decode ms per frame
(each frame timed ``repeat`` times, best kept), decode MB/s (raw bytes / total decode time),
lossless failures and unsupported frames (``*_UNCI.dcm``, decodes of lossy JPEG 2000, are left
out: HTJ2K finds their wavelet quantisation again, 128:1 on 693_UNCI.dcm); ratios by group
(modality, bits allocated/stored, samples) and the same figures for the large CT/MR images
(at least 256x256).
"""

from __future__ import annotations

import hashlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import imagecodecs
import numpy as np
import pydicom

from tests.support import dicom_files

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
BIG_ENDIAN = "1.2.840.10008.1.2.2"
LARGE = 256  # rows and columns of the CT/MR images counted as "realistic"
# Decodes of lossy (irreversible) JPEG 2000: a wavelet codec finds the quantised coefficients
# again (HTJ2K packs 693_UNCI.dcm 128:1), so they would flatter HTJ2K; left out, and listed.
LOSSY_ORIGIN = "_UNCI.dcm"


@dataclass(frozen=True)
class Frame:
    name: str  # file
    index: int
    raw: bytes  # as stored
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar: bool
    big_endian: bool
    modality: str

    @property
    def group(self) -> str:
        colour = f" x{self.samples}" if self.samples > 1 else ""
        return f"{self.modality} {self.bits_allocated}/{self.bits_stored}{colour}"

    @property
    def large_ct_mr(self) -> bool:
        return self.modality in ("CT", "MR") and min(self.rows, self.columns) >= LARGE


class Unsupported(Exception):
    """The codec cannot take this frame (not a lossless failure)."""


def frames_of(name: str) -> list[Frame]:
    """The native frames of one corpus file (empty if it has none or is not native)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(dicom_files.path(name))
        except Exception:  # noqa: BLE001 -- unreadable files are not candidates
            return []
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ts not in NATIVE or "PixelData" not in ds:
        return []
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1))
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return []
    if allocated not in (1, 8, 16, 32):
        return []
    pixels = rows * cols * samples
    size = pixels // 8 if allocated == 1 else pixels * allocated // 8
    data = bytes(ds.PixelData)
    if (allocated == 1 and pixels % 8) or not size or len(data) < size * count:
        return []  # unaligned bit frames, or pixel data cut short
    return [
        Frame(
            name=name,
            index=i,
            raw=data[i * size : (i + 1) * size],
            rows=rows,
            columns=cols,
            samples=samples,
            bits_allocated=allocated,
            bits_stored=stored,
            signed=int(ds.get("PixelRepresentation", 0)) == 1,
            planar=samples > 1 and int(ds.get("PlanarConfiguration", 0)) == 1,
            big_endian=ts == BIG_ENDIAN,
            modality=str(ds.get("Modality", "") or "?"),
        )
        for i in range(count)
    ]


def corpus(names: Iterable[str] | None = None) -> list[Frame]:
    """Native frames of the corpus (or of ``names``), each distinct pixel content once, no
    decode of a lossy JPEG 2000 among them."""
    seen: set[bytes] = set()
    out = []
    for name in sorted(dicom_files.part10_files() if names is None else names):
        if name.endswith(LOSSY_ORIGIN):
            continue
        for frame in frames_of(name):
            key = hashlib.sha256(_array(frame, signed=False).tobytes()).digest()
            if key not in seen:
                seen.add(key)
                out.append(frame)
    return out


def _array(frame: Frame, signed: bool) -> np.ndarray:
    """The frame as a native-endian array (rows, columns[, samples]), colour interleaved."""
    if frame.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(frame.raw, np.uint8), bitorder="little")
        return bits.reshape(frame.rows, frame.columns)
    kind = "i" if signed else "u"
    order = ">" if frame.big_endian else "<"
    arr = np.frombuffer(frame.raw, f"{order}{kind}{frame.bits_allocated // 8}")
    arr = arr.astype(arr.dtype.newbyteorder("="))
    if frame.samples == 1:
        return arr.reshape(frame.rows, frame.columns)
    if frame.planar:
        return arr.reshape(frame.samples, frame.rows, frame.columns).transpose(1, 2, 0)
    return arr.reshape(frame.rows, frame.columns, frame.samples)


def _raw(frame: Frame, arr: np.ndarray) -> bytes:
    """Back to the stored bytes: the inverse of ``_array``."""
    if frame.bits_allocated == 1:
        return np.packbits(arr.reshape(-1).astype(np.uint8), bitorder="little").tobytes()
    if frame.planar:
        arr = arr.transpose(2, 0, 1)
    order = ">" if frame.big_endian else "<"
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder(order)).tobytes()


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[Frame], bytes]
    decode: Callable[[Frame, bytes], bytes]  # back to the stored bytes


def _jpegls_encode(frame: Frame) -> bytes:
    if frame.bits_allocated > 16:
        raise Unsupported("JPEG-LS takes at most 16 bits")
    return bytes(imagecodecs.jpegls_encode(_array(frame, signed=False)))


def _flip(frame: Frame, arr: np.ndarray) -> np.ndarray:
    """Signed pixels viewed unsigned with the top bit flipped: -1 and 0 become neighbours
    (an order-keeping bijection, so still exactly the stored bits)."""
    if not frame.signed or frame.bits_allocated == 1:
        return arr
    return arr ^ arr.dtype.type(1 << (frame.bits_allocated - 1))


def _jpegls_flip_encode(frame: Frame) -> bytes:
    if frame.bits_allocated > 16:
        raise Unsupported("JPEG-LS takes at most 16 bits")
    return bytes(imagecodecs.jpegls_encode(_flip(frame, _array(frame, signed=False))))


def _jpegls_flip_decode(frame: Frame, stream: bytes) -> bytes:
    return _raw(frame, _flip(frame, imagecodecs.jpegls_decode(stream)))


def _htj2k_encode(frame: Frame) -> bytes:
    return bytes(imagecodecs.htj2k_encode(_array(frame, signed=frame.signed), reversible=True))


def _htj2k_or_zstd_encode(frame: Frame) -> bytes:
    """The smaller of HTJ2K and zstd-3, behind a one-byte tag (the pack would keep the tag in
    its frame table): zstd wins on tiny and synthetic frames."""
    j2k, zstd = _htj2k_encode(frame), bytes(imagecodecs.zstd_encode(frame.raw, level=3))
    return b"J" + j2k if len(j2k) <= len(zstd) else b"Z" + zstd


def _htj2k_or_zstd_decode(frame: Frame, stream: bytes) -> bytes:
    if stream[:1] == b"J":
        return _raw(frame, imagecodecs.htj2k_decode(stream[1:]))
    return bytes(imagecodecs.zstd_decode(stream[1:]))


def _image_decode(decode: Callable[[bytes], np.ndarray]) -> Callable[[Frame, bytes], bytes]:
    def run(frame: Frame, stream: bytes) -> bytes:
        return _raw(frame, decode(stream))

    return run


def _typesize(frame: Frame) -> int:
    return max(1, frame.bits_allocated // 8)


def _blosc2(shuffle: Any) -> Callable[[Frame], bytes]:
    def run(frame: Frame) -> bytes:
        return bytes(
            imagecodecs.blosc2_encode(
                frame.raw,
                level=5,
                compressor=imagecodecs.BLOSC2.COMPRESSOR.ZSTD,
                shuffle=shuffle,
                typesize=_typesize(frame),
                numthreads=1,
            )
        )

    return run


def _bytes_decode(decode: Callable[..., bytes], **kw: Any) -> Callable[[Frame, bytes], bytes]:
    def run(frame: Frame, stream: bytes) -> bytes:
        return bytes(decode(stream, **kw))

    return run


def codecs() -> list[Codec]:
    """The candidates, in the order of the decision's table."""
    shuffle, bitshuffle = imagecodecs.BLOSC2.FILTER.SHUFFLE, imagecodecs.BLOSC2.FILTER.BITSHUFFLE
    return [
        Codec("jpegls", _jpegls_encode, _image_decode(imagecodecs.jpegls_decode)),
        Codec("jpegls-flip", _jpegls_flip_encode, _jpegls_flip_decode),
        Codec("htj2k", _htj2k_encode, _image_decode(imagecodecs.htj2k_decode)),
        Codec("htj2k-or-zstd-3", _htj2k_or_zstd_encode, _htj2k_or_zstd_decode),
        Codec(
            "zstd-3",
            lambda f: bytes(imagecodecs.zstd_encode(f.raw, level=3)),
            _bytes_decode(imagecodecs.zstd_decode),
        ),
        Codec(
            "zstd-19",
            lambda f: bytes(imagecodecs.zstd_encode(f.raw, level=19)),
            _bytes_decode(imagecodecs.zstd_decode),
        ),
        Codec(
            "blosc2-zstd-shuffle",
            _blosc2(shuffle),
            _bytes_decode(imagecodecs.blosc2_decode, numthreads=1),
        ),
        Codec(
            "blosc2-zstd-bitshuffle",
            _blosc2(bitshuffle),
            _bytes_decode(imagecodecs.blosc2_decode, numthreads=1),
        ),
    ]


def _best_ms(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter_ns()
        out = call()
        best = min(best, (time.perf_counter_ns() - start) / 1e6)
    return best, out


def measure(codec: Codec, frames: list[Frame], repeat: int) -> list[dict[str, Any]]:
    """One row per frame: raw and encoded sizes, ms, and whether it round-trips."""
    rows = []
    for frame in frames:
        row: dict[str, Any] = {"frame": frame, "raw": len(frame.raw)}
        try:
            row["encode_ms"], stream = _best_ms(partial(codec.encode, frame), repeat)
        except Unsupported:
            row["status"] = "unsupported"
            rows.append(row)
            continue
        except Exception as exc:  # noqa: BLE001 -- a codec error on a frame it takes
            row["status"] = f"error: {type(exc).__name__}: {exc}"
            rows.append(row)
            continue
        row["encoded"] = len(stream)
        try:
            row["decode_ms"], back = _best_ms(partial(codec.decode, frame, stream), repeat)
            row["status"] = "ok" if back == frame.raw else "not lossless"
        except Exception as exc:  # noqa: BLE001 -- reported as a lossless failure
            row["status"] = f"error: {type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def _label(frame: Frame) -> str:
    return f"{frame.name}#{frame.index}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Total ratio (frames a codec cannot take, or fails on, count as stored raw), medians."""
    ok = [r for r in rows if r.get("status") == "ok"]
    raw = sum(r["raw"] for r in rows)
    stored = sum(r["encoded"] if r.get("status") == "ok" else r["raw"] for r in rows)
    decode_s = sum(r["decode_ms"] for r in ok) / 1e3
    return {
        "frames": len(rows),
        "raw_bytes": raw,
        "stored_bytes": stored,
        "ratio": round(raw / stored, 3) if stored else None,
        "encode_ms_p50": round(statistics.median(r["encode_ms"] for r in ok), 4) if ok else None,
        "decode_ms_p50": round(statistics.median(r["decode_ms"] for r in ok), 4) if ok else None,
        "decode_mb_s": round(sum(r["raw"] for r in ok) / 1e6 / decode_s, 1) if decode_s else None,
        "lossless_failures": [
            f"{_label(r['frame'])}: {r['status']}"
            for r in rows
            if r["status"] not in ("ok", "unsupported")
        ],
        "unsupported": sorted({r["frame"].name for r in rows if r["status"] == "unsupported"}),
    }


def run(names: Iterable[str] | None = None, repeat: int = 3) -> dict[str, Any]:
    """Measure every codec on the native frames of the corpus (or of ``names``)."""
    frames = corpus(names)
    large = [f for f in frames if f.large_ct_mr]
    groups = sorted({f.group for f in frames})
    result: dict[str, Any] = {
        "versions": {
            "imagecodecs": imagecodecs.__version__,
            "charls": imagecodecs.JPEGLS.available and _lib_version("charls"),
            "openjph": _lib_version("openjph"),
            "zstd": _lib_version("zstd"),
            "c-blosc2": _lib_version("c-blosc2"),
        },
        "repeat": repeat,
        "files": len({f.name for f in frames}),
        "left_out_lossy_origin": sorted(
            n
            for n in (dicom_files.part10_files() if names is None else names)
            if n.endswith(LOSSY_ORIGIN)
        ),
        "frames": len(frames),
        "raw_bytes": sum(len(f.raw) for f in frames),
        "large_ct_mr": {
            "files": sorted({f.name for f in large}),
            "frames": len(large),
            "raw_bytes": sum(len(f.raw) for f in large),
        },
        "codecs": {},
        "large_ct_mr_codecs": {},
        "groups": {
            g: {
                "frames": sum(1 for f in frames if f.group == g),
                "raw_bytes": sum(len(f.raw) for f in frames if f.group == g),
                "ratio": {},
            }
            for g in groups
        },
    }
    for codec in codecs():
        rows = measure(codec, frames, repeat)
        result["codecs"][codec.name] = summary(rows)
        result["large_ct_mr_codecs"][codec.name] = summary(
            [r for r in rows if r["frame"].large_ct_mr]
        )
        for g in groups:
            result["groups"][g]["ratio"][codec.name] = summary(
                [r for r in rows if r["frame"].group == g]
            )["ratio"]
    return result


def _lib_version(lib: str) -> str:
    for part in imagecodecs.version().split(", "):
        if part.startswith(lib + "-"):
            return part[len(lib) + 1 :]
    return "?"


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/decisions/0011-pack-codec.md."""
    head = (
        "| codec | ratio | encode ms/frame p50 | decode ms/frame p50 | decode MB/s | not lossless |"
    )
    lines = []
    for title, key in (("all native frames", "codecs"), ("large CT/MR", "large_ct_mr_codecs")):
        lines += [f"\n{title}\n", head, "|---|---:|---:|---:|---:|---|"]
        for name, s in result[key].items():
            fails = len(s["lossless_failures"])
            unsup = f" ({len(s['unsupported'])} files unsupported)" if s["unsupported"] else ""
            lines.append(
                f"| {name} | {s['ratio']} | {s['encode_ms_p50']} | {s['decode_ms_p50']} "
                f"| {s['decode_mb_s']} | {fails}{unsup} |"
            )
    names = list(result["codecs"])
    lines += ["\nratio by group\n", "| group | frames | MB | " + " | ".join(names) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(names))
    for g, s in result["groups"].items():
        ratios = " | ".join(str(s["ratio"][n]) for n in names)
        lines.append(f"| {g} | {s['frames']} | {s['raw_bytes'] / 1e6:.2f} | {ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    out = run()
    print(json.dumps({k: v for k, v in out.items() if k != "groups"}, indent=2))
    print(markdown(out))
