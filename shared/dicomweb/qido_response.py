"""QIDO-RS response details: media type negotiation and the 299 warning."""

from __future__ import annotations

import functools

from shared.dicomweb import media_types
from shared.errors import NotAcceptable

DICOM_JSON = "application/dicom+json"
MORE_RESULTS_WARNING = (
    '299 o3-dpacs: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


def budget_warning(examined: int, next_offset: int) -> str:
    """The 299 warning of a search that stopped on its budget (results so far returned)."""
    return (
        f'299 o3-dpacs: "The search stopped after examining {examined} candidates (the'
        " per-request budget); the results found so far are returned and more may exist."
        f' Continue with offset={next_offset}, or narrow the search."'
    )


@functools.lru_cache(maxsize=256)  # clients send the same few Accept headers
def negotiate(accept: str | None) -> str:
    """The response media type: DICOM JSON, or plain JSON for clients asking only for it.

    ``multipart/related; type="application/dicom+xml"`` is not offered (406).
    """
    ranges = media_types.parse_list(accept)
    if not ranges:
        return DICOM_JSON
    for media, q in ranges:
        if q <= 0:
            continue
        if media.essence in (DICOM_JSON, "*/*", "application/*"):
            return DICOM_JSON
        if media.essence == "application/json":
            return "application/json"
    raise NotAcceptable("QIDO-RS results are available as application/dicom+json only")
