"""WADO-URI (PS3.18 §9): the Part 10 file, transcoded or not, or a rendered JPEG/PNG.

GET /o3-dpacs-wado/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=[&contentType=...]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import budget, deadline, http, keys, logs, wiring
from shared.dicomweb import wado
from shared.services import deidentified, retrieve

logger = logs.get_logger()
app = http.make_resolver(scope=(keys.READ, keys.READ_DEIDENTIFIED), transaction="WADO-URI")


@app.get("/o3-dpacs-wado/wado")
def retrieve_object() -> Response[Any]:
    """One instance as a Part 10 file or a rendered image."""
    started = time.perf_counter()
    event = app.current_event.raw_event
    params = event.get("multiValueQueryStringParameters")
    request = wado.parse_uri(params)
    if http.deidentified(event):  # de-identified UIDs; the answer as anonymize=yes gives it
        deidentified.forced_anonymize((params or {}).get("anonymize"), "no")
        request = dataclasses.replace(request, anonymize=True)
        view = wiring.deidentified_view()
        (row,) = view.locate(request.study_uid, request.series_uid, request.object_uid)
        touched = http.touched(app)  # the audit names the stored UIDs read, too
        touched.add("studies", [row.study_uid])
        touched.add("series", [row.series_uid])
        touched.add("instances", [row.sop_instance_uid])
    else:
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
