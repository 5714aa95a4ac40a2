"""Transfer syntaxes the transcoder produces (kept free of pixel libraries for negotiation).

The one place that decides whether a transfer syntax can be produced: WADO negotiation, the
retrieve service's up-front checks and the transcoder all ask here.
"""

from __future__ import annotations

from shared.errors import NotAcceptable

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"

TARGETS = {
    EXPLICIT_VR_LITTLE_ENDIAN: "Explicit VR Little Endian",
    IMPLICIT_VR_LITTLE_ENDIAN: "Implicit VR Little Endian",
    JPEG_BASELINE: "JPEG Baseline (Process 1)",
    JPEG_LOSSLESS_SV1: "JPEG Lossless, First-Order Prediction (Process 14 SV1)",
    JPEG_2000_LOSSLESS: "JPEG 2000 Image Compression (Lossless Only)",
}
NATIVE_TARGETS = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})


def can_produce(uid: str | None) -> bool:
    """Whether the transcoder produces ``uid``."""
    return uid in TARGETS


def require_producible(uid: str | None) -> None:
    """406 with the list of what can be produced, unless ``uid`` is one of them."""
    if not can_produce(uid):
        raise NotAcceptable(unsupported_message())


def unsupported_message() -> str:
    """The 406 reason for a transfer syntax the transcoder cannot produce."""
    return (
        "transcoding to that transfer syntax is not supported; supported: "
        + ", ".join(TARGETS)
        + " and the original"
    )
