"""Rendered images of one frame: JPEG or PNG for viewers and thumbnails (PS3.18 §9, §8.3.5).

Grayscale pipeline (PS3.3 C.11, PS3.4 N.2): stored values -> Modality LUT (rescale or LUT
sequence) -> VOI (requested window, else the first stored window or VOI LUT, else the pixel
range) -> MONOCHROME1 inversion -> 8 bits. Colour: YBR to RGB, palette lookup, samples wider
than 8 bits shifted down. Then the region is cropped and the result scaled into the
rows/columns box with a Lanczos filter and encoded.

JPEG 2000 frames that will be shrunk are decoded at a lower resolution level where the
codestream allows (see pixels.decode_frame), which is most of the cost for large CR/DX.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

from shared import budget
from shared.dicom import pixels
from shared.dicom.render_params import JPEG, MAX_SIDE, PNG, RenderParameters
from shared.errors import BadRequest, NotAcceptable

#: Peak memory of a render per byte of the decoded frame (tracemalloc, docs/limits.md):
#: 10-11x for 16-bit grey (float64 LUT and window steps), 2x for 8-bit colour.
PEAK_PER_FRAME_BYTE = 12


def render_bytes(
    data: bytes,
    request: RenderParameters,
    media_type: str = JPEG,
    *,
    memory_budget: int = budget.request_budget(),
) -> bytes:
    """Render a stored Part 10 file (see ``render``)."""
    return render(dcmread(io.BytesIO(data)), request, media_type, memory_budget=memory_budget)


def render(
    ds: Dataset,
    request: RenderParameters,
    media_type: str = JPEG,
    *,
    memory_budget: int = budget.request_budget(),
) -> bytes:
    """The encoded image (JPEG or PNG bytes) of one frame of ``ds``.

    413 before decoding when the frame (as declared by the attributes or by the compressed
    frame's header) would take more than ``memory_budget`` to render; 406 when the image
    attributes are missing or hold values that cannot be used.
    """
    with pixels.refusing_inconsistent("the image attributes of the stored object are invalid"):
        return _render(ds, request, media_type, memory_budget)


def _render(ds: Dataset, request: RenderParameters, media_type: str, memory_budget: int) -> bytes:
    pixels.require_image(ds)
    count = pixels.frame_count(ds)
    if request.frame > count:
        raise BadRequest(f"frameNumber is larger than the number of frames ({count})")
    source_rows, source_columns = int(ds.Rows), int(ds.Columns)
    x0, y0, x1, y1 = request.region or (0.0, 0.0, 1.0, 1.0)
    crop_rows = max(1, round((y1 - y0) * source_rows))
    crop_columns = max(1, round((x1 - x0) * source_columns))
    shown_rows, shown_columns = _square_pixels(ds, crop_rows, crop_columns)
    out_rows, out_columns = output_size(shown_rows, shown_columns, request.rows, request.columns)
    if max(out_rows, out_columns) > MAX_SIDE:
        raise BadRequest(f"the rendered image would be over {MAX_SIDE} pixels on a side")
    scale = max(out_rows / crop_rows, out_columns / crop_columns)  # the axis shrunk least
    reduce = math.floor(math.log2(1 / scale)) if scale < 1 else 0
    frame = pixels.decode_frame(
        ds,
        request.frame - 1,
        reduce=reduce,
        limit=pixels.MemoryLimit(memory_budget, PEAK_PER_FRAME_BYTE, "rendering one frame"),
    )
    image = to_display(ds, frame, request.frame - 1, request.window, request.window_function)
    return _encode(image, request, media_type, (out_rows, out_columns))


def _square_pixels(ds: Dataset, rows: int, columns: int) -> tuple[int, int]:
    """Rows and columns as shown with square pixels: Pixel Aspect Ratio (0028,0034) is the
    vertical and horizontal pixel size; when present and not 1:1 one axis is stretched."""
    ratio = ds.get("PixelAspectRatio")
    try:
        vertical, horizontal = (float(v) for v in ratio)
    except (TypeError, ValueError):
        return rows, columns
    if vertical <= 0 or horizontal <= 0 or vertical == horizontal:
        return rows, columns
    if vertical > horizontal:
        return max(1, round(rows * vertical / horizontal)), columns
    return rows, max(1, round(columns * horizontal / vertical))


def output_size(
    rows: int, columns: int, box_rows: int | None, box_columns: int | None
) -> tuple[int, int]:
    """Size of the image fitted into the rows/columns box, aspect ratio kept."""
    factors = []
    if box_rows is not None:
        factors.append(box_rows / rows)
    if box_columns is not None:
        factors.append(box_columns / columns)
    if not factors:
        return rows, columns
    factor = min(factors)
    return max(1, round(rows * factor)), max(1, round(columns * factor))


def to_display(
    ds: Dataset,
    frame: pixels.Frame,
    index: int,
    window: tuple[float, float] | None,
    function: str | None = None,
) -> np.ndarray:
    """8-bit grayscale (rows, columns) or RGB (rows, columns, 3) of a decoded frame."""
    arr = frame.array
    photometric = frame.photometric
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        out = _grey_8bit(ds, arr, index, window, function)
        if photometric == "MONOCHROME1" or _presentation_inverse(ds):
            out = 255 - out
        return out
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _to_uint8(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if photometric == "YBR_FULL":
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    elif photometric != "RGB":
        raise NotAcceptable(f"rendering {photometric} images is not supported")
    if arr.ndim != 3:
        raise NotAcceptable("a colour image without three samples per pixel")
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    return _to_uint8(np.ascontiguousarray(arr), bits)


_LUT_MIN_PIXELS = 1 << 14
_LUT_MAX_ENTRIES = 1 << 17


def _grey_8bit(
    ds: Dataset,
    arr: np.ndarray,
    index: int,
    window: tuple[float, float] | None,
    function: str | None = None,
) -> np.ndarray:
    """Modality LUT then VOI window, to 8 bits.

    With integer stored values and a window (asked for or stored), both steps are
    element-wise: they are computed once per distinct stored value in the image's range and
    applied as a lookup table, the same bytes for a fraction of the float work.
    """
    if (
        arr.dtype.kind in "iu"
        and arr.size >= _LUT_MIN_PIXELS
        and (window is not None or stored_window(ds, index) is not None)
    ):
        low, high = int(arr.min()), int(arr.max())
        if high - low < _LUT_MAX_ENTRIES:
            domain = np.arange(low, high + 1, dtype=np.int64).astype(arr.dtype)
            lut = voi_8bit(ds, modality_values(ds, domain, index), index, window, function)
            picked: np.ndarray = lut[arr.astype(np.int64) - low]
            return picked
    return voi_8bit(ds, modality_values(ds, arr, index), index, window, function)


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(bits - 8, 0)
    return (arr.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8)


def _presentation_inverse(ds: Dataset) -> bool:
    """MONOCHROME2 with Presentation LUT Shape INVERSE is shown inverted.

    For MONOCHROME1 the DX/MG IODs *require* INVERSE alongside it (the same inversion, not a
    second one), so it is only looked at for MONOCHROME2.
    """
    return str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME2" and (
        str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    )


def _frame_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The functional group item ``sequence`` that applies to frame ``index`` (enhanced IODs)."""
    for groups, pick in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if items is not None and len(items) > pick:
            inner = items[pick].get(sequence)
            if inner:
                return inner[0]  # type: ignore[no-any-return]
    return None


def modality_values(ds: Dataset, arr: np.ndarray, index: int = 0) -> np.ndarray:
    """Stored values through the Modality LUT (PS3.3 C.11.1), as float32 or LUT output."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds))
    source = _frame_item(ds, index, "PixelValueTransformationSequence") or ds
    slope = _number(source.get("RescaleSlope"), 1.0)
    intercept = _number(source.get("RescaleIntercept"), 0.0)
    values = arr.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def _number(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        if isinstance(value, (list, tuple)) or (
            hasattr(value, "__iter__") and not isinstance(value, str)
        ):
            value = next(iter(value))
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return default
    return number if math.isfinite(number) else default


def stored_window(ds: Dataset, index: int = 0) -> tuple[float, float] | None:
    """The first window (center, width) stored for the frame, if any usable one."""
    source = _frame_item(ds, index, "FrameVOILUTSequence") or ds
    center, width = source.get("WindowCenter"), source.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    c, w = _number(center, math.nan), _number(width, math.nan)
    if math.isnan(c) or math.isnan(w) or w <= 0:
        return None
    return c, w


def voi_function(ds: Dataset, index: int = 0) -> str:
    """VOI LUT Function (0028,1056): LINEAR (default), LINEAR_EXACT or SIGMOID."""
    source = _frame_item(ds, index, "FrameVOILUTSequence") or ds
    name = str(source.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    return name if name in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"


def window_8bit(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """The VOI window functions of PS3.3 C.11.2.1.2-3 with output range 0..255."""
    y_max = 255.0
    x = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        out = y_max / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        out = ((x - center) / width + 0.5) * y_max
    elif width <= 1.0:  # LINEAR with w = 1: a step at c - 0.5
        out = np.where(x <= center - 0.5, 0.0, y_max)
    else:
        out = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * y_max
    result: np.ndarray = np.rint(np.clip(out, 0.0, y_max)).astype(np.uint8)
    return result


def voi_8bit(
    ds: Dataset,
    values: np.ndarray,
    index: int,
    window: tuple[float, float] | None,
    function: str | None = None,
) -> np.ndarray:
    """VOI transform to 8 bits: requested window, stored window, VOI LUT, else pixel range;
    ``function`` (LINEAR, LINEAR_EXACT, SIGMOID) overrides the stored VOI LUT Function."""
    function = function or voi_function(ds, index)
    if window is None:
        window = stored_window(ds, index)
        if window is None and "VOILUTSequence" in ds:
            return _voi_lut_8bit(ds, values)
    if window is not None:
        return window_8bit(values, window[0], window[1], function)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float32) - low) * (255.0 / (high - low))
    result: np.ndarray = np.rint(scaled).astype(np.uint8)
    return result


def _voi_lut_8bit(ds: Dataset, values: np.ndarray) -> np.ndarray:
    item = ds.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
    lut_input = np.rint(values).astype(np.int64)
    out = np.asarray(apply_voi(lut_input, ds, index=0)).astype(np.float32)
    top = max(float((1 << bits) - 1), float(out.max()), 1.0)
    result: np.ndarray = np.rint(out * (255.0 / top)).astype(np.uint8)
    return result


def _encode(
    image: np.ndarray, request: RenderParameters, media_type: str, size: tuple[int, int]
) -> bytes:
    """Crop the region (fractions, so a reduced-resolution frame crops the same area), scale
    into ``size`` and encode."""
    picture = Image.fromarray(image)
    if request.region is not None:
        x0, y0, x1, y1 = request.region
        h, w = image.shape[0], image.shape[1]
        box = (
            round(x0 * w),
            round(y0 * h),
            max(round(x1 * w), round(x0 * w) + 1),
            max(round(y1 * h), round(y0 * h) + 1),
        )
        picture = picture.crop(box)
    rows, columns = size
    if picture.size != (columns, rows):
        # Shrinking: first by the whole factor with a box filter (a mipmap level, as a
        # reduced J2K decode gives), then Lanczos for the rest. A 512 -> 256 px thumbnail
        # takes 0.2 ms instead of Lanczos's 2.4 ms over the full image.
        picture = picture.resize((columns, rows), Image.Resampling.LANCZOS, reducing_gap=1.0)
    out = io.BytesIO()
    if media_type == PNG:
        picture.save(out, "PNG", compress_level=3)
    else:
        picture.save(out, "JPEG", quality=request.quality)
    return out.getvalue()
