"""Transcoding of real corpus files to the five target transfer syntaxes.

Sources: 16-bit and 14-bit signed CT, 8-bit RGB (secondary capture, ultrasound), NM in JPEG
Lossless SV1 (the corpus's NM file, 16-bit signed), 8-bit grey JPEG Lossless, and a 10-frame
enhanced MR in three encodings (native, JPEG-LS, big endian). The output is read back byte by
byte (file meta, encapsulation, JPEG and JPEG 2000 headers) and, in the ``tools`` tests, by
independent programs: dcmtk (dcmdump, dcmconv, dcmdjpeg, dcmdjpls), GDCM (gdcmconv), OpenJPEG
(opj_decompress, opj_dump) and dicom3tools (dciodvfy). Lossless outputs must decode to the
very pixels of the source, as decoded by a tool that shares no code with the transcoder.
"""

from __future__ import annotations

import functools
import io
import re
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets

from shared.dicom import syntaxes
from shared.dicom.transcode import transcode_bytes
from shared.errors import NotAcceptable
from tests.support import dicom_files
from tests.support.debian_tools import require_debian_tool

Array = npt.NDArray[Any]

ELE = syntaxes.EXPLICIT_VR_LITTLE_ENDIAN
ILE = syntaxes.IMPLICIT_VR_LITTLE_ENDIAN
BASELINE = syntaxes.JPEG_BASELINE
SV1 = syntaxes.JPEG_LOSSLESS_SV1
J2K = syntaxes.JPEG_2000_LOSSLESS
BIG_ENDIAN = "1.2.840.10008.1.2.2"
SHORT = {ELE: "ELE", ILE: "ILE", BASELINE: "baseline", SV1: "SV1", J2K: "J2K"}
NATIVE = (ELE, ILE)
COMPRESSED = (BASELINE, SV1, J2K)
LOSSLESS = (ELE, ILE, SV1, J2K)

SOURCES = {
    "CT_small.dcm": "CT 128x128, 16 bits stored, signed, explicit VR LE",
    "693_UNCI.dcm": "CT 512x512, 14 of 16 bits stored, signed, explicit VR LE",
    "SC_rgb.dcm": "secondary capture, 8-bit RGB, explicit VR LE",
    "US1_UNCR.dcm": "ultrasound 640x480, 8-bit RGB, explicit VR LE",
    "JPEG-LL.dcm": "NM 1024x256, 16 bits signed, JPEG Lossless SV1",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "ultrasound, 8-bit grey, JPEG Lossless SV1",
    "emri_small.dcm": "enhanced MR, 10 frames, 12 of 16 bits, explicit VR LE",
    "emri_small_jpeg_ls_lossless.dcm": "the same MR in JPEG-LS lossless",
    "emri_small_big_endian.dcm": "the same MR in explicit VR big endian",
}
EIGHT_BIT = {"SC_rgb.dcm", "US1_UNCR.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"}
COLOUR = {"SC_rgb.dcm", "US1_UNCR.dcm"}
SOURCE_SYNTAX = {
    "CT_small.dcm": ELE,
    "693_UNCI.dcm": ELE,
    "SC_rgb.dcm": ELE,
    "US1_UNCR.dcm": ELE,
    "JPEG-LL.dcm": SV1,
    "JPGLosslessP14SV1_1s_1f_8b.dcm": SV1,
    "emri_small.dcm": ELE,
    "emri_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "emri_small_big_endian.dcm": BIG_ENDIAN,
}

# Bits Stored below Bits Allocated (12 of 16, 14 of 16): the JPEG 2000 codestream is written
# with a precision of 16, which disagrees with Bits Stored (PS3.5 8.2.4: the Image Pixel
# attributes "shall contain Values that are consistent with the characteristics of the
# compressed data stream"); GDCM, decoding it, rewrites Bits Stored and High Bit to 16/15.
PARTIAL_BITS = {
    "693_UNCI.dcm",
    "emri_small.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "emri_small_big_endian.dcm",
}

# Attributes a transcoder may change; every other one must come through as it was.
MAY_CHANGE = {
    "PixelData",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
}


def _cases(targets: tuple[str, ...] = tuple(syntaxes.TARGETS)) -> list[Any]:
    """pytest.param(source, target): Baseline for 8-bit sources only, never the stored syntax."""
    cases = []
    for name in SOURCES:
        for target in targets:
            if target == SOURCE_SYNTAX[name] or (target == BASELINE and name not in EIGHT_BIT):
                continue
            cases.append(pytest.param(name, target, id=f"{name[:-4]}-{SHORT[target]}"))
    return cases


