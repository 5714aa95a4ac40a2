"""What a client may ask of a rendered image; no pixel libraries, so parsers can import it."""

from __future__ import annotations

from dataclasses import dataclass

JPEG = "image/jpeg"
PNG = "image/png"
DEFAULT_QUALITY = 90
MAX_SIDE = 8192  # largest rows/columns of a rendered image (memory of an upscaled frame)


@dataclass(frozen=True)
class RenderParameters:
    """Rendering parameters, checked for syntax (PS3.18 §9.2, §8.3.5)."""

    frame: int = 1  # 1-based
    rows: int | None = None
    columns: int | None = None
    window: tuple[float, float] | None = None  # (center, width)
    region: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax in 0..1
    quality: int = DEFAULT_QUALITY
    window_function: str | None = None  # LINEAR, LINEAR_EXACT, SIGMOID; None: the stored one
