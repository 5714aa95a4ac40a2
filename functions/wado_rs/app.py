"""WADO-RS retrieve: GET /o3-dpacs-wado/rs/studies/{s}[/series/{se}[/instances/{i}]]."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import budget, http, logs, wiring
from shared.dicomweb import uids, wado
from shared.services import retrieve

logger = logs.get_logger()
app = http.make_resolver()
_STUDY = "/o3-dpacs-wado/rs/studies/<study>"


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
    params = event.get("multiValueQueryStringParameters") or {}
    anonymize = wado.anonymize_flag(params.get("anonymize"), "true", "false")
    rows = retrieve.locate(
        wiring.catalog(),
        uids.path_uid(study) or "",
        uids.path_uid(series),
        uids.path_uid(instance),
    )
    outcome = retrieve.retrieve_rs(
        rows,
        transfer_syntax=transfer_syntax,
        anonymize=anonymize,
        delivery=wiring.delivery(budget.from_context(app.lambda_context)),
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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
