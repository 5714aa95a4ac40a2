"""WADO-RS and WADO-URI requests: negotiation and parameters (PS3.18 §8.7, §9, §10.4).

Only syntax is checked here; whether the object can be rendered or transcoded is decided by
the retrieve service once it knows the object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.dicom import syntaxes
from shared.dicom.render_params import DEFAULT_QUALITY, JPEG, MAX_SIDE, PNG, RenderParameters
from shared.dicomweb import media_types
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest, NotAcceptable

DICOM = "application/dicom"
ANY = "*/*"
_ORIGINAL = ("*", "original")
_CONTENT_TYPES = {
    DICOM: DICOM,
    "application/*": DICOM,
    JPEG: JPEG,
    "image/*": JPEG,
    PNG: PNG,
}
_RENDERING_PARAMETERS = (
    "rows",
    "columns",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "region",
    "imageQuality",
)
# Recognised but not provided: refused rather than silently ignored.
_UNSUPPORTED_PARAMETERS = ("annotation", "presentationUID", "presentationSeriesUID")


def negotiate_rs(accept: str | None) -> str | None:
    """The transfer syntax a WADO-RS client asks for; None means the stored one.

    Acceptable: absent, ``*/*``, ``multipart/related`` (``multipart/*``) with no type or
    ``type="application/dicom"``, and bare ``application/dicom``. A ``transfer-syntax``
    parameter of ``*`` (or none) asks for the original encoding; a UID asks for that
    encoding. Ranges are taken by quality, and one the transcoder can produce wins over one
    it cannot; an unsupported one is returned only when nothing better was offered (the
    service serves it when every stored instance already has it, else 406).
    """
    ranges = media_types.parse_list(accept)
    if not ranges:
        return None
    fallback: str | None = None
    ordered = sorted(ranges, key=lambda pair: pair[1], reverse=True)
    for media, q in ordered:
        if q <= 0:
            continue
        essence = media.essence
        if essence in {"*/*", "multipart/*"}:
            return None
        dicom = essence == DICOM or (
            essence == "multipart/related" and (media.param("type") or DICOM).lower() == DICOM
        )
        if not dicom:
            continue
        syntax = _transfer_syntax(media.param("transfer-syntax"))
        if syntax is None or syntaxes.can_produce(syntax):
            return syntax
        fallback = fallback or syntax
    if fallback is not None:
        return fallback
    raise NotAcceptable('WADO-RS serves multipart/related; type="application/dicom" only')


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
    """A validated WADO-URI request."""

    study_uid: str
    series_uid: str
    object_uid: str
    # Acceptable answers, best first (DICOM, JPEG, PNG, ANY); empty or ANY: PS3.18's default,
    # decided by the object (image/jpeg for a single-frame image, application/dicom otherwise).
    content_types: tuple[str, ...]
    transfer_syntax: str | None  # None: as stored
    anonymize: bool
    rendering: RenderParameters = field(default_factory=RenderParameters)
    rendering_asked: bool = False  # any rendering parameter given
    syntax_asked: bool = False  # transferSyntax given (even "original"): a Part 10 answer

    def choose(self, *, image: bool, single_frame: bool) -> str:
        """The media type to answer with for an object of this kind (PS3.18 §9.2.2 default)."""
        if self.rendering_asked and not image:
            raise NotAcceptable("the object is not an image: rendering parameters do not apply")
        for media in self.content_types:
            if media == ANY:
                break
            if media == DICOM and self.rendering_asked:
                continue
            if media == DICOM or image:
                return media
        else:
            if self.content_types:
                raise NotAcceptable(
                    "the object is not an image: ask for contentType=application/dicom"
                )
        if self.syntax_asked:
            return DICOM
        rendered = self.rendering_asked or (image and single_frame)
        return JPEG if rendered else DICOM


def parse_uri(params: Mapping[str, Sequence[str]] | None) -> UriRequest:
    """Validate WADO-URI parameters (PS3.18 §9.1-9.2 and the seed's list)."""
    params = params or {}
    for name, values in params.items():
        if len(values) > 1:
            raise BadRequest(f"{name} is given more than once")
    single = {name: values[0] for name, values in params.items() if values}
    if single.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    uids = _object_uids(single)
    for name in _UNSUPPORTED_PARAMETERS:
        if name in single:
            raise BadRequest(f"{name} is not supported by this service")
    content_types = _content_types(single.get("contentType"))
    rendering = _rendering(single)
    asked = any(p in single for p in _RENDERING_PARAMETERS)
    ts = single.get("transferSyntax")
    if ts is not None and content_types and content_types[0] != DICOM:
        raise BadRequest("transferSyntax applies to contentType=application/dicom only")
    if asked and ts is not None:
        raise BadRequest("rendering parameters and transferSyntax exclude each other")
    if asked and content_types == (DICOM,):
        present = ", ".join(p for p in _RENDERING_PARAMETERS if p in single)
        raise BadRequest(f"{present} apply to rendered images only, not application/dicom")
    return UriRequest(
        study_uid=uids[0],
        series_uid=uids[1],
        object_uid=uids[2],
        content_types=content_types,
        transfer_syntax=_transfer_syntax(ts) if ts is not None else None,
        anonymize=anonymize_flag(params.get("anonymize"), "yes", "no"),
        rendering=rendering,
        rendering_asked=asked,
        syntax_asked=ts is not None,
    )


def _object_uids(single: Mapping[str, str]) -> list[str]:
    uids = []
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = single.get(name, "").strip()
        if not value:
            raise BadRequest(f"{name} is required")
        if not valid_uid(value):
            raise BadRequest(f"{name} is not a valid UID")
        uids.append(value)
    return uids


def _content_types(value: str | None) -> tuple[str, ...]:
    """Acceptable answers in the client's order of preference; () for absent or ``*/*``."""
    ranges = media_types.parse_list(value)
    if not ranges:
        return ()
    chosen: list[str] = []
    ordered = sorted(
        ((media, q) for media, q in ranges if q > 0), key=lambda pair: pair[1], reverse=True
    )
    for media, _q in ordered:
        if media.params.get("transfer-syntax") or media.params.get("charset"):
            raise BadRequest("contentType must not carry transfer-syntax or charset parameters")
        essence = media.essence
        if essence == "*/*":  # anything else: the default for the object decides the rest
            return (*chosen, ANY) if chosen else ()
        answer = _CONTENT_TYPES.get(essence)
        if answer is not None and answer not in chosen:
            chosen.append(answer)
    if not chosen:
        raise NotAcceptable("contentType must be application/dicom, image/jpeg or image/png")
    return tuple(chosen)


def _rendering(single: Mapping[str, str]) -> RenderParameters:
    rows = _positive(single, "rows", MAX_SIDE)
    columns = _positive(single, "columns", MAX_SIDE)
    frame = _positive(single, "frameNumber", None)
    center, width = single.get("windowCenter"), single.get("windowWidth")
    window = None
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth must be given together")
    if center is not None and width is not None:
        c, w = _decimal(center, "windowCenter"), _decimal(width, "windowWidth")
        if w < 1:
            raise BadRequest("windowWidth must be at least 1")
        window = (c, w)
    quality = _positive(single, "imageQuality", 100)
    return RenderParameters(
        frame=frame or 1,
        rows=rows,
        columns=columns,
        window=window,
        region=_region(single.get("region")),
        quality=quality or DEFAULT_QUALITY,
    )


def _positive(single: Mapping[str, str], name: str, maximum: int | None) -> int | None:
    value = single.get(name)
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or int(text) < 1 or (maximum is not None and int(text) > maximum):
        limit = f" up to {maximum}" if maximum is not None else ""
        raise BadRequest(f"{name} must be a positive integer{limit}")
    return int(text)


def _decimal(value: str, name: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a decimal number") from None
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a decimal number")
    return number


def _region(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    parts = value.split(",")
    message = "region must be xmin,ymin,xmax,ymax with 0 <= min < max <= 1"
    if len(parts) != 4:
        raise BadRequest(message)
    try:
        x0, y0, x1, y1 = (float(p.strip()) for p in parts)
    except ValueError:
        raise BadRequest(message) from None
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise BadRequest(message)
    return x0, y0, x1, y1
