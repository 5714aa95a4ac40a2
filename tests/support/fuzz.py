"""Seeded mutations of real DICOM files, for the fuzz suite and ``python -m bench.fuzz``.

Each mutator takes a ``random.Random`` and Part 10 bytes and returns other bytes: bit flips,
truncation, corrupted element lengths and VRs, lying group lengths, deep nesting, and
compression bombs (a deflated data set, an image declaring far more pixels than it holds).
The same seed gives the same cases.
"""

from __future__ import annotations

import io
import json
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from functools import cache

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

Mutator = Callable[[random.Random, bytes], bytes]

_VRS = (
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV"
).split()
_ODD_VRS = (b"ZZ", b"QL", b"LG", b"GS", b"\x00\x00", b"ob", b"  ", b"\xff\xff")
_LENGTHS = (0, 1, 2, 3, 7, 0xFFFF, 0xFFFE, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, 0x80000000)
_PREAMBLE = 132


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    """Flip 1 to 16 random bits past the preamble."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        position = rng.randrange(_PREAMBLE, len(out)) if len(out) > _PREAMBLE else 0
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    """Cut the file anywhere."""
    return data[: rng.randrange(len(data) + 1)]


def _element_offsets(data: bytes) -> list[int]:
    """Offsets that look like explicit VR element headers (a known VR after a tag)."""
    found = []
    for offset in range(_PREAMBLE, len(data) - 8, 2):
        if data[offset + 4 : offset + 6] in _VRS:
            found.append(offset)
    return found


def corrupt_length(rng: random.Random, data: bytes) -> bytes:
    """Give an element a length that is odd, huge, overflowing or not a multiple of its VR."""
    offsets = _element_offsets(data)
    if not offsets:
        return flip_bits(rng, data)
    offset = rng.choice(offsets)
    out = bytearray(data)
    vr = data[offset + 4 : offset + 6]
    value = rng.choice(_LENGTHS) if rng.random() < 0.7 else rng.randrange(1 << 32)
    if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"UV"):
        out[offset + 8 : offset + 12] = struct.pack("<I", value & 0xFFFFFFFF)
    else:
        out[offset + 6 : offset + 8] = struct.pack("<H", value & 0xFFFF)
    return bytes(out)


def corrupt_vr(rng: random.Random, data: bytes) -> bytes:
    """Replace a VR by another one, or by one that does not exist."""
    offsets = _element_offsets(data)
    if not offsets:
        return flip_bits(rng, data)
    offset = rng.choice(offsets)
    out = bytearray(data)
    out[offset + 4 : offset + 6] = rng.choice(_ODD_VRS + tuple(_VRS))
    return bytes(out)


def lie_group_length(rng: random.Random, data: bytes) -> bytes:
    """Set the File Meta Information Group Length (and any group length) to a wrong value."""
    out = bytearray(data)
    index = data.find(b"\x02\x00\x00\x00UL\x04\x00", _PREAMBLE)
    if index < 0:
        return flip_bits(rng, data)
    out[index + 8 : index + 12] = struct.pack("<I", rng.choice((*_LENGTHS, 1 << 20)) & 0xFFFFFFFF)
    return bytes(out)


def _part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = Dataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _base(rng: random.Random) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(rng.random())])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(rng.random())])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(rng.random())])
    ds.PatientID = "FUZZ"
    ds.Modality = "OT"
    return ds


def deep_nesting(rng: random.Random, data: bytes) -> bytes:
    """Sequences nested hundreds to thousands deep (complete, or cut anywhere)."""
    nested = nested_sequences(rng.choice((200, 500, 1000, 3000)))
    base = _part10(_base(rng))
    return base + nested if rng.random() < 0.5 else base + nested[: rng.randrange(len(nested))]


def nested_sequences(depth: int) -> bytes:
    """Raw elements: ``depth`` sequences of undefined length, each in an item of the last."""
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item, undefined length
    seq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # (0008,1115) SQ, undefined length
    end_item = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    end_seq = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return (seq + item) * depth + (end_item + end_seq) * depth


def deflate_bomb(rng: random.Random, data: bytes) -> bytes:
    """A small Deflated Explicit VR file whose data set inflates about 1000:1."""
    return deflated_data_set(rng.choice((64, 256, 1024)))


@cache
def deflated_data_set(megabytes: int) -> bytes:
    """A Deflated Explicit VR file whose data set inflates to ``megabytes`` MB and more."""
    rng = random.Random(megabytes)
    ds = _base(rng)
    plain = io.BytesIO()
    ds.file_meta = Dataset()
    ds.save_as(plain, implicit_vr=False, little_endian=True)
    huge = megabytes << 20
    value = struct.pack("<HH", 0x0009, 0x1010) + b"OB\x00\x00" + struct.pack("<I", huge)
    body = plain.getvalue() + value
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(body)
    zeros = bytes(1 << 20)
    for _ in range(huge >> 20):
        deflated += compressor.compress(zeros)
    deflated += compressor.flush()
    header = _part10(_base(rng), DeflatedExplicitVRLittleEndian)
    meta_end = _PREAMBLE + 12 + struct.unpack("<I", header[_PREAMBLE + 8 : _PREAMBLE + 12])[0]
    return header[:meta_end] + deflated


def pixel_bomb(rng: random.Random, data: bytes) -> bytes:
    """A tiny image declaring tens of thousands of rows and columns (or frames)."""
    return declared_image(
        rows=rng.choice((40000, 65535)),
        columns=rng.choice((40000, 65535)),
        frames=rng.choice((1, 1000)),
        codestream=rng.random() < 0.5,
        seed=rng.random(),
    )


def declared_image(
    *, rows: int, columns: int, frames: int = 1, codestream: bool = False, seed: float = 0.0
) -> bytes:
    """A file of a few hundred bytes whose attributes (native) or J2K codestream header
    (``codestream``: a SIZ segment declaring ``rows`` x ``columns``) promise a huge image."""
    ds = _base(random.Random(seed))
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = frames
    if not codestream:
        ds.PixelData = b"\x00" * 64
        return _part10(ds)
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, columns, rows, 0, 0, columns, rows, 0, 0, 1)
    stream = b"\xff\x4f" + siz + b"\x0f\x01\x01" + b"\xff\xd9"
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([stream] * frames)
    ds["PixelData"].VR = "OB"
    return _part10(ds, JPEG2000Lossless)


def lying_fragments(rng: random.Random, data: bytes) -> bytes:
    """Encapsulated pixel data whose offset table and item lengths point outside the data."""
    ds = _base(rng)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 16, 16, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = rng.choice((1, 3, 100000))
    offsets = struct.pack("<3I", 0, 0xFFFFFF00, rng.randrange(1 << 32))
    item = b"\xfe\xff\x00\xe0"
    fragment = b"\xff\xd8\xff\xd9"
    length = rng.choice((len(fragment), 0xFFFFFFF0, 3))
    pixel = item + struct.pack("<I", len(offsets)) + offsets + item + struct.pack("<I", length)
    ds.PixelData = pixel + fragment  # pydicom writes the sequence delimiter
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _part10(ds, "1.2.840.10008.1.2.4.50")


def nested_sequence_items(rng: random.Random, data: bytes) -> bytes:
    """A valid data set with a few levels of real sequences, then mutated."""
    ds = _base(rng)
    inner = ds
    for _ in range(rng.randint(1, 20)):
        item = Dataset()
        item.CodeValue = "1"
        inner.ConceptNameCodeSequence = Sequence([item])
        inner = item
    return flip_bits(rng, _part10(ds)) if rng.random() < 0.5 else _part10(ds)


MUTATORS: dict[str, Mutator] = {
    "flip_bits": flip_bits,
    "truncate": truncate,
    "corrupt_length": corrupt_length,
    "corrupt_vr": corrupt_vr,
    "lie_group_length": lie_group_length,
    "deep_nesting": deep_nesting,
    "nested_sequence_items": nested_sequence_items,
    "deflate_bomb": deflate_bomb,
    "pixel_bomb": pixel_bomb,
    "lying_fragments": lying_fragments,
}
# Generators that build a whole file are costly; the byte-level ones get most of the cases.
WEIGHTS = {
    "flip_bits": 30,
    "truncate": 10,
    "corrupt_length": 25,
    "corrupt_vr": 20,
    "lie_group_length": 5,
    "deep_nesting": 2,
    "nested_sequence_items": 4,
    "deflate_bomb": 1,
    "pixel_bomb": 2,
    "lying_fragments": 1,
}


def cases(seed: int, count: int, corpus: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """``count`` (mutator name, mutated bytes) pairs drawn from ``corpus`` with ``seed``."""
    rng = random.Random(seed)
    names = list(WEIGHTS)
    weights = [WEIGHTS[n] for n in names]
    for _ in range(count):
        name = rng.choices(names, weights)[0]
        source = rng.choice(corpus)
        yield name, MUTATORS[name](rng, source)


# ----------------------------------------------------------------------------- over HTTP

ROUTES = (  # (path template, the method it answers)
    ("/o3-dpacs-wado/stowRsListener/{a}/studies", "POST"),
    ("/o3-dpacs-wado/stowRsListener/{a}/studies/{s}", "POST"),
    ("/o3-dpacs-wado/qido/{a}/patients", "GET"),
    ("/o3-dpacs-wado/qido/{a}/studies", "GET"),
    ("/o3-dpacs-wado/qido/{a}/series", "GET"),
    ("/o3-dpacs-wado/qido/{a}/instances", "GET"),
    ("/o3-dpacs-wado/qido/{a}/studies/{s}/series", "GET"),
    ("/o3-dpacs-wado/qido/{a}/studies/{s}/instances", "GET"),
    ("/o3-dpacs-wado/qido/{a}/studies/{s}/series/{e}/instances", "GET"),
    ("/o3-dpacs-wado/rs/studies/{s}", "GET"),
    ("/o3-dpacs-wado/rs/studies/{s}/series/{e}", "GET"),
    ("/o3-dpacs-wado/rs/studies/{s}/series/{e}/instances/{i}", "GET"),
    ("/o3-dpacs-wado/wado", "GET"),
    ("/o3-dpacs-wado/stowRsListener/{a}/uploads", "POST"),
    ("/o3-dpacs-wado/stowRsListener/{a}/uploads", "GET"),
    ("/o3-dpacs-wado/stowRsListener/{a}/uploads/{u}", "GET"),
    ("/o3-dpacs-wado/stowRsListener/{a}/uploads/{u}/complete", "POST"),
)
_SEGMENTS = (
    "AE1",
    "1.2.840.113619.2.55.3",
    "`",
    "%2E%2E%2F",
    "..",
    "%00",
    "%ZZ",
    "%",
    "a" * 300,
    "1." * 40 + "1",
    "%C3%A9%E5%B1%B1",
    "<script>",
    "%22%27",
    ";",
    "%20",
    "+",
    "",
    "1.2.3.",
    "*",
    "%FF%FE",
    "x" * 5000,
)
_QUERY_KEYS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "00100020",
    "RequestAttributesSequence.ScheduledProcedureStepID",
    "includefield",
    "limit",
    "offset",
    "fuzzymatching",
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "transferSyntax",
    "anonymize",
    "rows",
    "columns",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "region",
    "imageQuality",
    "charset",
    "prefix",
    "after",
    "x" * 200,
    "%",
    "",
)
_QUERY_VALUES = (
    "",
    "*",
    "?",
    "1",
    "-1",
    "1e309",
    "99999999999999999999999",
    "20200101-20191231",
    "2020-13-45",
    "-",
    "*abc*",
    "a\\b\\c",
    "%00",
    "%ZZ",
    "%",
    "WADO",
    "image/jpeg",
    "application/dicom",
    "1.2.840.10008.1.2.4.50",
    "yes",
    "true",
    "0,0,1,1",
    "0.5,0.5,0.1,0.1",
    "NaN",
    "inf",
    "all",
    "zz" * 3000,
    "%E5%B1%B1%E7%94%B0",
    '""',
    "1.2.3\\1.2.4",
    "DOE^JANE/",
    "../",
    "uploads/",
)
_ACCEPTS = (
    None,
    "*/*",
    "application/dicom+json",
    "multipart/related; type=application/dicom",
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90",
    "image/jpeg;q=abc, image/png;q=2",
    "application/dicom; transfer-syntax=1.2.3",
    ";;;,,,",
    "text/html",
    "multipart/related; type=",
    "a" * 4000,
)
_CONTENT_TYPES = (
    None,
    "application/dicom",
    'multipart/related; type="application/dicom"; boundary=b',
    "multipart/related; type=application/dicom; boundary=",
    "multipart/related; boundary=" + "b" * 300,
    "multipart/related; type=application/dicom+json; boundary=b",
    "text/plain",
    "multipart/related",
    ";",
)
_OTHER_METHODS = ("OPTIONS", "HEAD", "PUT", "DELETE", "PATCH", "POST", "GET")


@dataclass(frozen=True)
class HttpCase:
    """One hostile request, as raw bytes on the wire."""

    label: str
    raw: bytes


def _route_and_method(rng: random.Random) -> tuple[str, str]:
    """A route and, nine times in ten, the method it answers."""
    route, method = rng.choice(ROUTES)
    return route, method if rng.random() < 0.9 else rng.choice(_OTHER_METHODS)


def _path(rng: random.Random, route: str, uids: tuple[str, str, str], uploads: Seq[str]) -> str:
    for name, uid in zip(("{s}", "{e}", "{i}"), uids, strict=True):
        route = route.replace(name, rng.choice(_SEGMENTS) if rng.random() < 0.3 else uid)
    if "{u}" in route:
        known = rng.choice(uploads) if uploads and rng.random() < 0.6 else ""
        route = route.replace("{u}", known or rng.choice((*_SEGMENTS, "u" + "0" * 31)))
    route = route.replace("{a}", rng.choice(_SEGMENTS) if rng.random() < 0.3 else "FUZZ")
    if rng.random() < 0.1:
        route += "/"
    if rng.random() < 0.05:
        route += "/" + rng.choice(_SEGMENTS)
    return route


def _query(rng: random.Random, uids: tuple[str, str, str]) -> str:
    pairs = [
        f"{rng.choice(_QUERY_KEYS)}={rng.choice(_QUERY_VALUES)}" for _ in range(rng.randint(0, 8))
    ]
    if rng.random() < 0.5:  # a WADO-URI request for a stored object, with hostile extras
        study, series, sop = uids
        pairs[:0] = ["requestType=WADO", f"studyUID={study}", f"seriesUID={series}"]
        pairs.insert(rng.randrange(len(pairs) + 1), f"objectUID={sop}")
    if rng.random() < 0.1:
        pairs.append("&&=&")
    return "&".join(pairs)


_JSON_VALUES: tuple[object, ...] = (
    0,
    -1,
    1,
    4096,
    5 << 30,
    (5 << 30) + 1,
    10**30,
    1.5,
    "1000",
    None,
    True,
    [],
    {},
    "a" * 64,
    "\u0000",
    "1.2.3",
)


def _json_body(rng: random.Random) -> bytes:
    """An upload request or completion: plausible keys with hostile values, or broken JSON."""
    kind = rng.random()
    if kind < 0.1:
        depth = rng.choice((10, 1000, 100_000))
        return b"[" * depth + b"]" * (depth if rng.random() < 0.5 else 0)
    if kind < 0.2:
        return rng.choice((b"{", b"null", b"[]", b'"x"', b'{"size": }', b"\xff\xfe{}"))
    if kind < 0.5:  # a request that is right, but for its size
        return json.dumps({"size": rng.choice((1, 4096, 1 << 26, (1 << 26) + 1, 5 << 30))}).encode()
    document: dict[str, object] = {}
    for name in rng.sample(("size", "sha256", "studyInstanceUID", "parts", "x"), rng.randint(0, 4)):
        document[name] = rng.choice(_JSON_VALUES)
    if rng.random() < 0.3:
        document["parts"] = [
            {"partNumber": rng.choice(_JSON_VALUES), "etag": rng.choice(_JSON_VALUES)}
            for _ in range(rng.randint(0, 5))
        ]
    return json.dumps(document).encode()


def _body(rng: random.Random, corpus: list[bytes], route: str) -> tuple[bytes, str | None]:
    if "/uploads" in route and rng.random() < 0.8:
        return _json_body(rng), rng.choice(("application/json", None, "text/plain"))
    kind = rng.random()
    if kind < 0.3:
        return b"", rng.choice(_CONTENT_TYPES)
    if kind < 0.6:
        data = flip_bits(rng, rng.choice(corpus))
        body = (
            b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
            if rng.random() < 0.7
            else data
        )
        return body, 'multipart/related; type="application/dicom"; boundary=b'
    return rng.randbytes(rng.randint(1, 4096)), rng.choice(_CONTENT_TYPES)


def _odd_headers(rng: random.Random) -> list[tuple[str, str]]:
    """Non-Latin-1 values, heads around API Gateway's 10,240 bytes and far over, origins."""
    odd = []
    if rng.random() < 0.05:
        odd.append(("X-Odd", "\xe9\xff" * rng.randint(1, 2000)))
    if rng.random() < 0.03:
        odd.append(("X-Big", "b" * rng.choice((9_000, 10_100, 10_300, 70_000))))
    if rng.random() < 0.05:
        odd.append(("Origin", rng.choice(("http://127.0.0.1:3001", "https://evil.example"))))
    return odd


