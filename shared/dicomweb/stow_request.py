"""Reading a STOW-RS request: negotiation, size limit and body parts (PS3.18 §10.5.1)."""

from __future__ import annotations

from urllib.parse import unquote

from shared.dicomweb import media_types, multipart
from shared.dicomweb.multipart import Part
from shared.dicomweb.uids import path_uid
from shared.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

_RESPONSE_TYPES = ("application/dicom+json", "application/json")
_METADATA_TYPES = ("application/dicom+json", "application/dicom+xml", "application/json")
_AE_TITLE_MAX = 16


def parse(
    *, content_type: str | None, accept: str | None, body: bytes, inline_limit: int
) -> list[Part]:
    """Check the request and return its body parts.

    * ``multipart/related; type="application/dicom"`` (parameters quoted or not, in any
      order; a missing ``type`` is tolerated) -> its parts;
    * a bare ``application/dicom`` body -> one part (a convenience, as Azure offers);
    * the metadata + bulk data form -> 415 (the seed accepts Part 10 files only);
    * anything else -> 415; a body over the inline limit -> 413; an Accept header that
      admits no DICOM JSON -> 406.
    """
    if not media_types.accepts(accept, _RESPONSE_TYPES):
        raise NotAcceptable("the STOW-RS response is available as application/dicom+json only")
    media = media_types.parse(content_type)
    if len(body) > inline_limit:
        raise PayloadTooLarge(
            f"request body is {len(body):,} bytes; at most {inline_limit:,} bytes are accepted "
            "per request. Split the batch; send a larger instance through the upload path: "
            'POST stowRsListener/{CALLING_AET}/uploads with {"size": <bytes>}, then PUT '
            "the file to the URL it returns (docs/large-objects.md)."
        )
    if media.essence == "application/dicom":
        if not body:
            raise BadRequest("request body is empty")
        return [Part(content=body, headers={"content-type": "application/dicom"})]
    if media.essence != "multipart/related":
        raise UnsupportedMediaType(
            'Content-Type must be multipart/related; type="application/dicom"'
        )
    part_type = (media.param("type") or "application/dicom").lower()
    if part_type in _METADATA_TYPES:
        raise UnsupportedMediaType(
            "metadata + bulk data STOW is not supported; send DICOM Part 10 files "
            'as multipart/related; type="application/dicom"'
        )
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            'Content-Type must be multipart/related; type="application/dicom"'
        )
    boundary = media.param("boundary")
    if not boundary:
        raise BadRequest("multipart/related Content-Type has no boundary parameter")
    if not body:
        raise BadRequest("request body is empty")
    return multipart.parse_related(body, boundary)


def study_uid_from_path(value: str) -> str:
    """The study UID from the URL; 400 when it is not a valid UID (PS3.5 §9.1)."""
    return path_uid(value) or ""


def calling_aet(value: str) -> str:
    """The calling AE title from the URL (recorded with each instance; PS3.5 AE VR)."""
    aet = unquote(value).strip()
    if not aet or len(aet) > _AE_TITLE_MAX or "\\" in aet or not aet.isprintable():
        raise BadRequest("CALLING_AET must be 1 to 16 printable characters without backslash")
    return aet
