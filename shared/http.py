"""The edge: what every API function does with a request besides calling its service.

* :func:`make_resolver`: Powertools' REST resolver (:class:`Resolver`: its request per
  thread) with CORS, our error mapping, the key's
  scope check, and one middleware that, per request, writes the audit record
  (``shared.audit``), the metrics (``shared.metrics``) and the one log line (duration,
  outcome, and the fields the route added with :func:`log_fields`).
* The request, read through ``app.current_event``: headers, body, the key's scopes, the base
  URL; :func:`reader` and :func:`delivery` hand the services what the key may read and how
  bodies leave the function.
* Answers: JSON, a search page (its ``Warning``), and retrieval outcomes, whose headers
  (Content-Type with its multipart parameters, Content-Disposition, ETag, Vary,
  Content-Encoding) are written here from the values the services return.
"""

from __future__ import annotations

import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pybase64
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from shared import audit, budget, config, deadline, keys, logs, metrics
from shared.dicomweb import paths, qido_response
from shared.errors import BadRequest, DicomWebError, Forbidden
from shared.services.retrieve import Delivery, Media, NotModified, Outcome, Redirect

if TYPE_CHECKING:
    from shared.bootstrap import Archive
    from shared.services.reader import Reader
    from shared.services.search import SearchResult

logger = logging.getLogger(__name__)
request_logger = logs.get_logger()

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
#: The message of each transaction's request line (others: the transaction in lower case).
_LINE_MESSAGES = {"QIDO-RS": "qido", "STOW-RS": "stow"}
#: What ``json.dumps(document, ensure_ascii=False, separators=(",", ":"))`` makes, without
#: building an encoder per answer, nor tracking the containers it enters: an answer is a
#: tree built for the request (the same values may appear twice, never inside themselves).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


# ------------------------------------------------------------------ the key


def _authorizer(request: APIGatewayProxyEvent) -> Mapping[str, Any]:
    """What the authorizer passed on about the request's key (nothing without a context)."""
    if not request.get("requestContext"):
        return {}
    return request.request_context.authorizer


def granted_scopes(request: APIGatewayProxyEvent) -> tuple[str, ...]:
    """The scopes the authorizer found on the request's key (its context's ``scopes``).

    A context without them comes from a decision cached before scopes existed: such keys
    keep full access, as every key stored before then does.
    """
    text = _authorizer(request).get("scopes")
    if text is None:
        return keys.LEGACY_SCOPES
    return tuple(s for s in str(text).split(",") if s)


def key_id(request: APIGatewayProxyEvent) -> str:
    """The id of the request's key (empty when the authorizer named none)."""
    return str(_authorizer(request).get("keyId") or "")


def key_label(request: APIGatewayProxyEvent) -> str:
    """The label of the request's key (empty when the authorizer named none)."""
    return str(_authorizer(request).get("keyLabel") or "")


def source_ip(request: APIGatewayProxyEvent) -> str:
    """The client's address as API Gateway saw it (empty when unknown)."""
    if not request.get("requestContext"):
        return ""
    return str(request.request_context.identity.source_ip or "")


def require_scope(request: APIGatewayProxyEvent, scope: str | tuple[str, ...]) -> None:
    """403 unless the request's key has ``scope`` (a tuple: any one of them)."""
    wanted = (scope,) if isinstance(scope, str) else scope
    if not set(wanted) & set(granted_scopes(request)):
        raise Forbidden(
            f"this API key does not have the {' or '.join(wanted)} scope this request needs"
        )


def deidentified(request: APIGatewayProxyEvent) -> bool:
    """Whether the request's key sees the de-identified view (``keys.deidentified_view``)."""
    return keys.deidentified_view(granted_scopes(request))


# ------------------------------------------------------------------ what a request leaves


def touched(app: APIGatewayRestResolver) -> audit.Touched:
    """The UIDs this request's audit record will name; readers add what they read."""
    found = app.context.get("audit")
    return found if isinstance(found, audit.Touched) else audit.Touched()