ALL = _cases()


def _source(name: str) -> bytes:
    try:
        return dicom_files.data(name)
    except KeyError:  # pragma: no cover - pydicom-data not installed
        pytest.skip(f"{name} is not in the corpus on this machine")


@functools.cache
def _output(name: str, target: str) -> bytes:
    return transcode_bytes(_source(name), target)


def _read(data: bytes) -> Dataset:
    """The data set, failing if pydicom finds another VR encoding than the syntax says."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(io.BytesIO(data))
    mismatch = [str(w.message) for w in caught if "VR - using" in str(w.message)]
    assert not mismatch, mismatch
    return ds


def _frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _same(actual: Array, expected: Array) -> bool:
    """Equal shapes and values, whatever the integer dtypes."""
    return actual.shape == expected.shape and bool(
        np.array_equal(actual.astype(np.int64), expected.astype(np.int64))
    )


def _fragments(pixel_data: bytes) -> list[bytes]:
    """The fragments of encapsulated pixel data, after its Basic Offset Table item."""
    assert pixel_data[:4] == b"\xfe\xff\x00\xe0"
    return list(generate_fragments(pixel_data[8 + int.from_bytes(pixel_data[4:8], "little") :]))


def _values(ds: Dataset, keyword: str) -> list[str]:
    """The values of a possibly multi-valued attribute as strings ([] when absent)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    return [str(v) for v in value]


def _expected_photometric(name: str, target: str) -> str:
    if name not in COLOUR:
        return "MONOCHROME2"
    return {J2K: "YBR_RCT", BASELINE: "YBR_FULL_422"}.get(target, "RGB")


# --- pure Python: the bytes of the output ----------------------------------------------------


def test_the_corpus_has_the_sources_the_issue_names() -> None:
    if not dicom_files.available():
        pytest.skip("pydicom-data is not installed")
    kinds = {}
    for name in SOURCES:
        ds = pydicom.dcmread(dicom_files.path(name), stop_before_pixels=True)
        assert str(ds.file_meta.TransferSyntaxUID) == SOURCE_SYNTAX[name], name
        kinds[name] = (str(ds.Modality), int(ds.BitsAllocated), _frames(ds))
    assert kinds["CT_small.dcm"] == ("CT", 16, 1)
    assert kinds["SC_rgb.dcm"][1] == 8
    assert kinds["JPEG-LL.dcm"] == ("NM", 16, 1)  # the corpus's JPEG-lossless NM file
    assert kinds["emri_small.dcm"] == ("MR", 16, 10)


def _meta_end(data: bytes) -> int:
    """Offset of the data set: walk the explicit VR LE group 2 elements after 'DICM'."""
    assert data[128:132] == b"DICM"
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL"
    group_length = int.from_bytes(data[140:144], "little")
    end = 144 + group_length
    pos = 144
    while pos < end:
        assert int.from_bytes(data[pos : pos + 2], "little") == 2, f"not group 2 at {pos}"
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    assert pos == end, "FileMetaInformationGroupLength does not match the elements"
    assert int.from_bytes(data[end : end + 2], "little") != 2, "group 2 beyond its length"
    return end


@pytest.mark.parametrize(("name", "target"), ALL)
def test_output_is_a_part10_file_in_the_target_syntax(name: str, target: str) -> None:
    data = _output(name, target)
    end = _meta_end(data)
    ds = _read(data)
    meta = ds.file_meta
    assert meta.TransferSyntaxUID == target
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.ImplementationClassUID
    vr = data[end + 4 : end + 6]  # explicit VR: the first element's VR; implicit: its length
    assert (vr.isalpha() and vr.isupper()) == (target != ILE)
    assert _frames(ds) == _frames(_read(_source(name)))