def _headers_and_body(
    rng: random.Random, method: str, route: str, keys: Seq[str], corpus: list[bytes]
) -> tuple[list[tuple[str, str]], bytes]:
    headers = [("Host", "127.0.0.1"), ("Connection", "close")]
    auth = rng.random()
    if auth < 0.85:
        headers.append(("Authorization", rng.choice(keys)))
    elif auth < 0.9:
        headers.append(("Authorization", "Bearer " + "x" * rng.randint(0, 3000)))
    accept = rng.choice(_ACCEPTS)
    if accept is not None:
        headers.append(("Accept", accept))
    body = b""
    if method in ("POST", "PUT", "PATCH") or rng.random() < 0.05:
        body, content_type = _body(rng, corpus, route)
        if content_type is not None:
            headers.append(("Content-Type", content_type))
    headers += _odd_headers(rng)
    framing = rng.random()
    if framing < 0.03:
        headers.append(("Content-Length", rng.choice(("abc", "-1", "99999999999", ""))))
    elif framing < 0.06:
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"zz\r\n" + body[:10] + b"\r\n0\r\n\r\n"
    else:
        headers.append(("Content-Length", str(len(body))))
    return headers, body


def http_cases(  # noqa: PLR0917 - the material a case is drawn from
    seed: int,
    count: int,
    key: str | Seq[str],
    corpus: list[bytes],
    stored: list[tuple[str, str, str]] | None = None,
    uploads: Seq[str] = (),
) -> Iterator[HttpCase]:
    """``count`` hostile requests: paths, query strings, headers, bodies, framing; half of
    them name ``stored`` objects (study, series, SOP UIDs) so that they reach the WADO code,
    and upload routes name the ``uploads`` ids most of the time. ``key``: one API key, or
    several (of different scopes) to choose from."""
    rng = random.Random(seed)
    known = stored or [("1.2.3", "1.2.3.4", "1.2.3.4.5")]
    keys = (key,) if isinstance(key, str) else tuple(key)
    for _ in range(count):
        route, method = _route_and_method(rng)
        uids = rng.choice(known)
        target = _path(rng, route, uids, uploads)
        query = _query(rng, uids)
        if query:
            target += "?" + query
        headers, body = _headers_and_body(rng, method, route, keys, corpus)
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
        raw = "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body
        yield HttpCase(f"{method} {target[:80]}", raw)


