"""Rendering of real corpus images: sizes, the PS3.3 VOI formula, polarity and colours."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset

from shared.dicom import pixels, render
from shared.dicom.render_params import JPEG, PNG, RenderParameters
from shared.errors import BadRequest, NotAcceptable
from tests.support import dicom_files

# Corpus files with pixel data that cannot be decoded (damaged on purpose by their authors).
BROKEN = {
    "JPEG2000-embedded-sequence-delimiter.dcm": "J2K header unreadable (pydicom fails too)",
    "MR_truncated.dcm": "pixel data cut short",
    "badVR.dcm": "pixel data shorter than its attributes say",
}


def _read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(dicom_files.path(name))


def _images() -> list[str]:
    names = []
    for name in sorted(dicom_files.part10_files()):
        try:
            ds = _read(name)
        except Exception:  # noqa: BLE001, S112 - files that are not DICOM at all
            continue
        if pixels.is_image(ds) and name not in BROKEN:
            names.append(name)
    return names


IMAGES = _images()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_corpus_has_the_images_the_issue_names() -> None:
    assert len(IMAGES) > 60
    needed = {"RG1_J2KI.dcm", "OBXXXX1A.dcm", "emri_small.dcm", "color3d_jpeg_baseline.dcm"}
    assert needed <= set(IMAGES) or not dicom_files.available()


@pytest.mark.parametrize("name", IMAGES)
def test_every_corpus_image_renders_at_its_size_and_into_a_box(name: str) -> None:
    ds = _read(name)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if ds.get("PixelAspectRatio"):  # shown with square pixels (color-pl/px.dcm: 4:3)
        vertical, horizontal = (float(v) for v in ds.PixelAspectRatio)
        rows = round(rows * max(vertical / horizontal, 1))
        columns = round(columns * max(horizontal / vertical, 1))
    full = Image.open(io.BytesIO(render.render(ds, RenderParameters())))
    assert full.format == "JPEG"
    assert full.size == (columns, rows)
    boxed = Image.open(io.BytesIO(render.render(ds, RenderParameters(rows=64, columns=64))))
    scale = min(64 / rows, 64 / columns)
    assert boxed.size == (max(1, round(columns * scale)), max(1, round(rows * scale)))
    last = pixels.frame_count(ds)
    assert render.render(ds, RenderParameters(frame=last, rows=32))


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_damaged_pixel_data_is_a_clear_406(name: str) -> None:
    with pytest.raises(NotAcceptable, match=r"could not be decoded|declares a larger image"):
        render.render(_read(name), RenderParameters())


def _ps33_linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1 written out independently, output range 0..255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0


@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (50.0, 2.0)])
def test_ct_window_matches_the_ps33_formula(center: float, width: float) -> None:
    ds = _read("CT_small.dcm")
    stored = ds.pixel_array.astype(float)
    hu = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.vectorize(lambda x: _ps33_linear(x, center, width))(hu)
    png = render.render(ds, RenderParameters(window=(center, width)), PNG)
    got = _decode(png).astype(float)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0  # rounding only (PNG is lossless)


def test_the_stored_window_is_the_default_then_the_pixel_range() -> None:
    ds = _read("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600
    stored = _decode(render.render(ds, RenderParameters(), PNG))
    explicit = _decode(
        render.render(
            ds, RenderParameters(window=(float(ds.WindowCenter), float(ds.WindowWidth))), PNG
        )
    )
    assert np.array_equal(stored, explicit)
    del ds.WindowCenter, ds.WindowWidth
    ranged = _decode(render.render(ds, RenderParameters(), PNG))
    assert ranged.min() == 0 and ranged.max() == 255  # min-max of the modality values


def test_linear_exact_and_sigmoid_follow_their_formulas() -> None:
    values = np.array([-1000.0, 0.0, 40.0, 100.0, 1000.0], dtype=np.float32)
    exact = render.window_8bit(values, 40.0, 400.0, "LINEAR_EXACT")
    assert exact.tolist() == [0, 102, 128, 166, 255]
    sigmoid = render.window_8bit(values, 40.0, 400.0, "SIGMOID")
    expected = 255.0 / (1 + np.exp(-4 * (values - 40.0) / 400.0))
    assert np.abs(sigmoid - expected).max() <= 0.5


def test_modality_lut_sequence_is_applied() -> None:
    ds = _read("mlut_18.dcm")
    arr = pixels.decode_frame(ds, 0).array
    from pydicom.pixels.processing import apply_modality_lut

    assert np.array_equal(render.modality_values(ds, arr), apply_modality_lut(arr, ds))


def test_voi_lut_sequence_is_used_when_no_window() -> None:
    ds = _read("vlut_04.dcm")
    out = _decode(render.render(ds, RenderParameters(), PNG))
    from pydicom.pixels.processing import apply_voi

    lut = apply_voi(ds.pixel_array, ds).astype(float)
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expected = np.rint(lut * 255.0 / max((1 << bits) - 1, lut.max()))
    assert np.abs(out.astype(float) - expected).max() <= 1.0


def test_monochrome1_renders_inverted() -> None:
    ds = _read("RG1_UNCR.dcm") if dicom_files.available() else None
    if ds is None:
        pytest.skip("pydicom-data is not installed")
    params = RenderParameters(rows=256)
    as_stored = _decode(render.render(ds, params, PNG)).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME2"
    as_monochrome2 = _decode(render.render(ds, params, PNG)).astype(int)
    assert np.abs(as_stored - (255 - as_monochrome2)).max() <= 2  # Lanczos rounding
    ds.PhotometricInterpretation = "MONOCHROME1"
    shown = _decode(render.render(ds, RenderParameters(), PNG)).astype(int)
    stored = ds.pixel_array
    brightest = np.unravel_index(np.argmin(stored), stored.shape)  # minimum value is white
    darkest = np.unravel_index(np.argmax(stored), stored.shape)
    center, width = render.stored_window(ds) or (0.0, 0.0)
    values = render.modality_values(ds, stored)
    for point in (brightest, darkest):
        expected = 255 - _ps33_linear(float(values[point]), center, width)
        assert abs(shown[point] - expected) <= 1
    assert shown[brightest] > shown[darkest] + 100


def test_presentation_lut_inverse_inverts_monochrome2_only() -> None:
    ds = _read("MR_small.dcm")
    plain = _decode(render.render(ds, RenderParameters(), PNG)).astype(int)
    ds.PresentationLUTShape = "INVERSE"
    assert np.array_equal(_decode(render.render(ds, RenderParameters(), PNG)), 255 - plain)


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "examples_palette.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_colour_images_show_their_lut_colours(name: str) -> None:
    ds = _read(name)
    from pydicom.pixels.processing import apply_color_lut

    expected = apply_color_lut(ds.pixel_array, ds)
    if expected.dtype != np.uint8:
        expected = (expected >> 8).astype(np.uint8)
    got = _decode(render.render(ds, RenderParameters(), PNG))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG, YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG, YBR_FULL
        "SC_rgb_jpeg_gdcm.dcm",  # lossless JPEG, RGB
        "SC_rgb_rle.dcm",
    ],
)
def test_ybr_and_rgb_images_show_the_reference_colours(name: str) -> None:
    reference = _read("SC_rgb.dcm").pixel_array.astype(int)  # 100x100 colour bars
    got = _decode(render.render(_read(name), RenderParameters(), PNG)).astype(int)
    assert got.shape == reference.shape
    assert np.abs(got - reference).mean() < 4  # lossy sources and 4:2:2 chroma


def test_j2k_colour_transform_is_undone() -> None:
    if not dicom_files.available():
        pytest.skip("pydicom-data is not installed")
    reference = _read("US1_UNCR.dcm").pixel_array.astype(int)
    got = _decode(render.render(_read("US1_J2KR.dcm"), RenderParameters(), PNG)).astype(int)
    assert np.array_equal(got, reference)


def test_reduced_resolution_j2k_render_matches_full_decode() -> None:
    if not dicom_files.available():
        pytest.skip("pydicom-data is not installed")
    ds = _read("MR2_J2KR.dcm")  # 1024x1024, decoded at 512 for a 256 box
    reduced = _decode(render.render(ds, RenderParameters(rows=256), PNG)).astype(float)
    full = _read("MR2_UNCR.dcm")
    reference = _decode(render.render(full, RenderParameters(rows=256), PNG)).astype(float)
    assert reduced.shape == reference.shape == (256, 256)
    # the wavelet's low band is not a Lanczos filter: edges differ a little, the picture not
    assert abs(reduced.mean() - reference.mean()) < 1.0
    assert np.corrcoef(reduced.ravel(), reference.ravel())[0, 1] > 0.98


def test_frame_selection_picks_that_frame() -> None:
    ds = _read("emri_small.dcm")  # 10 frames
    window = RenderParameters(window=(500.0, 1000.0))
    first = _decode(render.render(ds, window, PNG))
    for frame in (1, 5, 10):
        got = _decode(render.render(ds, RenderParameters(frame=frame, window=(500.0, 1000.0)), PNG))
        expected = render.window_8bit(ds.pixel_array[frame - 1].astype(np.float32), 500.0, 1000.0)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(
        first, _decode(render.render(ds, RenderParameters(frame=1, window=(500.0, 1000.0)), PNG))
    )
    with pytest.raises(BadRequest, match="number of frames"):
        render.render(ds, RenderParameters(frame=11))


def test_rows_and_columns_keep_the_aspect_ratio() -> None:
    ds = _read("JPEG2000_UNC.dcm")  # 1024 rows x 256 columns
    assert render.output_size(1024, 256, 512, None) == (512, 128)
    assert render.output_size(1024, 256, None, 64) == (256, 64)
    assert render.output_size(1024, 256, 100, 100) == (100, 25)
    size = Image.open(io.BytesIO(render.render(ds, RenderParameters(rows=100, columns=100)))).size
    assert size == (25, 100)
    with pytest.raises(BadRequest, match="8192"):  # 8192 columns make 32768 rows
        render.render(ds, RenderParameters(columns=8192))


def test_region_is_cropped_before_scaling() -> None:
    ds = _read("SC_rgb.dcm")  # colour bars: the top fifth is one colour
    params = RenderParameters(region=(0.0, 0.0, 1.0, 0.1), rows=10)
    got = _decode(render.render(ds, params, PNG)).astype(int)
    assert got.shape == (10, 100, 3)
    top = ds.pixel_array[0, 0].astype(int)
    assert np.abs(got[5, 50] - top).max() <= 2


def test_image_quality_changes_the_jpeg() -> None:
    ds = _read("CT_small.dcm")
    small = render.render(ds, RenderParameters(quality=10))
    large = render.render(ds, RenderParameters(quality=100))
    assert len(small) < len(large)
    assert render.render(ds, RenderParameters(), JPEG)[:2] == b"\xff\xd8"
    assert render.render(ds, RenderParameters(), PNG)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_non_image_object_is_refused() -> None:
    with pytest.raises(NotAcceptable, match="no image pixel data"):
        render.render(_read("rtplan.dcm"), RenderParameters())


def test_pixel_aspect_ratio_is_shown_with_square_pixels() -> None:
    ds = _read("CT_small.dcm")  # 128 x 128
    ds.PixelAspectRatio = [2, 1]  # pixels twice as tall as wide
    assert Image.open(io.BytesIO(render.render(ds, RenderParameters()))).size == (128, 256)
    boxed = render.render(ds, RenderParameters(rows=64, columns=64))
    assert Image.open(io.BytesIO(boxed)).size == (32, 64)
    ds.PixelAspectRatio = [1, 1]
    assert Image.open(io.BytesIO(render.render(ds, RenderParameters()))).size == (128, 128)


def test_enhanced_ct_uses_its_functional_groups() -> None:
    ds = _read("eCT_Supplemental.dcm")  # rescale and window only in the shared groups
    assert "RescaleIntercept" not in ds and "WindowCenter" not in ds
    hu = ds.pixel_array[1].astype(float) - 1024.0  # intercept -1024, slope 1
    expected = np.vectorize(lambda x: _ps33_linear(x, 49.0, 102.0))(hu)
    got = _decode(render.render(ds, RenderParameters(frame=2), PNG)).astype(float)
    assert np.abs(got - expected).max() <= 1.0