@pytest.mark.parametrize(("name", "target"), _cases(COMPRESSED))
def test_compressed_output_has_one_fragment_per_frame_and_an_offset_table(
    name: str, target: str
) -> None:
    ds = _read(_output(name, target))
    element = ds["PixelData"]
    assert element.is_undefined_length and element.VR == "OB"
    assert "ExtendedOffsetTable" not in ds
    frames = _frames(ds)
    offsets = parse_basic_offsets(ds.PixelData)
    fragments = _fragments(ds.PixelData)
    assert len(fragments) == frames
    positions = [0]
    for fragment in fragments[:-1]:
        positions.append(positions[-1] + 8 + len(fragment))
    if frames > 1:
        assert offsets == positions
    else:
        assert offsets in ([], [0])
    magic = b"\xff\x4f\xff\x51" if target == J2K else b"\xff\xd8"
    for fragment in fragments:
        assert fragment.startswith(magic)
        assert len(fragment) % 2 == 0
        assert fragment.rstrip(b"\x00").endswith(b"\xff\xd9")  # EOI / EOC


@pytest.mark.parametrize(("name", "target"), _cases(NATIVE))
def test_native_output_is_not_encapsulated(name: str, target: str) -> None:
    ds = _read(_output(name, target))
    element = ds["PixelData"]
    assert not element.is_undefined_length
    rows, columns, samples = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    size = rows * columns * samples * _frames(ds) * int(ds.BitsAllocated) // 8
    assert len(ds.PixelData) == size + size % 2
    expected_vr = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    if target == ELE:
        assert expected_vr == element.VR


@pytest.mark.parametrize(("name", "target"), ALL)
def test_photometric_interpretation_follows_the_codec(name: str, target: str) -> None:
    ds = _read(_output(name, target))
    assert ds.PhotometricInterpretation == _expected_photometric(name, target)
    if name in COLOUR:
        assert ds.PlanarConfiguration == 0
        assert ds.SamplesPerPixel == 3


@pytest.mark.parametrize(("name", "target"), ALL)
def test_lossy_image_compression_records_a_lossy_step(name: str, target: str) -> None:
    source = _read(_source(name))
    ds = _read(_output(name, target))
    before = _values(source, "LossyImageCompressionMethod")
    methods = _values(ds, "LossyImageCompressionMethod")
    if target == BASELINE:
        assert ds.LossyImageCompression == "01"
        assert methods[-1] == "ISO_10918_1" and methods[:-1] == before
        ratios = _values(ds, "LossyImageCompressionRatio")
        assert len(ratios) == len(methods)
        assert float(ratios[-1]) > 1
    else:  # lossless: the source's own record, nothing added
        assert ds.get("LossyImageCompression") == source.get("LossyImageCompression")
        assert methods == before


@pytest.mark.parametrize("target", LOSSLESS)
def test_a_lossy_source_stays_marked_lossy(target: str) -> None:
    source = _source("693_J2KI.dcm")  # JPEG 2000 (lossy), LossyImageCompression 01
    assert _read(source).LossyImageCompression == "01"
    assert _read(transcode_bytes(source, target)).LossyImageCompression == "01"
    # the same file without the attribute: the transcoder adds it, and the method
    ds = _read(source)
    del ds.LossyImageCompression
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    result = _read(transcode_bytes(out.getvalue(), target))
    assert result.LossyImageCompression == "01"
    assert "ISO_15444_1" in str(result.LossyImageCompressionMethod)


def test_a_baseline_source_keeps_its_method_in_jpeg_2000() -> None:
    ds = _read(transcode_bytes(_source("SC_rgb_jpeg_dcmtk.dcm"), J2K))  # JPEG Baseline YBR_FULL
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert ds.PhotometricInterpretation == "YBR_RCT"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("CT_small.dcm", ELE),
        ("rtplan.dcm", ILE),
        ("JPEG-LL.dcm", SV1),
        ("SC_rgb_jpeg_dcmtk.dcm", BASELINE),
        ("emri_small_jpeg_2k_lossless.dcm", J2K),
    ],
)
def test_the_stored_syntax_returns_the_stored_bytes(name: str, target: str) -> None:
    data = _source(name)
    assert _read(data).file_meta.TransferSyntaxUID == target
    assert transcode_bytes(data, target) == data


@pytest.mark.parametrize("target", [ELE, SV1, J2K])
@pytest.mark.filterwarnings("ignore:Expected explicit VR, but found implicit VR")
def test_a_file_read_in_the_other_vr_encoding_transcodes_or_is_406(target: str) -> None:
    """SC_rgb_jpeg.dcm says JPEG Baseline (explicit VR) but its data set is implicit VR.

    pydicom reads it (with a warning) and STOW stores it; asking for it in an explicit VR
    syntax must then give a correct file or a 406, not an unhandled error (a 500).
    """
    source = _source("SC_rgb_jpeg.dcm")
    try:
        data = transcode_bytes(source, target)
    except NotAcceptable:
        return
    ds = _read(data)
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.ImageType == ["DERIVED", "SECONDARY", "OTHER"]
    assert ds.LossyImageCompression == "01"


