"""Seeded mutations of real DICOM files, for the fuzz suite and ``python -m bench.fuzz``.

Each mutator takes a ``random.Random`` and Part 10 bytes and returns other bytes: bit flips,
truncation, corrupted element lengths and VRs, lying group lengths, deep nesting, and
compression bombs (a deflated data set, an image declaring far more pixels than it holds).
The same seed gives the same cases.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
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
    return _deflate_bomb(rng.choice((64, 256, 1024)))


@cache
def _deflate_bomb(megabytes: int) -> bytes:
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
    ds = _base(rng)
    ds.Rows = rng.choice((40000, 65535))
    ds.Columns = rng.choice((40000, 65535))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = rng.choice((1, 1000))
    if rng.random() < 0.5:
        ds.PixelData = b"\x00" * 64
        return _part10(ds)
    # A J2K codestream header that declares 40k x 40k in its SIZ marker.
    siz = struct.pack(">HHIIIIIIIIH", 0xFF51, 41, 0, 40000, 40000, 0, 0, 40000, 40000, 0, 1)
    stream = b"\xff\x4f" + siz + b"\x0f\x01\x01" + b"\xff\xd9"
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([stream])
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
    ds.PixelData = pixel + fragment + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
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
