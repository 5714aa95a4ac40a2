"""Peak memory per decoded byte of rendering, transcoding and reading a deflated file
(tracemalloc, after one warm-up call): the factors ``shared.budget`` multiplies what a file
declares by before it decodes anything (docs/limits.md).
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable
from typing import Any

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless

from shared.dicom import pixels, render, transcode
from shared.dicom.render_params import RenderParameters
from shared.dicom.validate import validate
from tests.support import dicom_files

IMAGES = (
    "CT_small.dcm",
    "693_UNCI.dcm",
    "RG1_UNCI.dcm",
    "RG1_J2KR.dcm",
    "US1_UNCR.dcm",
    "emri_small.dcm",
)


def _peak(call: Callable[[], Any]) -> int:
    call()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _deflated(name: str) -> bytes:
    ds = pydicom.dcmread(dicom_files.path(name))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def run() -> dict[str, Any]:
    """One row per image: frame and decoded sizes, peaks and ratios."""
    rows: dict[str, Any] = {}
    for name in IMAGES:
        data = dicom_files.data(name)
        ds = pydicom.dcmread(io.BytesIO(data))
        frame, frames = pixels.frame_bytes(ds), pixels.frame_count(ds)
        source = str(ds.file_meta.TransferSyntaxUID)
        target = str(
            JPEG2000Lossless if source == ExplicitVRLittleEndian else ExplicitVRLittleEndian
        )
        render_peak = _peak(lambda data=data: render.render_bytes(data, RenderParameters()))
        transcode_peak = _peak(lambda d=data, t=target: transcode.transcode_bytes(d, t))
        deflated = _deflated(name)
        inflate_peak = _peak(lambda d=deflated: validate(d))
        rows[name] = {
            "frame_bytes": frame,
            "frames": frames,
            "render_peak_per_frame_byte": round(render_peak / frame, 1),
            "transcode_peak_per_decoded_byte": round(transcode_peak / (frame * frames), 1),
            "deflated_read_peak_per_inflated_byte": round(inflate_peak / len(ds.PixelData), 1),
        }
        print(f"memory {name:>16}: " + ", ".join(f"{k} {v}" for k, v in rows[name].items()))
    return rows
