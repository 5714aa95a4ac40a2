"""Decoding every transfer syntax of the corpus, checked against uncompressed references."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.pixels.utils import pixel_array

from shared.dicom import pixels
from shared.errors import NotAcceptable
from tests.support import dicom_files

# (compressed or re-encoded file, the same pixels uncompressed): lossless pairs must be equal.
LOSSLESS_PAIRS = [
    ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE, signed 16
    ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit big endian
    ("MR_small_implicit.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS, signed
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # J2K, signed
    ("emri_small_RLE.dcm", "emri_small.dcm"),  # multi-frame
    ("emri_small_big_endian.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_16bit_2frame.dcm"),  # 16-bit colour RLE
    ("SC_rgb_rle_32bit.dcm", "SC_rgb_32bit.dcm"),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),  # lossless JPEG SV1 colour
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),  # palette indices
    ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm"),
    ("liver_expb.dcm", "liver.dcm"),  # 1-bit segmentation
    ("rtdose_rle.dcm", "rtdose.dcm"),  # 32-bit dose
    ("693_J2KR.dcm", "693_UNCR.dcm"),  # CT 512, pydicom-data
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # MONOCHROME1 CR 1841x1955
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # YBR_RCT -> RGB
    ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),  # NM 16-bit J2K (lossy but labelled alike)
]

# Files whose photometric interpretation changes on decoding (the codec undid a transform).
DECODED_AS_RGB = {
    "US1_J2KR.dcm": "YBR_RCT",
    "US1_J2KI.dcm": "YBR_ICT",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "YBR_FULL_422",
    "color3d_jpeg_baseline.dcm": "YBR_FULL_422",
    "SC_rgb_jpeg_dcmtk.dcm": "YBR_FULL",
}

# Lossy syntaxes no other pydicom plugin here decodes; checked against a near reference.
LOSSY_NEAR = [
    ("JPGExtended.dcm", "JPEG2000_UNC.dcm", 0.02),  # JPEG Extended 12-bit (.4.51)
    ("JPEG-lossy.dcm", "JPEG2000_UNC.dcm", 0.02),
    ("693_J2KI.dcm", "693_UNCI.dcm", 0.02),
    ("RG1_J2KI.dcm", "RG1_UNCI.dcm", 0.02),
    ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm", 0.02),  # JPEG Baseline YBR_FULL
    ("SC_rgb_jls_lossy_line.dcm", "SC_rgb.dcm", 0.02),  # JPEG-LS near-lossless colour
]


def _read(name: str) -> Dataset:
    try:
        path = dicom_files.path(name)
    except KeyError:
        pytest.skip(f"{name} is not in the installed corpus")
    if path.stat().st_size == 0:
        pytest.skip(f"{name} is not downloaded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _all_frames(ds: Dataset) -> np.ndarray:
    return np.stack([pixels.decode_frame(ds, i).array for i in range(pixels.frame_count(ds))])


@pytest.mark.parametrize(("name", "reference"), LOSSLESS_PAIRS)
def test_lossless_syntaxes_decode_identical_to_the_uncompressed_file(
    name: str, reference: str
) -> None:
    ds, ref = _read(name), _read(reference)
    got = _all_frames(ds)
    expected = pixel_array(ref, raw=True)
    if pixels.frame_count(ref) == 1:
        expected = expected[np.newaxis]
    assert got.dtype.isnative
    assert got.dtype.kind == expected.dtype.kind
    if name == "JPEG2000.dcm":  # labelled .4.91: lossy, compare closely only
        assert np.abs(got.astype(float) - expected).mean() < 0.02 * float(expected.max())
        return
    assert np.array_equal(got, expected), name


@pytest.mark.parametrize(("name", "reference", "tolerance"), LOSSY_NEAR)
def test_lossy_syntaxes_decode_close_to_their_source(
    name: str, reference: str, tolerance: float
) -> None:
    ds, ref = _read(name), _read(reference)
    got = pixels.decode_frame(ds, 0).array.astype(float)
    expected = pixel_array(ref, index=0).astype(float)
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min()) or 1.0
    assert np.abs(got - expected).mean() < tolerance * span


@pytest.mark.parametrize(("name", "stored"), sorted(DECODED_AS_RGB.items()))
def test_codec_colour_transforms_are_reported_as_rgb(name: str, stored: str) -> None:
    ds = _read(name)
    assert str(ds.PhotometricInterpretation) == stored
    frame = pixels.decode_frame(ds, 0)
    assert frame.photometric == "RGB"
    assert frame.array.shape[-1] == 3


def test_rgb_jpeg_without_jfif_is_not_colour_converted() -> None:
    ds = _read("SC_jpeg_no_color_transform.dcm")
    ours = pixels.decode_frame(ds, 0).array.astype(int)
    theirs = pixel_array(ds).astype(int)  # pydicom's Pillow plugin, same rule
    assert np.abs(ours - theirs).max() <= 1


def test_jpeg_lossless_nm_and_8_bit_decode() -> None:
    nm = pixels.decode_frame(_read("JPEG-LL.dcm"), 0)
    assert nm.array.dtype == np.int16 and nm.array.shape == (1024, 256)
    eight = pixels.decode_frame(_read("JPGLosslessP14SV1_1s_1f_8b.dcm"), 0)
    assert eight.array.dtype == np.uint8 and eight.array.shape == (768, 1024)


def test_signed_values_survive_codecs_that_return_unsigned() -> None:
    ds = _read("MR_small.dcm")
    raw = np.array([[0x0FFF, 0x0800], [0x07FF, 0x0001]], dtype=np.uint16)
    ds.BitsStored, ds.BitsAllocated, ds.PixelRepresentation = 12, 16, 1
    assert pixels.stored_values(raw, ds).tolist() == [[-1, -2048], [2047, 1]]
    widened = np.array([[0xFFFF, 0xF800]], dtype=np.uint16)  # sign-extended to 16 already
    assert pixels.stored_values(widened, ds).tolist() == [[-1, -2048]]


def test_j2k_reduced_resolution_halves_each_level() -> None:
    ds = _read("MR2_J2KR.dcm")  # 1024 x 1024, 5 decomposition levels
    full = pixels.decode_frame(ds, 0).array.astype(float)
    for level in (1, 2, 3):
        frame = pixels.decode_frame(ds, 0, reduce=level)
        assert frame.reduced == level
        assert frame.array.shape == (1024 >> level, 1024 >> level)
        block = full.reshape(1024 >> level, 1 << level, 1024 >> level, 1 << level).mean(axis=(1, 3))
        # same scale as the stored values (Pillow's 16-bit scaling is undone)
        assert abs(frame.array.mean() - block.mean()) < 0.01 * full.max()


def test_j2k_reduced_decoding_keeps_signed_ct_values() -> None:
    ds = _read("693_J2KR.dcm")
    frame = pixels.decode_frame(ds, 0, reduce=1)
    full = pixels.decode_frame(ds, 0).array
    assert frame.array.dtype == np.int16
    assert frame.array[0, 0] == full[0, 0] == -2000  # the padding outside the scan circle
    block = full.astype(float).reshape(256, 2, 256, 2).mean(axis=(1, 3))
    assert abs(frame.array.mean() - block.mean()) < 5  # a low band, not Pillow's offset scale


def test_other_syntaxes_ignore_reduce() -> None:
    ds = _read("CT_small.dcm")
    frame = pixels.decode_frame(ds, 0, reduce=2)
    assert frame.reduced == 0 and frame.array.shape == (128, 128)


def test_objects_without_pixels_and_unknown_syntaxes_are_406() -> None:
    with pytest.raises(pixels.NotAnImage):
        pixels.decode_frame(_read("rtplan.dcm"), 0)
    ds = _read("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2
    with pytest.raises(NotAcceptable, match="cannot be decoded"):
        pixels.decode_frame(ds, 0)


def test_frame_count_defaults_to_one() -> None:
    ds = _read("CT_small.dcm")
    assert pixels.frame_count(ds) == 1
    ds.NumberOfFrames = ""
    assert pixels.frame_count(ds) == 1
    assert pixels.frame_count(_read("emri_small.dcm")) == 10


def test_htj2k_decodes() -> None:
    # no HTJ2K file in the corpus: encode a real one with the same library, as a modality would
    import imagecodecs
    from pydicom.encaps import encapsulate

    ds = _read("MR_small.dcm")  # signed 16-bit
    original = ds.pixel_array
    ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(original, level=0))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
    assert np.array_equal(pixels.decode_frame(ds, 0).array, original)