@pytest.mark.parametrize("target", NATIVE)
def test_a_non_image_object_converts_between_native_syntaxes(target: str) -> None:
    source = _read(_source("rtplan.dcm"))  # implicit VR, nested beam sequences
    ds = _read(transcode_bytes(_source("rtplan.dcm"), target))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds == source
    assert len(ds.BeamSequence) == len(source.BeamSequence) > 0


@pytest.mark.parametrize("target", COMPRESSED)
def test_a_non_image_object_cannot_be_compressed(target: str) -> None:
    with pytest.raises(NotAcceptable, match="no image pixel data"):
        transcode_bytes(_source("rtplan.dcm"), target)


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCI.dcm", "JPEG-LL.dcm", "emri_small.dcm"])
def test_more_than_8_bits_to_baseline_is_406(name: str) -> None:
    with pytest.raises(NotAcceptable, match="8-bit"):
        transcode_bytes(_source(name), BASELINE)


def test_palette_colour_to_baseline_is_406() -> None:
    with pytest.raises(NotAcceptable, match="palette"):
        transcode_bytes(_source("OBXXXX1A.dcm"), BASELINE)


@pytest.mark.parametrize(
    "target",
    [
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.1.99",  # deflate
        BIG_ENDIAN,
        "1.2.3.4",
    ],
)
def test_an_unsupported_target_is_406(target: str) -> None:
    with pytest.raises(NotAcceptable, match="not supported") as raised:
        transcode_bytes(_source("CT_small.dcm"), target)
    for supported in syntaxes.TARGETS:
        assert supported in str(raised.value)


@pytest.mark.parametrize("target", [ELE, ILE])
def test_big_endian_to_little_endian_keeps_pixels_and_attributes(target: str) -> None:
    source = _read(_source("emri_small_big_endian.dcm"))
    data = transcode_bytes(_source("emri_small_big_endian.dcm"), target)
    ds = _read(data)
    assert ds.original_encoding == (target == ILE, True)
    assert _same(ds.pixel_array, source.pixel_array)
    assert _same(ds.pixel_array, _read(_source("emri_small.dcm")).pixel_array)
    expected = source.pixel_array.astype("<u2").tobytes()
    assert ds.PixelData == expected  # little endian, byte for byte
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID", "Rows"):
        assert ds[keyword].value == source[keyword].value, keyword
    assert not _changed_attributes(source, ds, implicit=target == ILE)


def _changed_attributes(source: Dataset, ds: Dataset, implicit: bool) -> list[str]:
    """Top-level attributes that changed or vanished (private ones in implicit VR: presence).

    Group lengths (gggg,0000) are retired and dropped by pydicom's writer: not compared.
    """
    wrong = []
    for element in source:
        if element.keyword in MAY_CHANGE or element.tag.element == 0:
            continue
        if element.tag not in ds:
            wrong.append(f"{element.tag} missing")
        elif not (element.tag.is_private and implicit) and ds[element.tag].value != element.value:
            wrong.append(f"{element.tag} {element.keyword}")
    return wrong


@pytest.mark.parametrize(("name", "target"), ALL)
def test_every_other_attribute_is_kept(name: str, target: str) -> None:
    source, ds = _read(_source(name)), _read(_output(name, target))
    assert not _changed_attributes(source, ds, implicit=target == ILE)
    assert {e.tag for e in ds} - {e.tag for e in source} <= {
        pydicom.datadict.tag_for_keyword(k) for k in MAY_CHANGE
    }


@pytest.mark.parametrize(("name", "target"), _cases(LOSSLESS))
def test_lossless_outputs_decode_to_the_source_pixels(name: str, target: str) -> None:
    """Round trip through the transcoder's own decoder (the tools tests use others)."""
    source = _read(_source(name))
    if SOURCE_SYNTAX[name] in (ELE, BIG_ENDIAN):
        expected = source.pixel_array
    else:
        expected = _read(_output(name, ELE)).pixel_array
    back = (
        _output(name, target) if target in NATIVE else transcode_bytes(_output(name, target), ELE)
    )
    assert _same(_read(back).pixel_array, expected)


