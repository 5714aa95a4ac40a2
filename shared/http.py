"""HTTP helpers for the handlers: resolver factory, error mapping, bodies, responses."""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import pybase64
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from shared import audit, config, keys, metrics, wiring
from shared.errors import BadRequest, DicomWebError, Forbidden
from shared.services.retrieve import NotModified, Outcome, Redirect

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
EXPOSE_HEADERS = [
    "Content-Type",
    "Content-Length",
    "Content-Location",
    "Warning",
    "ETag",
    "Accept-Ranges",
    "Content-Range",
    "Retry-After",
]
ALLOW_HEADERS = ["Authorization", "Content-Type", "Accept", "Range", "If-None-Match"]


def granted_scopes(event: Mapping[str, Any]) -> tuple[str, ...]:
    """The scopes the authorizer found on the request's key (its context's ``scopes``).

    A context without them comes from a decision cached before scopes existed: such keys
    keep full access, as every key stored before then does.
    """
    context = (event.get("requestContext") or {}).get("authorizer") or {}
    text = context.get("scopes")
    if text is None:
        return keys.LEGACY_SCOPES
    return tuple(s for s in str(text).split(",") if s)


def require_scope(event: Mapping[str, Any], scope: str | tuple[str, ...]) -> None:
    """403 unless the request's key has ``scope`` (a tuple: any one of them)."""
    wanted = (scope,) if isinstance(scope, str) else scope
    if not set(wanted) & set(granted_scopes(event)):
        raise Forbidden(
            f"this API key does not have the {' or '.join(wanted)} scope this request needs"
        )


def deidentified(event: Mapping[str, Any]) -> bool:
    """Whether the request's key sees the de-identified view (``keys.deidentified_view``)."""
    return keys.deidentified_view(granted_scopes(event))


def touched(app: APIGatewayRestResolver) -> audit.Touched:
    """The UIDs this request's audit record will name; handlers add what they answered."""
    found = app.context.get("audit")
    return found if isinstance(found, audit.Touched) else audit.Touched()


def _body_size(body: object) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    return len(body.encode("utf-8")) if isinstance(body, str) else 0


def count(app: APIGatewayRestResolver, name: str, value: int) -> None:
    """Add to a per-request count the request's metrics report (``shared.metrics.COUNTS``)."""
    counts = app.context.setdefault("metrics", {})
    counts[name] = counts.get(name, 0) + value


def _observed(transaction: str) -> Any:
    """Middleware: one audit record (``shared.audit``) and one set of metrics
    (``shared.metrics``) per request, whatever its outcome."""

    def middleware(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
        if app.current_event.http_method == "OPTIONS":
            preflight: Response[Any] = next_middleware(app)
            return preflight
        started = time.perf_counter()
        found = audit.Touched()
        app.context["audit"] = found
        status, size = 500, 0
        try:
            response: Response[Any] = next_middleware(app)
            status, size = response.status_code, _body_size(response.body)
            return response
        except DicomWebError as error:
            status = error.status
            raise
        finally:
            record = audit.build(
                app.current_event.raw_event,
                transaction=transaction,
                status=status,
                size=size,
                started=started,
                touched=found,
            )
            try:
                wiring.audit_sink().write(record.as_dict())
            except Exception:
                logger.exception("the audit record could not be written")
            metrics.emit(
                metrics.documents(
                    transaction,
                    status=status,
                    duration_ms=record.durationMs,
                    size=size,
                    counts=app.context.get("metrics"),
                ),
                enabled=config.settings().metrics,
            )

    return middleware


def make_resolver(
    scope: str | tuple[str, ...] | None = None, transaction: str = ""
) -> APIGatewayRestResolver:
    """A REST resolver with CORS on every response and our error mapping; with ``scope``,
    every request but a CORS preflight needs a key that has it, or one of them when it is
    a tuple (403 otherwise); with ``transaction``, every request leaves an audit record and
    its metrics."""
    cors = CORSConfig(
        allow_origin=config.settings().cors_allow_origin,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=600,
    )
    app = APIGatewayRestResolver(cors=cors)

    @app.exception_handler(DicomWebError)  # type: ignore[untyped-decorator]
    def _dicomweb_error(error: DicomWebError) -> Response[str]:
        response = error_response(error.status, error.message)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.not_found
    def _no_route(_: Exception) -> Response[str]:
        # API Gateway routed the request here, but a path segment holds characters no
        # route of this function accepts (a backtick, an encoded slash, ...).
        return error_response(404, "no resource matches this path")

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("unhandled error", exc_info=error)
        return error_response(500, "internal error")

    middlewares: list[Any] = [_observed(transaction)] if transaction else []
    if scope is not None:

        def _scoped(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
            if app.current_event.http_method != "OPTIONS":
                require_scope(app.current_event.raw_event, scope)
            response: Response[Any] = next_middleware(app)
            return response

        middlewares.append(_scoped)
    if middlewares:
        app.use(middlewares=middlewares)
    return app


def error_response(status: int, message: str) -> Response[str]:
    """A short JSON error body."""
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps({"message": message}),
    )


def json_response(status: int, document: Any, content_type: str = DICOM_JSON) -> Response[str]:
    """A JSON body with the given media type."""
    return Response(
        status_code=status,
        content_type=content_type,
        body=json.dumps(document, ensure_ascii=False, separators=(",", ":")),
    )


def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header, matched case-insensitively; repeated values joined with commas."""
    wanted = name.lower()
    multi = event.get("multiValueHeaders") or {}
    for key, values in multi.items():
        if key.lower() == wanted and values:
            return ", ".join(str(v) for v in values)
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == wanted:
            return None if value is None else str(value)
    return None


def body_bytes(event: Mapping[str, Any]) -> bytes:
    """The raw request body (API Gateway base64-encodes binary media types)."""
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return pybase64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("request body is not valid base64") from exc
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def outcome_response(outcome: Outcome) -> Response[Any]:
    """An inline body, or 303 See Other to a presigned URL (``services.retrieve``)."""
    if isinstance(outcome, Redirect):
        return Response(status_code=303, headers={"Location": outcome.url}, body="")
    if isinstance(outcome, NotModified):
        return Response(status_code=304, headers={"ETag": outcome.etag}, body="")
    return binary_response(outcome.body, outcome.content_type, dict(outcome.headers))


def binary_response(body: bytes, content_type: str, headers: dict[str, str]) -> Response[Any]:
    """A binary 200, base64-encoded here for API Gateway with a SIMD codec (the resolver's
    own ``base64.b64encode`` takes 2 ms per MB; a string body it passes through as is)."""
    response: Response[Any] = Response(
        status_code=200,
        content_type=content_type,
        body=pybase64.b64encode_as_string(body),
        headers=headers,
    )
    response.base64_encoded = True
    return response
