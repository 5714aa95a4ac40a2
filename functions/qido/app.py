"""QIDO-RS: GET /o3-dpacs-wado/qido/{AET}/{patients,studies,series,instances} and the
study- and series-scoped forms (PS3.18 §10.6); the same searches under the WADO-RS root
``/o3-dpacs-wado/rs`` for clients that take one DICOMweb root (OHIF, dicomweb-client)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, http, keys, logs
from shared.dicom.levels import Level
from shared.dicomweb import qido_response, query, uids
from shared.services import changefeed, search

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="QIDO-RS", scope=(keys.READ, keys.READ_DEIDENTIFIED))
_PREFIX = "/o3-dpacs-wado/qido/<aet>"
_ROOT = "/o3-dpacs-wado/rs"  # one DICOMweb root: QIDO beside WADO-RS (no AE title)


@app.get(f"{_PREFIX}/patients")
def search_patients(aet: str) -> Response[str]:
    """Patient-level search (extension: dcm4chee-style patients resource)."""
    return _search("PATIENT")


@app.get(f"{_PREFIX}/studies")
@app.get(f"{_ROOT}/studies")
def search_studies(aet: str = "") -> Response[str]:
    """Study-level search."""
    return _search("STUDY")


@app.get(f"{_PREFIX}/series")
@app.get(f"{_ROOT}/series")
def search_all_series(aet: str = "") -> Response[str]:
    """Series of any study."""
    return _search("SERIES")


@app.get(f"{_PREFIX}/studies/<study>/series")
@app.get(f"{_ROOT}/studies/<study>/series")
def search_study_series(study: str, aet: str = "") -> Response[str]:
    """Series of one study."""
    return _search("SERIES", study=study)


@app.get(f"{_PREFIX}/instances")
@app.get(f"{_ROOT}/instances")
def search_all_instances(aet: str = "") -> Response[str]:
    """Instances of any study."""
    return _search("INSTANCE")


@app.get(f"{_PREFIX}/studies/<study>/instances")
@app.get(f"{_ROOT}/studies/<study>/instances")
def search_study_instances(study: str, aet: str = "") -> Response[str]:
    """Instances of one study."""
    return _search("INSTANCE", study=study)


@app.get(f"{_PREFIX}/studies/<study>/series/<series>/instances")
@app.get(f"{_ROOT}/studies/<study>/series/<series>/instances")
def search_series_instances(study: str, series: str, aet: str = "") -> Response[str]:
    """Instances of one series."""
    return _search("INSTANCE", study=study, series=series)


def _search(level: Level, *, study: str | None = None, series: str | None = None) -> Response[str]:
    request = app.current_event
    media_type = qido_response.negotiate(http.header(request, "accept"))
    parsed = query.parse(
        request.multi_value_query_string_parameters,
        level,
        study_uid=uids.path_uid(study),
        series_uid=uids.path_uid(series),
    )
    current = archive()
    result = http.reader(app, current).search(
        parsed,
        http.base_url(request, current.settings.base_path),
        search.SearchBudget.from_lambda_context(app.lambda_context),
    )
    http.log_fields(
        app,
        level=level,
        keys=sorted(c.keyword for c in parsed.conditions),  # names only, never values
        results=len(result.datasets),
        more=result.more,
        examined=result.examined,
        budget_exhausted=result.exhausted,
    )
    return http.search_response(result, media_type)


# ------------------------------------------------------------------ change feed
_FEED = "/o3-dpacs-wado/changefeed"


@app.get(_FEED)
def read_change_feed() -> Response[str]:
    """The change feed: entries numbered above ``offset``, in commit order (Azure v1)."""
    request = app.current_event
    asked = changefeed.parse(request.query_string_parameters)
    current = archive()
    feed = changefeed.read(current.index, current.catalog, asked, _uid_view(current))
    _touch(feed)
    http.log_fields(app, resource="changefeed", offset=asked.offset, results=len(feed.entries))
    return http.json_response(200, feed.entries, "application/json")


@app.get(f"{_FEED}/latest")
def read_latest_change() -> Response[str]:
    """The change feed's last entry."""
    asked = changefeed.parse(app.current_event.query_string_parameters)
    current = archive()
    feed = changefeed.latest(
        current.index, current.catalog, asked.include_metadata, _uid_view(current)
    )
    _touch(feed)
    http.log_fields(app, resource="changefeed-latest", results=1)
    return http.json_response(200, feed.entries[0], "application/json")


def _uid_view(current: bootstrap.Archive) -> changefeed.UidView | None:
    """The de-identified UIDs for a read-deidentified key, the stored ones otherwise."""
    return current.anonymizer.uid if http.deidentified(app.current_event) else None


def _touch(feed: changefeed.Feed) -> None:
    touched = http.touched(app)
    for level, values in feed.stored_uids.items():
        touched.add(level, values)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