def _jpeg_segments(stream: bytes) -> dict[int, bytes]:
    """Marker -> payload of the first of each segment up to and including SOS."""
    assert stream[:2] == b"\xff\xd8"
    found: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(stream):
        assert stream[pos] == 0xFF, f"no marker at {pos}"
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        found.setdefault(marker, stream[pos + 4 : pos + 2 + length])
        if marker == 0xDA:
            break
        pos += 2 + length
    return found


SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@pytest.mark.parametrize(("name", "target"), _cases((BASELINE, SV1)))
def test_jpeg_frames_are_the_named_process(name: str, target: str) -> None:
    ds = _read(_output(name, target))
    samples = int(ds.SamplesPerPixel)
    for fragment in _fragments(ds.PixelData):
        segments = _jpeg_segments(fragment)
        sof = 0xC0 if target == BASELINE else 0xC3
        assert set(segments) & SOF == {sof}
        frame = segments[sof]
        precision, rows, columns, count = (
            frame[0],
            int.from_bytes(frame[1:3], "big"),
            int.from_bytes(frame[3:5], "big"),
            frame[5],
        )
        assert (rows, columns, count) == (ds.Rows, ds.Columns, samples)
        assert precision == (8 if target == BASELINE else ds.BitsStored)
        scan = segments[0xDA]
        ss, se, approx = scan[1 + 2 * scan[0] : 4 + 2 * scan[0]]
        if target == SV1:
            assert scan[0] == samples  # one interleaved scan
            assert (ss, se, approx) == (1, 0, 0)  # predictor 1, no point transform
        elif samples == 3:  # YBR_FULL_422: chroma halved horizontally only
            factors = [frame[6 + 3 * c + 1] for c in range(3)]
            assert factors == [0x21, 0x11, 0x11]


def _j2k_header(stream: bytes) -> dict[str, int]:
    assert stream[:4] == b"\xff\x4f\xff\x51", "a raw codestream, no JP2 boxes"
    lsiz = int.from_bytes(stream[4:6], "big")
    components = int.from_bytes(stream[40:42], "big")
    ssiz = {stream[42 + 3 * c] for c in range(components)}
    assert len(ssiz) == 1
    cod = 4 + lsiz
    assert stream[cod : cod + 2] == b"\xff\x52"
    return {
        "columns": int.from_bytes(stream[8:12], "big"),
        "rows": int.from_bytes(stream[12:16], "big"),
        "components": components,
        "precision": (next(iter(ssiz)) & 0x7F) + 1,
        "signed": next(iter(ssiz)) >> 7,
        "mct": stream[cod + 8],
        "wavelet": stream[cod + 13],  # 1: reversible 5-3
    }


@pytest.mark.parametrize(("name", "target"), _cases((J2K,)))
def test_jpeg_2000_frames_are_reversible_and_match_the_attributes(name: str, target: str) -> None:
    ds = _read(_output(name, target))
    for fragment in _fragments(ds.PixelData):
        header = _j2k_header(fragment)
        assert header["wavelet"] == 1
        assert (header["rows"], header["columns"]) == (ds.Rows, ds.Columns)
        assert header["components"] == ds.SamplesPerPixel
        assert header["signed"] == ds.PixelRepresentation
        assert header["mct"] == (ds.PhotometricInterpretation == "YBR_RCT")


@pytest.mark.parametrize(("name", "target"), _cases((J2K,)))
def test_jpeg_2000_precision_is_bits_stored(name: str, target: str) -> None:
    ds = _read(_output(name, target))
    for fragment in _fragments(ds.PixelData):
        assert _j2k_header(fragment)["precision"] == ds.BitsStored


# --- independent tools ----------------------------------------------------------------------


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        check=False,
        capture_output=True,
        encoding="latin-1",
        timeout=120,
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}: {done.stderr}"
    return done


def _write(tmp_path: Path, name: str, target: str) -> Path:
    path = tmp_path / f"{name[:-4]}-{SHORT[target]}.dcm"
    path.write_bytes(_output(name, target))
    return path


def _pixels(path: Path) -> Array:
    return pydicom.dcmread(path).pixel_array


