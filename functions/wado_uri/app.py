"""WADO-URI (PS3.18 §9): the Part 10 file, transcoded or not, or a rendered JPEG/PNG.

GET /o3-dpacs-wado/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=[&contentType=...]
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import budget, deadline, http, keys, logs, wiring
from shared.dicomweb import wado
from shared.services import retrieve

logger = logs.get_logger()
app = http.make_resolver(scope=keys.READ, transaction="WADO-URI")


@app.get("/o3-dpacs-wado/wado")
def retrieve_object() -> Response[Any]:
    """One instance as a Part 10 file or a rendered image."""
    started = time.perf_counter()
    event = app.current_event.raw_event
    request = wado.parse_uri(event.get("multiValueQueryStringParameters"))
    (row,) = retrieve.locate(
        wiring.catalog(), request.study_uid, request.series_uid, request.object_uid
    )
    context = app.lambda_context
    delivery = wiring.delivery(budget.from_context(context), deadline.from_context(context))
    outcome = retrieve.retrieve_uri(row, request, delivery)
    logger.info(
        "wado-uri",
        extra={
            "transaction": "WADO-URI",
            "bytes": row.size,
            "content_type": outcome.content_type if isinstance(outcome, retrieve.Inline) else "",
            "transfer_syntax": request.transfer_syntax or "",
            "anonymize": request.anonymize,
            "redirect": isinstance(outcome, retrieve.Redirect),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return http.outcome_response(outcome)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