def send_raw(port: int, raw: bytes, timeout: float = 20.0) -> tuple[int, float]:
    """Send raw request bytes to 127.0.0.1:port; (status, seconds). Status 0: no answer
    (connection reset or closed without a status line)."""
    import contextlib
    import socket
    import time

    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # the server may answer (413) before reading all
                sock.sendall(raw)
            received = b""
            while b"\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            while sock.recv(65536):  # drain to the end (Connection: close)
                pass
    except OSError:
        return 0, time.perf_counter() - started
    line = received.split(b"\r\n", 1)[0].split()
    status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
    return status, time.perf_counter() - started


# ------------------------------------------------------------------ presigned object URLs

_SIGNATURES = ("", "0" * 64, "é" * 10, "%C3%A9", "%FF", "%00", "a" * 5000, "%ZZ", "+/=")
_OBJECT_METHODS = ("PUT", "PUT", "PUT", "GET", "HEAD", "DELETE", "POST", "OPTIONS")


def object_cases(seed: int, count: int, urls: Seq[str]) -> Iterator[HttpCase]:
    """``count`` hostile requests to the object server from presigned URLs (the upload path's
    PUT and part URLs): altered or missing signature, expiry, length and key; other methods;
    bodies of other lengths than signed; lying framing. ``urls``: at least one."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit

    rng = random.Random(seed)
    for _ in range(count):
        parts = urlsplit(rng.choice(urls))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path
        for _ in range(rng.randint(0, 2)):
            what = rng.random()
            if what < 0.3:
                query["signature"] = rng.choice(_SIGNATURES)
            elif what < 0.45:
                query.pop(rng.choice(sorted(query) or ["signature"]), None)
            elif what < 0.6:
                query[rng.choice(("expires", "length", "part", "upload"))] = rng.choice(
                    ("-1", "0", "1", "9" * 30, "abc", "", "1e9", "%00")
                )
            elif what < 0.75:
                path += rng.choice(("/..", "/../../etc/passwd", "%2F..", "%00", "/x", "/"))
            else:
                path = path.replace("incoming", rng.choice(("results", "..", "incoming%2F..")))
        signed = int(query.get("length", "0")) if query.get("length", "").isdigit() else 0
        size = rng.choice((signed, signed + 1, max(signed - 1, 0), 0, rng.randint(0, 4096)))
        size = min(size, 1 << 20)
        method = rng.choice(_OBJECT_METHODS)
        body = rng.randbytes(size) if method in ("PUT", "POST") else b""
        target = quote(path, safe="/%") + "?" + urlencode(query)
        headers = [("Host", parts.netloc), ("Connection", "close")]
        framing = rng.random()
        if framing < 0.05:
            headers.append(("Content-Length", rng.choice(("abc", "-1", "99999999999", ""))))
        elif framing < 0.1:
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"zz\r\n" + body[:10] + b"\r\n0\r\n\r\n"
        elif framing < 0.15:
            headers.append(("Content-Length", str(5 << 30)))  # declares 5 GB, sends little
        else:
            headers.append(("Content-Length", str(len(body))))
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
        raw = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body
        yield HttpCase(f"{method} {target[:80]}", raw)


# ------------------------------------------------------------------ a stack to hunt in

#: Corpus files stored before a hunt, so that half the requests reach the WADO code.
STORED = (
    "CT_small.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_rle.dcm",
    "test-SR.dcm",
    "emri_small.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
    "liver_1frame.dcm",
)


@dataclass(frozen=True)
class Hunt:
    """What hostile requests are drawn from: stored objects (study, series, SOP UIDs), keys
    of every scope, upload ids and their presigned URLs."""

    stored: list[tuple[str, str, str]]
    keys: tuple[str, ...]
    uploads: tuple[str, ...]
    object_urls: tuple[str, ...]


def prepare(base_url: str, api_key: str, data_dir: object) -> Hunt:
    """Store :data:`STORED` through STOW, add a key of each scope to the stack's key file
    (``data_dir``: the embedded backend's), and ask for a single and a multipart upload."""
    from pathlib import Path

    import pydicom
    import requests

    from shared import keys as scopes
    from shared.adapters.key_store import FileKeyStore
    from shared.adapters.usage_plans import EntryLimits
    from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
    from tests.support import dicom_files
    from tools import apikeys

    stored = []
    for name in STORED:
        data = dicom_files.with_new_uids(name)
        response = requests.post(
            f"{base_url}/stowRsListener/FUZZ/studies",
            data=data,
            headers={"Authorization": api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        ds = pydicom.dcmread(io.BytesIO(data))
        stored.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    store = FileKeyStore(Path(str(data_dir)) / SECRETS_DIR / API_KEYS_FILE)
    scoped = [
        apikeys.create(store, f"fuzz {scope}", (scope,), plans=EntryLimits())[0]
        for scope in scopes.SCOPES
    ]
    time.sleep(scopes.REFRESH_INTERVAL)  # as `apikeys create` waits: never refused, then cached
    uploads, urls = [], []
    for size in (1000, 200 << 20):  # one PUT; a multipart upload of four parts
        answer = requests.post(
            f"{base_url}/stowRsListener/FUZZ/uploads",
            json={"size": size},
            headers={"Authorization": api_key},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        created = answer.json()
        uploads.append(created["statusUrl"].rsplit("/", 1)[1])
        if "upload" in created:
            urls.append(created["upload"]["url"])
        else:
            urls += [part["url"] for part in created["multipart"]["parts"]]
    return Hunt(stored, (api_key, *scoped), tuple(uploads), tuple(urls))


def object_port(hunt: Hunt) -> int:
    """The object server's port, from the presigned URLs."""
    from urllib.parse import urlsplit

    port = urlsplit(hunt.object_urls[0]).port
    assert port is not None
    return port