def _decompress_with_a_tool(path: Path, syntax: str, out: Path) -> Array:
    """Pixels of a stored file as a tool decodes them (native ones read as they are)."""
    if syntax in (ELE, ILE, BIG_ENDIAN):
        return _pixels(path)
    if syntax == "1.2.840.10008.1.2.4.80":
        _run(require_debian_tool("dcmdjpls", "dcmtk"), path, out)
    elif syntax in (SV1, BASELINE):
        _run(require_debian_tool("dcmdjpeg", "dcmtk"), path, out)
    else:
        _run(require_debian_tool("gdcmconv", "libgdcm-tools"), "--raw", path, out)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == ELE
    return _pixels(out)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Array]:
    """Source pixels decoded by a tool (dcmtk, GDCM) or, for native files, read as stored."""
    folder = tmp_path_factory.mktemp("reference")

    @functools.cache
    def decode(name: str) -> Array:
        _source(name)
        out = folder / f"{name[:-4]}-decoded.dcm"
        return _decompress_with_a_tool(dicom_files.path(name), SOURCE_SYNTAX[name], out)

    return decode


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), ALL)
def test_dcmdump_reads_the_output_cleanly(name: str, target: str, tmp_path: Path) -> None:
    dcmdump = require_debian_tool("dcmdump", "dcmtk")
    done = _run(dcmdump, "-Un", _write(tmp_path, name, target))
    assert not re.search(r"^[EWF]: ", done.stderr, re.MULTILINE), done.stderr
    assert re.search(rf"^\(0002,0010\) UI \[{re.escape(target)}\]", done.stdout, re.MULTILINE)
    frames = _frames(_read(_output(name, target)))
    if target in COMPRESSED:
        assert f"(7fe0,0010) OB (PixelSequence #={frames + 1})" in done.stdout
        offset_table = re.search(r"^  \(fffe,e000\) pi .*#\s*(\d+), 1 Item", done.stdout, re.M)
        assert offset_table is not None
        assert int(offset_table[1]) in ({4 * frames} if frames > 1 else {0, 4})
    else:
        assert re.search(r"^\(7fe0,0010\) O[BW] ", done.stdout, re.MULTILINE)


def _dciodvfy_errors(dciodvfy: str, path: Path) -> set[str]:
    done = subprocess.run(
        [dciodvfy, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    errors = set()
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("Error"):
            errors.add(line)
    return errors


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), ALL)
def test_dciodvfy_finds_no_new_errors(name: str, target: str, tmp_path: Path) -> None:
    dciodvfy = require_debian_tool("dciodvfy", "dicom3tools")
    before = _dciodvfy_errors(dciodvfy, dicom_files.path(name))
    after = _dciodvfy_errors(dciodvfy, _write(tmp_path, name, target))
    assert not after - before


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases(NATIVE))
def test_dcmtk_and_gdcm_read_native_outputs_as_the_source_pixels(
    name: str, target: str, tmp_path: Path, reference: Callable[[str], Array]
) -> None:
    dcmconv = require_debian_tool("dcmconv", "dcmtk")
    gdcmconv = require_debian_tool("gdcmconv", "libgdcm-tools")
    path = _write(tmp_path, name, target)
    by_dcmtk, by_gdcm = tmp_path / "dcmtk.dcm", tmp_path / "gdcm.dcm"
    _run(dcmconv, "+te", path, by_dcmtk)
    _run(gdcmconv, "--explicit", path, by_gdcm)
    for written in (by_dcmtk, by_gdcm):
        assert pydicom.dcmread(written).file_meta.TransferSyntaxUID == ELE
        assert _same(_pixels(written), reference(name)), written.name


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases((SV1,)))
def test_dcmdjpeg_decodes_sv1_outputs_to_the_source_pixels(
    name: str, target: str, tmp_path: Path, reference: Callable[[str], Array]
) -> None:
    decoded = tmp_path / "decoded.dcm"
    pixels = _decompress_with_a_tool(_write(tmp_path, name, target), SV1, decoded)
    assert _same(pixels, reference(name))
    assert pydicom.dcmread(decoded).PhotometricInterpretation == _expected_photometric(name, SV1)


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases((BASELINE,)))
def test_dcmdjpeg_decodes_baseline_outputs_close_to_the_source(
    name: str, target: str, tmp_path: Path, reference: Callable[[str], Array]
) -> None:
    decoded = tmp_path / "decoded.dcm"
    pixels = _decompress_with_a_tool(_write(tmp_path, name, target), BASELINE, decoded)
    expected = reference(name)
    assert pixels.shape == expected.shape
    error = np.abs(pixels.astype(np.int64) - expected.astype(np.int64))
    assert error.mean() < 3, error.mean()
    ds = pydicom.dcmread(decoded)  # dcmtk turns YBR_FULL_422 back into RGB
    assert ds.PhotometricInterpretation == ("RGB" if name in COLOUR else "MONOCHROME2")


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases((J2K,)))
def test_gdcm_decodes_j2k_outputs_to_the_source_pixels(
    name: str, target: str, tmp_path: Path, reference: Callable[[str], Array]
) -> None:
    decoded = tmp_path / "decoded.dcm"
    pixels = _decompress_with_a_tool(_write(tmp_path, name, target), J2K, decoded)
    assert _same(pixels, reference(name))
    assert pydicom.dcmread(decoded).PhotometricInterpretation == (
        "RGB" if name in COLOUR else "MONOCHROME2"
    )


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases((J2K,)))
def test_gdcm_keeps_bits_stored_of_j2k_outputs(name: str, target: str, tmp_path: Path) -> None:
    decoded = tmp_path / "decoded.dcm"
    _decompress_with_a_tool(_write(tmp_path, name, target), J2K, decoded)
    ds, source = pydicom.dcmread(decoded), _read(_source(name))
    assert (ds.BitsStored, ds.HighBit) == (source.BitsStored, source.HighBit)


