"""WADO-RS: GET /o3-dpacs-wado/rs/studies/{s}[/series/{se}[/instances/{i}]] and the
resources viewers use below them: metadata, frames, bulk data, rendered, thumbnail."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import budget, config, deadline, http, keys, logs, wiring
from shared.dicomweb import paths, uids, wado
from shared.errors import BadRequest
from shared.ports import InstanceRow
from shared.services import deidentified, retrieve, viewer

logger = logs.get_logger()
app = http.make_resolver(scope=(keys.READ, keys.READ_DEIDENTIFIED), transaction="WADO-RS")
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
    started = time.perf_counter()
    event = app.current_event.raw_event
    transfer_syntax = wado.negotiate_rs(http.header(event, "accept"))
    anonymize = _anonymize(event)
    rows = _locate(study, series, instance)
    outcome = retrieve.retrieve_rs(
        rows,
        transfer_syntax=transfer_syntax,
        anonymize=anonymize,
        delivery=_delivery(),
    )
    logger.info(
        "wado-rs",
        extra={
            "transaction": "WADO-RS",
            "instances": len(rows),
            "bytes": sum(r.size for r in rows),
            "transfer_syntax": transfer_syntax or "",
            "anonymize": anonymize,
            "redirect": isinstance(outcome, retrieve.Redirect),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return http.outcome_response(outcome)


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
    started = time.perf_counter()
    event = app.current_event.raw_event
    wado.negotiate_metadata(http.header(event, "accept"))
    rows = _locate(study, series, instance)
    request = viewer.MetadataRequest(
        base_url=paths.base_url(event, config.settings().base_path),
        anonymize=_anonymize(event),
        accepts_gzip=_accepts_gzip(event),
        if_none_match=http.header(event, "if-none-match"),
    )
    outcome = viewer.metadata(rows, request, _delivery())
    _log("metadata", rows, started, outcome)
    return http.outcome_response(outcome)


# ------------------------------------------------------------------ frames and bulk data


@app.get(f"{_INSTANCE}/frames/<frames>")
def instance_frames(study: str, series: str, instance: str, frames: str) -> Response[Any]:
    """Pixel data of the listed frames, one part per frame."""
    started = time.perf_counter()
    event = app.current_event.raw_event
    numbers = wado.frame_numbers(frames)
    accept = wado.negotiate_frames(http.header(event, "accept"))
    accept = dataclasses.replace(accept, gzip=_accepts_gzip(event))
    (row,) = _locate(study, series, instance)
    outcome = viewer.frames(row, numbers, accept, anonymize=_anonymize(event), delivery=_delivery())
    _log("frames", [row], started, outcome)
    return http.outcome_response(outcome)


@app.get(f"{_INSTANCE}/bulk/<path>")
def instance_bulk(study: str, series: str, instance: str, path: str) -> Response[Any]:
    """The value behind a BulkDataURI of the metadata."""
    started = time.perf_counter()
    event = app.current_event.raw_event
    wado.negotiate_frames(http.header(event, "accept"))
    (row,) = _locate(study, series, instance)
    outcome = viewer.bulk(row, path, anonymize=_anonymize(event), delivery=_delivery())
    _log("bulk", [row], started, outcome)
    return http.outcome_response(outcome)


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
    started = time.perf_counter()
    event = app.current_event.raw_event
    request = wado.parse_rendered(
        event.get("multiValueQueryStringParameters"),
        http.header(event, "accept"),
        thumbnail=thumbnail,
    )
    request = dataclasses.replace(request, anonymize=_anonymize(event))
    row = rows[0] if len(rows) == 1 else viewer.representative(rows)
    outcome = viewer.rendered(row, request, frames, _delivery())
    _log("thumbnail" if thumbnail else "rendered", [row], started, outcome)
    return http.outcome_response(outcome)


# ------------------------------------------------------------------ shared


def _locate(
    study: str, series: str | None = None, instance: str | None = None
) -> list[InstanceRow]:
    """The instances the path names; a read-deidentified key names them by their
    de-identified UIDs (an original UID finds nothing: 404)."""
    path = (uids.path_uid(study), uids.path_uid(series), uids.path_uid(instance))
    if http.deidentified(app.current_event.raw_event):
        rows = wiring.deidentified_view().locate(*path)
        _audit_originals(rows)
        return rows
    return retrieve.locate(wiring.catalog(), path[0] or "", path[1], path[2])


def _audit_originals(rows: list[InstanceRow]) -> None:
    """The audit record of a de-identified request names the stored UIDs it read too."""
    touched = http.touched(app)
    touched.add("studies", [r.study_uid for r in rows])
    touched.add("series", [r.series_uid for r in rows])
    touched.add("instances", [r.sop_instance_uid for r in rows])


def _accepts_gzip(event: dict[str, Any]) -> bool:
    return "gzip" in (http.header(event, "accept-encoding") or "").lower()


def _anonymize(event: dict[str, Any]) -> bool:
    """``anonymize``; always on for a read-deidentified key (403 if it asks for it off)."""
    params = event.get("multiValueQueryStringParameters") or {}
    asked = wado.anonymize_flag(params.get("anonymize"), "true", "false")
    if http.deidentified(event):
        deidentified.forced_anonymize(params.get("anonymize"), "false")
        return True
    return asked


def _delivery() -> retrieve.Delivery:
    context = app.lambda_context
    return wiring.delivery(budget.from_context(context), deadline.from_context(context))


def _log(resource: str, rows: list[InstanceRow], started: float, outcome: retrieve.Outcome) -> None:
    logger.info(
        "wado-rs",
        extra={
            "transaction": "WADO-RS",
            "resource": resource,
            "instances": len(rows),
            "redirect": isinstance(outcome, retrieve.Redirect),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
