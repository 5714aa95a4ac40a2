"""QIDO-RS: GET /o3-dpacs-wado/qido/{AET}/{patients,studies,series,instances} and the
study- and series-scoped forms (PS3.18 §10.6); the same searches under the WADO-RS root
``/o3-dpacs-wado/rs`` for clients that take one DICOMweb root (OHIF, dicomweb-client)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import config, http, keys, logs, wiring
from shared.dicom.levels import Level
from shared.dicomweb import paths, qido_response, query, uids
from shared.services import search

logger = logs.get_logger()
app = http.make_resolver(scope=(keys.READ, keys.READ_DEIDENTIFIED), transaction="QIDO-RS")
_PREFIX = "/o3-dpacs-wado/qido/<aet>"
_ROOT = "/o3-dpacs-wado/rs"  # one DICOMweb root: QIDO beside WADO-RS (no AE title)
_AUDITED = (("0020000D", "studies"), ("0020000E", "series"), ("00080018", "instances"))


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
    started = time.perf_counter()
    event = app.current_event.raw_event
    media_type = qido_response.negotiate(http.header(event, "accept"))
    parsed = query.parse(
        event.get("multiValueQueryStringParameters"),
        level,
        study_uid=uids.path_uid(study),
        series_uid=uids.path_uid(series),
    )
    base = paths.base_url(event, config.settings().base_path)
    touched = http.touched(app)
    budget = search.SearchBudget.from_lambda_context(app.lambda_context)
    if http.deidentified(event):  # every result de-identified, UIDs the de-identified ones
        found = wiring.deidentified_view().search(parsed, base, budget)
        result = found.result
        for kind, originals in found.originals.items():
            touched.add(kind, originals)  # the audit names what was read: the stored UIDs
    else:
        result = search.search(parsed, wiring.catalog(), base, budget)
        for tag, kind in _AUDITED:
            touched.add(kind, [v for d in result.datasets for v in d.get(tag, {}).get("Value", [])])
    logger.info(
        "qido",
        extra={
            "transaction": "QIDO-RS",
            "level": level,
            "keys": sorted(c.keyword for c in parsed.conditions),  # names only, never values
            "results": len(result.datasets),
            "more": result.more,
            "examined": result.examined,
            "budget_exhausted": result.exhausted,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "outcome": 200,
        },
    )
    response = http.json_response(200, result.datasets, media_type)
    if result.next_offset is not None:
        response.headers["Warning"] = qido_response.budget_warning(
            result.examined, result.next_offset
        )
    elif result.more:
        response.headers["Warning"] = qido_response.MORE_RESULTS_WARNING
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
