"""WADO-RS: GET /o3-dpacs-wado/rs/studies/{s}[/series/{se}[/instances/{i}]] and the
resources viewers use below them: metadata, frames, bulk data, rendered, thumbnail."""

from __future__ import annotations

import dataclasses
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, http, keys, logs
from shared.dicomweb import uids, wado
from shared.errors import BadRequest
from shared.ports import InstanceRow
from shared.services import retrieve, viewer
from shared.services.reader import Reader

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="WADO-RS", scope=(keys.READ, keys.READ_DEIDENTIFIED))
_STUDY = "/o3-dpacs-wado/rs/studies/<study>"
_SERIES = f"{_STUDY}/series/<series>"
_INSTANCE = f"{_SERIES}/instances/<instance>"


@app.get(_STUDY)
def retrieve_study(study: str) -> Response[Any]:
    """Every instance of a study."""
    return _retrieve(study)


@app.get(f"{_STUDY}/series/<series>")
def retrieve_series(study: str, series: str) -> Response[Any]:
    """Every instance of a series."""
    return _retrieve(study, series)


@app.get(f"{_STUDY}/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response[Any]:
    """One instance."""
    return _retrieve(study, series, instance)


def _retrieve(study: str, series: str | None = None, instance: str | None = None) -> Response[Any]:
    transfer_syntax = wado.negotiate_rs(http.header(app.current_event, "accept"))
    anonymize = _anonymize()
    rows = _locate(study, series, instance)
    outcome = retrieve.retrieve_rs(
        rows, transfer_syntax=transfer_syntax, anonymize=anonymize, delivery=_delivery()
    )
    http.log_fields(
        app,
        instances=len(rows),
        bytes=sum(r.size for r in rows),
        transfer_syntax=transfer_syntax or "",
        anonymize=anonymize,
    )
    return http.outcome_response(app, outcome)


# ------------------------------------------------------------------ metadata


@app.get(f"{_STUDY}/metadata")
def study_metadata(study: str) -> Response[Any]:
    """DICOM JSON of every instance of a study."""
    return _metadata(study)


@app.get(f"{_SERIES}/metadata")
def series_metadata(study: str, series: str) -> Response[Any]:
    """DICOM JSON of every instance of a series."""
    return _metadata(study, series)


@app.get(f"{_INSTANCE}/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response[Any]:
    """DICOM JSON of one instance."""
    return _metadata(study, series, instance)


def _metadata(study: str, series: str | None = None, instance: str | None = None) -> Response[Any]:
    request = app.current_event
    wado.negotiate_metadata(http.header(request, "accept"))
    rows = _locate(study, series, instance)
    asked = viewer.MetadataRequest(
        base_url=http.base_url(request, archive().settings.base_path),
        anonymize=_anonymize(),
        accepts_gzip=_accepts_gzip(),
        if_none_match=http.header(request, "if-none-match"),
    )
    outcome = viewer.metadata(rows, asked, _delivery())
    http.log_fields(app, resource="metadata", instances=len(rows))
    return http.outcome_response(app, outcome)


# ------------------------------------------------------------------ frames and bulk data


@app.get(f"{_INSTANCE}/frames/<frames>")
def instance_frames(study: str, series: str, instance: str, frames: str) -> Response[Any]:
    """Pixel data of the listed frames, one part per frame."""
    numbers = wado.frame_numbers(frames)
    accept = wado.negotiate_frames(http.header(app.current_event, "accept"))
    accept = dataclasses.replace(accept, gzip=_accepts_gzip())
    (row,) = _locate(study, series, instance)
    outcome = viewer.frames(row, numbers, accept, anonymize=_anonymize(), delivery=_delivery())
    http.log_fields(app, resource="frames", instances=1)
    return http.outcome_response(app, outcome)


@app.get(f"{_INSTANCE}/bulk/<path>")
def instance_bulk(study: str, series: str, instance: str, path: str) -> Response[Any]:
    """The value behind a BulkDataURI of the metadata."""
    wado.negotiate_frames(http.header(app.current_event, "accept"))
    (row,) = _locate(study, series, instance)
    outcome = viewer.bulk(row, path, anonymize=_anonymize(), delivery=_delivery())
    http.log_fields(app, resource="bulk", instances=1)
    return http.outcome_response(app, outcome)


# ------------------------------------------------------------------ rendered and thumbnails


@app.get(f"{_STUDY}/rendered")
def study_rendered(study: str) -> Response[Any]:
    """The study's representative image."""
    return _rendered(_locate(study), thumbnail=False)


@app.get(f"{_SERIES}/rendered")
def series_rendered(study: str, series: str) -> Response[Any]:
    """The series' representative image."""
    return _rendered(_locate(study, series), thumbnail=False)


@app.get(f"{_INSTANCE}/rendered")
def instance_rendered(study: str, series: str, instance: str) -> Response[Any]:
    """The instance's first frame."""
    return _rendered(_locate(study, series, instance), thumbnail=False)


@app.get(f"{_INSTANCE}/frames/<frames>/rendered")
def frames_rendered(study: str, series: str, instance: str, frames: str) -> Response[Any]:
    """The listed frames (several: a multipart of images)."""
    return _rendered(_locate(study, series, instance), False, wado.frame_numbers(frames))


@app.get(f"{_STUDY}/thumbnail")
def study_thumbnail(study: str) -> Response[Any]:
    """A small image of the study."""
    return _rendered(_locate(study), thumbnail=True)


@app.get(f"{_SERIES}/thumbnail")
def series_thumbnail(study: str, series: str) -> Response[Any]:
    """A small image of the series."""
    return _rendered(_locate(study, series), thumbnail=True)


@app.get(f"{_INSTANCE}/thumbnail")
def instance_thumbnail(study: str, series: str, instance: str) -> Response[Any]:
    """A small image of the instance."""
    return _rendered(_locate(study, series, instance), thumbnail=True)


@app.get(f"{_INSTANCE}/frames/<frames>/thumbnail")
def frames_thumbnail(study: str, series: str, instance: str, frames: str) -> Response[Any]:
    """A small image of a frame."""
    numbers = wado.frame_numbers(frames)
    if len(numbers) != 1:
        raise BadRequest("a thumbnail is of one frame")
    return _rendered(_locate(study, series, instance), True, numbers)


def _rendered(
    rows: list[InstanceRow], thumbnail: bool, frames: tuple[int, ...] = ()
) -> Response[Any]:
    request = app.current_event
    rendering = wado.parse_rendered(
        request.multi_value_query_string_parameters,
        http.header(request, "accept"),
        thumbnail=thumbnail,
    )
    rendering = dataclasses.replace(rendering, anonymize=_anonymize())
    row = rows[0] if len(rows) == 1 else viewer.representative(rows)
    outcome = viewer.rendered(row, rendering, frames, _delivery())
    http.log_fields(app, resource="thumbnail" if thumbnail else "rendered", instances=1)
    return http.outcome_response(app, outcome)


# ------------------------------------------------------------------ shared


def _reader() -> Reader:
    """The catalog as the request's key reads it (``http.reader``)."""
    return http.reader(app, archive())


def _locate(
    study: str, series: str | None = None, instance: str | None = None
) -> list[InstanceRow]:
    """The instances the path names; a read-deidentified key names them by their
    de-identified UIDs (an original UID finds nothing: 404)."""
    return _reader().locate(uids.path_uid(study), uids.path_uid(series), uids.path_uid(instance))


def _accepts_gzip() -> bool:
    return "gzip" in (http.header(app.current_event, "accept-encoding") or "").lower()


def _anonymize() -> bool:
    """``anonymize``; always on for a read-deidentified key (403 if it asks for it off)."""
    values = app.current_event.multi_value_query_string_parameters.get("anonymize")
    return _reader().anonymize(wado.anonymize_flag(values, "true", "false"), values, "false")


def _delivery() -> retrieve.Delivery:
    return http.delivery(app, archive())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
