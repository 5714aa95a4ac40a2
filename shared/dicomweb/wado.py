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


# ------------------------------------------------------------------ viewer resources

DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MAX_FRAMES_LISTED = 10_000
#: Media type of a frame in each compressed transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}
_WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def negotiate_metadata(accept: str | None) -> None:
    """406 unless the client accepts DICOM JSON (PS3.18 §8.7.3.4: application/dicom+json;
    application/json and wildcards are taken as asking for it)."""
    ranges = media_types.parse_list(accept)
    wanted = {DICOM_JSON, "application/json", "application/*", ANY}
    if ranges and not any(q > 0 and m.essence in wanted for m, q in ranges):
        raise NotAcceptable("metadata is available as application/dicom+json only")


@dataclass(frozen=True)
class FrameAccept:
    """How frames may leave: as stored (``original``), uncompressed, or in one of
    ``media`` (the stored syntax's own media type must be among them)."""

    original: bool = False
    uncompressed: bool = False
    media: frozenset[str] = frozenset()
    gzip: bool = False  # Accept-Encoding allows gzip


def negotiate_frames(accept: str | None) -> FrameAccept:
    """What a frames or bulk data request accepts (PS3.18 §8.7.3.5).

    ``multipart/related; type="application/octet-stream"`` (the quotes are optional, as
    OHIF omits them) with ``transfer-syntax=*`` takes frames as stored; without it, or with
    Explicit VR Little Endian, uncompressed. ``type="image/jpeg"`` (``image/jls``,
    ``image/jp2``, ``image/jphc``...) takes compressed frames of that kind. No Accept,
    ``*/*`` or ``multipart/related`` alone: as stored.
    """
    ranges = [(m, q) for m, q in media_types.parse_list(accept) if q > 0]
    if not ranges:
        return FrameAccept(original=True)
    original = uncompressed = False
    media: set[str] = set()
    for item, _ in ranges:
        kind, syntax = _part_kind(item)
        if kind == ANY:
            original = True
        elif kind == OCTET_STREAM:
            if syntax == "*":
                original = True
            elif syntax in ("", syntaxes.EXPLICIT_VR_LITTLE_ENDIAN):
                uncompressed = True
        elif kind in set(FRAME_MEDIA.values()) or kind == "image/*":
            media.add(kind)
    if not (original or uncompressed or media):
        raise NotAcceptable(
            "frames are available as multipart/related with type application/octet-stream"
            " or the stored compressed media type (image/jpeg, image/jls, image/jp2, ...)"
        )
    return FrameAccept(original, uncompressed, frozenset(media))


def _part_kind(item: media_types.MediaType) -> tuple[str, str]:
    """The media type of each part an Accept range asks for, and its transfer-syntax."""
    essence = item.essence
    if essence == "multipart/related":
        kind = (item.param("type") or OCTET_STREAM).lower()
    elif essence in (ANY, "multipart/*"):
        kind = ANY
    else:
        kind = essence  # a single part asked for directly
    return kind, (item.param("transfer-syntax") or "").strip()


def frame_numbers(text: str) -> tuple[int, ...]:
    """A frame list of the URL (``1``, ``1,3,5``); 400 when it is not one."""
    parts = text.split(",")
    if not text or len(parts) > MAX_FRAMES_LISTED:
        raise BadRequest(f"a frame list is 1 to {MAX_FRAMES_LISTED} numbers separated by commas")
    numbers = []
    for part in parts:
        value = part.strip()
        if not value.isascii() or not value.isdigit() or int(value) < 1 or len(value) > 9:
            raise BadRequest("frame numbers are positive integers separated by commas")
        numbers.append(int(value))
    return tuple(numbers)


@dataclass(frozen=True)
class RenderedRequest:
    """A WADO-RS rendered or thumbnail request (PS3.18 §8.3.5)."""

    media: str
    rendering: RenderParameters
    anonymize: bool


def parse_rendered(
    params: Mapping[str, Sequence[str]] | None,
    accept: str | None,
    *,
    frame: int = 1,
    thumbnail: bool = False,
) -> RenderedRequest:
    """Accept (image/jpeg default, image/png) and the query: ``window=center,width[,function]``,
    ``viewport=vw,vh[,sx,sy,sw,sh]`` (source region in pixels is not supported: 400),
    ``quality``; a thumbnail takes ``viewport`` only and defaults to 128 px."""
    single = {k: (v[0] if v else "") for k, v in (params or {}).items()}
    media = _rendered_media(accept)
    known = {"viewport", "anonymize"} | (set() if thumbnail else {"window", "quality"})
    unknown = sorted(set(single) - known)
    if unknown:
        raise BadRequest(f"unsupported query parameter: {unknown[0]}")
    rows = columns = None
    if "viewport" in single:
        parts = [p.strip() for p in single["viewport"].split(",")]
        if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= MAX_SIDE for p in parts):
            raise BadRequest(
                f"viewport must be width,height in pixels (1 to {MAX_SIDE}); a source"
                " region is not supported"
            )
        columns, rows = int(parts[0]), int(parts[1])
    elif thumbnail:
        rows = columns = 128
    window, function = None, None
    if "window" in single:
        parts = [p.strip() for p in single["window"].split(",")]
        if len(parts) not in (2, 3):
            raise BadRequest("window must be center,width[,function]")
        center, width = _decimal(parts[0], "window center"), _decimal(parts[1], "window width")
        if width < 1:
            raise BadRequest("the window width must be at least 1")
        window = (center, width)
        if len(parts) == 3:
            function = _WINDOW_FUNCTIONS.get(parts[2].lower())
            if function is None:
                raise BadRequest("the window function is linear, linear-exact or sigmoid")
    quality = _positive(single, "quality", 100) if "quality" in single else None
    rendering = RenderParameters(
        frame=frame,
        rows=rows,
        columns=columns,
        window=window,
        quality=quality or DEFAULT_QUALITY,
        window_function=function,
    )
    anonymize = anonymize_flag(params.get("anonymize") if params else None, "true", "false")
    return RenderedRequest(media, rendering, anonymize)


def _rendered_media(accept: str | None) -> str:
    ranges = [(m, q) for m, q in media_types.parse_list(accept) if q > 0]
    if not ranges:
        return JPEG
    for media, _ in ranges:
        if media.essence in (JPEG, "image/*", ANY):
            return JPEG
        if media.essence == PNG:
            return PNG
    raise NotAcceptable("rendered images are available as image/jpeg or image/png")
