"""How much memory one request may use, derived from the function's memory size.

Every decode, inflate or transcode first compares what the input *declares* (rows x columns
x samples x bytes x frames, a codestream's own header, an inflated length) times the
measured peak of the operation with this budget, and refuses with 413 and the numbers
instead of being killed for running out of memory (the factors are in docs/limits.md).
"""

from __future__ import annotations

#: Share of the function's memory one request may fill; the rest is the runtime, the loaded
#: libraries (pydicom, numpy, codecs: about 150 MB) and the request and response bodies.
MEMORY_SHARE = 0.6
DEFAULT_MEMORY_MB = 1024
_MIB = 1 << 20


def request_budget(memory_mb: int | None = None) -> int:
    """Bytes one request may allocate for decoded data, for a function of ``memory_mb``."""
    size = memory_mb if memory_mb and memory_mb > 0 else DEFAULT_MEMORY_MB
    return int(size * _MIB * MEMORY_SHARE)


def from_context(context: object) -> int:
    """The budget for the Lambda context's memory size (``memory_limit_in_mb``)."""
    try:
        memory = int(getattr(context, "memory_limit_in_mb", DEFAULT_MEMORY_MB))
    except (TypeError, ValueError):
        memory = DEFAULT_MEMORY_MB
    return request_budget(memory)


def too_large(what: str, declared: int, budget: int) -> str:
    """A client-safe message with the numbers."""
    return (
        f"{what} needs about {declared:,} bytes of memory; this service uses at most"
        f" {budget:,} bytes per request"
    )
