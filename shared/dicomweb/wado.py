"""WADO-RS and WADO-URI requests: negotiation and parameters (PS3.18 §8.7, §9, §10.4).

Rendering (``image/jpeg``) and transcoding are not available in this version: requests
that need them get 406 with a message saying so, never a substitute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.dicomweb import media_types
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, NotAcceptable

DICOM = "application/dicom"
_ORIGINAL = ("*", "original")
_RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif", "image/jp2", "image/*")
_RENDERING_PARAMETERS = (
    "rows",
    "columns",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "region",
    "imageQuality",
    "annotation",
    "presentationUID",
    "presentationSeriesUID",
)


def negotiate_rs(accept: str | None) -> str | None:
    """The transfer syntax a WADO-RS client asks for; None means the stored one.

    Acceptable: absent, ``*/*``, ``multipart/related`` (``multipart/*``) with no type or
    ``type="application/dicom"``, and bare ``application/dicom``; a ``transfer-syntax``
    parameter of ``*`` (or none) asks for the original encoding. Anything else -> 406.
    """
    ranges = media_types.parse_list(accept)
    if not ranges:
        return None
    for media, q in ranges:
        if q <= 0:
            continue
        essence = media.essence
        if essence in {"*/*", "multipart/*"}:
            return None
        if essence == "multipart/related" and (media.param("type") or DICOM).lower() == DICOM:
            return _transfer_syntax(media.param("transfer-syntax"))
        if essence == DICOM:
            return _transfer_syntax(media.param("transfer-syntax"))
    raise NotAcceptable(
        'WADO-RS serves multipart/related; type="application/dicom" (original encoding) only'
    )


def _transfer_syntax(value: str | None) -> str | None:
    if value is None or value.strip() in _ORIGINAL:
        return None
    uid = value.strip()
    if not valid_uid(uid):
        raise BadRequest("the transfer-syntax parameter is not a valid UID")
    return uid


def anonymize_flag(values: Sequence[str] | None, yes: str, no: str) -> bool:
    """``anonymize`` as the transaction spells it (WADO-RS true/false, WADO-URI yes/no)."""
    if not values:
        return False
    if len(values) > 1:
        raise BadRequest("anonymize is given more than once")
    value = values[0].strip().lower()
    if value not in (yes, no):
        raise BadRequest(f"anonymize must be {yes} or {no}")
    return value == yes


@dataclass(frozen=True)
class UriRequest:
    """A validated WADO-URI request for a Part 10 object."""

    study_uid: str
    series_uid: str
    object_uid: str
    transfer_syntax: str | None  # None: as stored
    anonymize: bool


def parse_uri(params: Mapping[str, Sequence[str]] | None) -> UriRequest:
    """Validate WADO-URI parameters (PS3.18 §9.1-9.2 and the seed's list)."""
    params = params or {}
    for name, values in params.items():
        if len(values) > 1:
            raise BadRequest(f"{name} is given more than once")
    single = {name: values[0] for name, values in params.items() if values}
    if single.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    uids = []
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = single.get(name, "").strip()
        if not value:
            raise BadRequest(f"{name} is required")
        if not valid_uid(value):
            raise BadRequest(f"{name} is not a valid UID")
        uids.append(value)
    _content_type(single.get("contentType"))
    present = [p for p in _RENDERING_PARAMETERS if p in single]
    if present:
        raise BadRequest(
            f"{', '.join(present)} apply to rendered images only, not application/dicom"
        )
    ts = single.get("transferSyntax")
    return UriRequest(
        study_uid=uids[0],
        series_uid=uids[1],
        object_uid=uids[2],
        transfer_syntax=_transfer_syntax(ts) if ts is not None else None,
        anonymize=anonymize_flag(params.get("anonymize"), "yes", "no"),
    )


def _content_type(value: str | None) -> None:
    """Accept application/dicom (the default here); refuse rendering for now."""
    ranges = media_types.parse_list(value)
    if not ranges:
        return
    rendering = False
    for media, q in ranges:
        if q <= 0:
            continue
        if media.params.get("transfer-syntax") or media.params.get("charset"):
            raise BadRequest("contentType must not carry transfer-syntax or charset parameters")
        if media.essence in (DICOM, "application/*", "*/*"):
            return
        rendering = rendering or media.essence in _RENDERED_TYPES
    if rendering:
        raise NotAcceptable(
            "rendered images (image/jpeg) are not available yet; ask for application/dicom"
        )
    raise NotAcceptable("contentType must be application/dicom")
