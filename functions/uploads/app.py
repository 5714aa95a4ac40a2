"""The upload path: POST/GET /o3-dpacs-wado/stowRsListener/{CALLING_AET}/uploads[/{id}].

Instances too large for STOW-RS's request body go straight to the bucket through presigned
URLs (``shared.services.uploads``); the ingest function stores them with STOW's own code
(``shared.services.ingest``).
Asking for, completing and following an upload needs the ``store`` scope; the listing of
results answers ``store`` keys their own uploads and ``admin`` keys the dropped objects too.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from shared import bootstrap, http, keys, logs
from shared.dicomweb import stow_request
from shared.errors import BadRequest
from shared.services import uploads

logger = logs.get_logger()
archive = bootstrap.Provider()
app = http.make_resolver(archive, transaction="uploads", scope=(keys.STORE, keys.ADMIN))
_ROOT = "/o3-dpacs-wado/stowRsListener/<calling_aet>/uploads"
_JSON = "application/json"


def _base() -> str:
    return http.base_url(app.current_event, archive().settings.base_path)


def _caller(*, storing: bool = True) -> uploads.Caller:
    """The request's key (its id from the authorizer's context) and its admin scope; 403
    without the ``store`` scope when ``storing``."""
    request = app.current_event
    if storing:
        http.require_scope(request, keys.STORE)
    return uploads.Caller(
        key_id=http.key_id(request), admin=keys.ADMIN in http.granted_scopes(request)
    )


@app.post(_ROOT)
def create(calling_aet: str) -> Response[str]:
    """Ask for an upload: where to PUT the object (or its parts)."""
    caller = _caller()
    aet = stow_request.calling_aet(calling_aet)
    request = uploads.UploadRequest.from_json(http.body_bytes(app.current_event), aet)
    answer = uploads.create_upload(
        request,
        caller=caller,
        store=archive().objects,
        upload_root=f"{_base()}/stowRsListener/{calling_aet}/uploads",
    )
    return http.json_response(201, answer, _JSON)


@app.post(f"{_ROOT}/<upload_id>/complete")
def complete(calling_aet: str, upload_id: str) -> Response[str]:
    """Assemble a multipart upload from its parts."""
    answer = uploads.complete_upload(
        upload_id,
        http.body_bytes(app.current_event),
        caller=_caller(),
        store=archive().objects,
    )
    answer["statusUrl"] = f"{_base()}/stowRsListener/{calling_aet}/uploads/{upload_id}"
    return http.json_response(202, answer, _JSON)


@app.get(f"{_ROOT}/<upload_id>")
def status(calling_aet: str, upload_id: str) -> Response[str]:
    """Pending, stored, duplicate or failed, with the STOW failure reason."""
    answer = uploads.status(upload_id, caller=_caller(), store=archive().objects, base_url=_base())
    return http.json_response(200, answer, _JSON)


@app.get(_ROOT)
def listing(calling_aet: str) -> Response[str]:
    """Results the key may see of objects ingested under incoming/{prefix}, a page at a time."""
    query = app.current_event.query_string_parameters or {}
    try:
        limit = int(query.get("limit", "100"))
    except ValueError as exc:
        raise BadRequest("limit must be a whole number") from exc
    answer = uploads.results(
        query.get("prefix", ""),
        caller=_caller(storing=False),
        store=archive().objects,
        base_url=_base(),
        after=query.get("after", ""),
        limit=limit,
    )
    return http.json_response(200, answer, _JSON)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    return app.resolve(event, context)
