"""WADO-URI (PS3.18 §9): the Part 10 file, transcoded or not, or a rendered JPEG/PNG.

GET /o3-dpacs-wado/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=[&contentType=...]
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, http, keys, logs
from shared.dicomweb import wado
from shared.services import retrieve

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="WADO-URI", scope=(keys.READ, keys.READ_DEIDENTIFIED))


@app.get("/o3-dpacs-wado/wado")
def retrieve_object() -> Response[Any]:
    """One instance as a Part 10 file or a rendered image; a read-deidentified key names it
    by its de-identified UIDs and receives what ``anonymize=yes`` gives."""
    params = app.current_event.multi_value_query_string_parameters
    request = wado.parse_uri(params)
    current = archive()
    reader = http.reader(app, current)
    anonymize = reader.anonymize(request.anonymize, params.get("anonymize"), "no")
    request = dataclasses.replace(request, anonymize=anonymize)
    (row,) = reader.locate(request.study_uid, request.series_uid, request.object_uid)
    outcome = retrieve.retrieve_uri(row, request, http.delivery(app, current))
    http.log_fields(
        app,
        bytes=row.size,
        content_type=outcome.media.content_type if isinstance(outcome, retrieve.Inline) else "",
        transfer_syntax=request.transfer_syntax or "",
        anonymize=request.anonymize,
    )
    return http.outcome_response(app, outcome)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
