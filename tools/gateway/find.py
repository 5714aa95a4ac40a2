"""C-FIND SCP (PS3.4 Annex C): Patient Root and Study Root, answered by QIDO-RS on the
archive (:mod:`tools.gateway.query` translates, :mod:`tools.gateway.archive` asks).

Each match is sent as a pending response as soon as its QIDO page is in (pages of
:data:`tools.gateway.archive.PAGE`), and a C-CANCEL ends the search at the next match
(0xFE00)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydicom import Dataset

from tools.gateway import aetitle, query
from tools.gateway.access import Access
from tools.gateway.archive import Archive, ArchiveError
from tools.gateway.audit import Request, Trail

log = logging.getLogger("dicomweb-gateway")

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MODELS: dict[str, query.Model] = {PATIENT_ROOT_FIND: "PATIENT", STUDY_ROOT_FIND: "STUDY"}

PENDING, CANCELLED, SUCCESS = 0xFF00, 0xFE00, 0x0000
NOT_AUTHORISED = 0x0124
OUT_OF_RESOURCES = 0xA700
Response = tuple[int | Dataset, Dataset | None]


def calling_of(event: Any) -> str:
    """The calling AE title of the event's association."""
    return str(event.assoc.requestor.ae_title).strip()


def request_of(event: Any, service: str) -> Request:
    """An audit record in the making for the event's request."""
    address = event.assoc.requestor.address or ""
    return Request(service, calling_of(event), str(address), str(event.request.AffectedSOPClassUID))


def path_aet(calling: str, own: str) -> str:
    """The ``{AET}`` of the archive's QIDO path: the caller's, when a URL can carry it."""
    return own if aetitle.path_problem(calling) else calling


def find_handler(
    archive: Archive,
    ae_title: str,
    access: Access,
    trail: Trail,
    *,
    combined_datetime: Callable[[Any], bool] = lambda _event: False,
) -> Callable[[Any], Iterator[Response]]:
    """The ``EVT_C_FIND`` handler."""

    def handle(event: Any) -> Iterator[Response]:
        request = request_of(event, "C-FIND")
        try:
            if not access.may(request.calling, "find"):
                request.status = NOT_AUTHORISED
                yield NOT_AUTHORISED, None
                return
            search = _search(event, request, combined_datetime(event))
            if isinstance(search, query.Refusal):
                yield search.dataset(), None
                return
            yield from _matches(event, request, search, archive, ae_title)
        finally:
            trail.write(request)

    return handle


def _search(event: Any, request: Request, combined: bool) -> query.Search | query.Refusal:
    """The request's identifier translated, or refused (the status noted for the trail)."""
    model = MODELS.get(request.sop_class, "STUDY")
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - a peer's data set pynetdicom cannot decode
        identifier = None
    search = (
        query.translate(identifier, model, combined_datetime=combined)
        if identifier is not None
        else query.Refusal(query.UNABLE_TO_PROCESS, "the identifier cannot be decoded")
    )
    if isinstance(search, query.Refusal):
        request.status = search.status
        log.info("C-FIND from %s refused: %s", request.calling, search.comment)
        return search
    request.keys = list(search.keys)
    for name, value in search.params:
        level = {"StudyInstanceUID": "studies", "SeriesInstanceUID": "series"}.get(name)
        if level:
            request.touched.add(level, [value])
    return search


def _matches(
    event: Any, request: Request, search: query.Search, archive: Archive, ae_title: str
) -> Iterator[Response]:
    """One pending response per match, then success; cancel and archive failures end it."""
    matches = archive.search(
        path_aet(request.calling, ae_title), search.resource, search.query_string
    )
    try:
        for result in matches:
            if event.is_cancelled:
                request.status = CANCELLED
                yield CANCELLED, None
                return
            response = query.answer(result, search, ae_title)
            _touch(request, response)
            yield PENDING, response
    except ArchiveError as exc:
        request.status = query.UNABLE_TO_PROCESS if exc.status == 400 else OUT_OF_RESOURCES
        log.warning("C-FIND from %s: %s", request.calling, exc)
        yield query.Refusal(request.status, str(exc)).dataset(), None
        return
    request.status = SUCCESS
    yield SUCCESS, None


def _touch(request: Request, response: Dataset) -> None:
    for keyword, level in (
        ("StudyInstanceUID", "studies"),
        ("SeriesInstanceUID", "series"),
        ("SOPInstanceUID", "instances"),
    ):
        value = response.get(keyword)
        if value:
            request.touched.add(level, [str(value)])