def log_fields(app: APIGatewayRestResolver, **fields: Any) -> None:
    """Add fields to the request's log line: names, numbers and UIDs only (never patient
    names or IDs, nor the values of a query)."""
    found = app.context.get("log")
    if isinstance(found, dict):
        found.update(fields)


def count(app: APIGatewayRestResolver, name: str, value: int) -> None:
    """Add to a per-request count the request's metrics report (``shared.metrics.COUNTS``)."""
    counts = app.context.setdefault("metrics", {})
    counts[name] = counts.get(name, 0) + value


def _body_size(body: object) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    return len(body.encode("utf-8")) if isinstance(body, str) else 0


def _observed(
    transaction: str, archive: Callable[[], Archive], scope: str | tuple[str, ...] | None
) -> Any:
    """Middleware: per request, whatever its outcome, one audit record, one set of metrics
    and one log line; with ``scope``, a 403 first unless the key has it (one frame for both:
    each middleware frame costs the resolver some work on every request)."""
    message = _LINE_MESSAGES.get(transaction, transaction.lower())

    def middleware(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
        if app.current_event.http_method == "OPTIONS":
            preflight: Response[Any] = next_middleware(app)
            return preflight
        with logs.line(request_logger, message, transaction=transaction) as fields:
            started = time.perf_counter()
            found = audit.Touched()
            app.context["audit"], app.context["log"] = found, fields
            status, size = 500, 0
            try:
                if scope is not None:
                    require_scope(app.current_event, scope)
                response: Response[Any] = next_middleware(app)
                status, size = response.status_code, _body_size(response.body)
                return response
            except DicomWebError as error:
                status = error.status
                raise
            finally:
                fields["outcome"] = status
                record = audit.build(
                    app.current_event.raw_event,
                    transaction=transaction,
                    status=status,
                    size=size,
                    started=started,
                    touched=found,
                )
                _account(app, transaction, record, archive)

    return middleware


def _account(
    app: APIGatewayRestResolver,
    transaction: str,
    record: audit.AuditRecord,
    archive: Callable[[], Archive],
) -> None:
    """Write the request's audit record and emit its metrics."""
    settings = config.settings()
    try:
        current = archive()
        settings = current.settings
        current.audit.write(record.as_dict())
    except Exception:
        logger.exception("the audit record could not be written")
    if settings.metrics:  # off in the local stack: its documents are not even built
        metrics.emit(
            metrics.documents(
                transaction,
                status=record.status,
                duration_ms=record.durationMs,
                size=record.bytes,
                counts=app.context.get("metrics"),
            )
        )


class Resolver(APIGatewayRestResolver):
    """Powertools' REST resolver, whose current event and Lambda context belong to the
    thread resolving them.

    Powertools keeps both on a class (``BaseRouter``) that every resolver in the process
    shares. On Lambda a process runs one invocation at a time; the local stack runs
    concurrent invocations in threads of one process (each in a container of its own), and
    a shared event would let one request read another's body: a STOW would store one
    client's instance under another client's reply.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._invocation = threading.local()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEvent:
        event: APIGatewayProxyEvent = self._invocation.event
        return event

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEvent) -> None:
        self._invocation.event = value

    @property
    def lambda_context(self) -> Any:
        return self._invocation.context

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._invocation.context = value

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        raw = dict(event.raw_event if isinstance(event, APIGatewayProxyEvent) else event)
        self.current_event = APIGatewayProxyEvent(raw)
        self.lambda_context = context
        result: dict[str, Any] = super().resolve(event, context)
        return result


def make_resolver(
    archive: Callable[[], Archive],
    *,
    transaction: str,
    scope: str | tuple[str, ...] | None = None,
) -> APIGatewayRestResolver:
    """A REST resolver with CORS on every response and our error mapping; every request
    leaves an audit record (in ``archive()``'s sink), its metrics and its log line; with
    ``scope``, every request but a CORS preflight needs a key that has it, or one of them
    when it is a tuple (403 otherwise)."""
    cors = CORSConfig(
        allow_origin=config.settings().cors_allow_origin,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=600,
    )
    app = Resolver(cors=cors)

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

    app.use(middlewares=[_observed(transaction, archive, scope)])
    return app


# ------------------------------------------------------------------ the request


def header(request: APIGatewayProxyEvent, name: str) -> str | None:
    """A request header, matched case-insensitively; repeated values joined with commas."""
    values = _named(request.get("multiValueHeaders"), name)
    if values:
        return ", ".join(str(v) for v in values)
    value = _named(request.get("headers"), name)
    return None if value is None else str(value)


def _named(fields: Mapping[str, Any] | None, name: str) -> Any:
    """The value of ``name`` in the event's header map, case-insensitively (the last of
    names differing in case only), as Powertools' ``CaseInsensitiveDict`` finds it without
    building one per call."""
    wanted, found = name.lower(), None
    for key, value in (fields or {}).items():
        if key.lower() == wanted:
            found = value
    return found


def body_bytes(request: APIGatewayProxyEvent) -> bytes:
    """The raw request body (API Gateway base64-encodes binary media types; decoded here
    with a SIMD codec: Powertools' ``decoded_body`` is text)."""
    body = request.body
    if body is None:
        return b""
    if request.is_base64_encoded:
        try:
            return pybase64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("request body is not valid base64") from exc
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def base_url(request: APIGatewayProxyEvent, base_path: str) -> str:
    """The API's base URL as the client reached it (``paths.base_url``)."""
    return paths.base_url(request.raw_event, base_path)


def reader(app: APIGatewayRestResolver, archive: Archive) -> Reader:
    """What the request's key reads (the catalog, or its de-identified view), recording
    the UIDs it reads in the request's audit record."""
    from shared.services import reader as readers  # noqa: PLC0415 - STOW never reads

    return readers.reader(
        catalog=archive.catalog,
        lookup=archive.deidentified,
        deidentifier=archive.anonymizer,
        deidentified_view=deidentified(app.current_event),
        touched=touched(app),
    )


def delivery(app: APIGatewayRestResolver, archive: Archive) -> Delivery:
    """How this request's answer leaves: the archive's object store, inline limit,
    presigning and anonymizer, and the memory and time the Lambda context leaves it."""
    context = app.lambda_context
    return Delivery(
        store=archive.objects,
        inline_limit=archive.settings.inline_limit,
        presign_ttl=archive.settings.presign_ttl,
        anonymizer=archive.anonymizer,
        memory_budget=budget.from_context(context),
        deadline=deadline.from_context(context),
    )


# ------------------------------------------------------------------ answers


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
        body=_JSON.encode(document),
    )


def search_response(result: SearchResult, media_type: str) -> Response[str]:
    """A QIDO-RS page; ``Warning: 299`` when more results exist or the search's budget cut
    it (with the offset that continues it)."""
    response = json_response(200, result.datasets, media_type)
    if result.next_offset is not None:
        warning = qido_response.budget_warning(result.examined, result.next_offset)
        response.headers["Warning"] = warning
    elif result.more:
        response.headers["Warning"] = qido_response.MORE_RESULTS_WARNING
    return response


def outcome_response(app: APIGatewayRestResolver, outcome: Outcome) -> Response[Any]:
    """A retrieval's answer: the body inline, 303 See Other to a presigned URL, or 304;
    the log line says whether it redirected."""
    log_fields(app, redirect=isinstance(outcome, Redirect))
    if isinstance(outcome, Redirect):
        return Response(status_code=303, headers={"Location": outcome.url}, body="")
    if isinstance(outcome, NotModified):
        return Response(status_code=304, headers={"ETag": outcome.etag}, body="")
    return binary_response(outcome.body, outcome.media.content_type, media_headers(outcome.media))


def media_headers(media: Media) -> dict[str, str]:
    """The headers that say what a body is, besides its Content-Type."""
    headers: dict[str, str] = {}
    if media.attachment:
        headers["Content-Disposition"] = f'attachment; filename="{media.filename}"'
    if media.etag:
        headers["ETag"] = media.etag
    if media.varies_by_encoding:
        headers["Vary"] = "Accept-Encoding"
    if media.gzipped:
        headers["Content-Encoding"] = "gzip"
    return headers


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