@pytest.mark.tools
@pytest.mark.parametrize(("name", "target"), _cases((J2K,)))
def test_openjpeg_decodes_j2k_outputs_to_the_source_pixels(
    name: str, target: str, tmp_path: Path, reference: Callable[[str], Array]
) -> None:
    opj_decompress = require_debian_tool("opj_decompress", "libopenjp2-tools")
    opj_dump = require_debian_tool("opj_dump", "libopenjp2-tools")
    ds = _read(_output(name, target))
    rows, columns, samples = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    dtype = np.dtype(f"<{'i' if ds.PixelRepresentation else 'u'}{int(ds.BitsAllocated) // 8}")
    expected = reference(name).reshape(_frames(ds), rows, columns, samples)
    for index, fragment in enumerate(_fragments(ds.PixelData)):
        stream, raw = tmp_path / f"{index}.j2k", tmp_path / f"{index}.rawl"
        stream.write_bytes(fragment)
        _run(opj_decompress, "-quiet", "-i", stream, "-o", raw)
        planes = np.frombuffer(raw.read_bytes(), dtype).reshape(samples, rows, columns)
        if ds.PixelRepresentation:  # .rawl holds signed samples as BitsStored-bit patterns
            sign = 1 << (int(ds.BitsStored) - 1)
            planes = ((planes.astype(np.int64) & (2 * sign - 1)) ^ sign) - sign
        assert _same(np.moveaxis(planes, 0, -1), expected[index]), f"frame {index}"
        dump = _run(opj_dump, "-i", stream).stdout
        assert set(re.findall(r"qmfbid=(\d)", dump)) == {"1"}  # reversible 5-3 wavelet
        assert set(re.findall(r"qntsty=(\d)", dump)) == {"0"}  # no quantisation
        assert f"mct={int(name in COLOUR)}" in dump


@pytest.mark.parametrize("target", [ELE, SV1, J2K])
def test_values_beyond_bits_stored_are_kept_and_bits_stored_widened(target: str) -> None:
    """A codestream wider than BitsStored (some encoders write 16 bits for 12 stored) may hold
    values above 2**BitsStored; lossless output keeps them and says so in BitsStored."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    from shared.dicom import pixels

    ds = pydicom.dcmread(dicom_files.path("MR_small.dcm"))  # 64x64, 16 bits
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    values = (np.arange(64 * 64, dtype=np.uint16) * 9).reshape(64, 64)  # up to 36855
    if target == J2K:  # from JPEG-LS lossless
        stream, source = imagecodecs.jpegls_encode(values, level=0), "1.2.840.10008.1.2.4.80"
    else:
        stream, source = imagecodecs.jpeg2k_encode(values, reversible=True), J2K
    ds.PixelData = encapsulate([bytes(stream)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = source
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    result = _read(transcode_bytes(out.getvalue(), target))
    assert (int(result.BitsStored), int(result.HighBit)) == (16, 15)
    assert np.array_equal(pixels.decode_frame(result, 0).array, values)
