"""The REST API's Lambda proxy integration (payload format 1.0): the event a function
receives and the answer it gives back, built and read in this one place.

:func:`proxy_event` builds the event API Gateway sends for one request. The emulator builds
every routed request's event with it, and so do the sample events (``tools/make_events.py``),
the handler tests (``tests/support/handlers.py``) and the benchmarks that call handlers
in-process.
:func:`read_response` reads a function's answer as API Gateway does; :func:`is_binary`
decides, from the API's binary media types, whether a body travels base64-encoded.
"""

from __future__ import annotations

import binascii
import fnmatch
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pybase64

from local.api_gateway.responses import GatewayError, HttpResponse
from local.template import ACCOUNT_ID

logger = logging.getLogger(__name__)

#: The id of the local API (what ``requestContext.apiId`` and method ARNs name).
API_ID = "localapi00"


@dataclass(frozen=True)
class Stage:
    """The deployed stage an event comes from: what its ``requestContext`` names."""

    name: str
    api_id: str = API_ID
    account_id: str = ACCOUNT_ID
    domain_name: str = "127.0.0.1"
    domain_prefix: str = "127"
    #: Whether ``requestContext.path`` starts with ``/{stage}``, as in AWS. Local URLs carry
    #: no stage, so the emulator gives the path the client used.
    path_has_stage: bool = False


@dataclass(frozen=True)
class ProxyRequest:
    """One routed request, as its proxy event describes it."""

    method: str
    #: The route's path template (``/studies/{STUDY}``).
    resource: str
    #: The path the client asked for, percent-decoded.
    path: str
    #: Header fields in the order received; a repeated name keeps every value.
    headers: Sequence[tuple[str, str]] = ()
    #: Query parameters, decoded, in the order received.
    query: Sequence[tuple[str, str]] = ()
    #: Decoded path parameters, given as the event carries them (API Gateway: None if none).
    path_parameters: Mapping[str, str] | None = None
    body: bytes | None = None
    #: Whether the body is of one of the API's binary media types (it travels base64).
    binary: bool = True
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    source_ip: str = "127.0.0.1"
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    resource_id: str = ""
    #: ``requestContext.extendedRequestId`` (default: the request id).
    extended_request_id: str | None = None
    #: ``requestContext.authorizer``: ``principalId`` and the authorizer's context.
    authorizer: Mapping[str, Any] | None = None
    #: ``requestContext.identity.apiKey``: the API key a method that requires one was
    #: metered against.
    api_key: str | None = None


def _multi(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in pairs:
        result.setdefault(key, []).append(value)
    return result


def _last(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    """The last value of a field (case-insensitive), or None."""
    found = None
    for key, value in pairs:
        if key.lower() == name.lower():
            found = value
    return found


def _identity(request: ProxyRequest) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "cognitoIdentityPoolId": None,
        "accountId": None,
        "cognitoIdentityId": None,
        "caller": None,
        "sourceIp": request.source_ip,
        "principalOrgId": None,
        "accessKey": None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": None,
        "userAgent": _last(request.headers, "User-Agent"),
        "user": None,
    }
    if request.api_key is not None:
        identity["apiKey"] = request.api_key
    return identity


def proxy_event(request: ProxyRequest, stage: Stage) -> dict[str, Any]:
    """The REST proxy event (format 1.0) of ``request`` on ``stage``.

    ``headers`` and ``queryStringParameters`` keep the last value of a repeated name, their
    ``multiValue`` twins every value; a binary body is base64-encoded with
    ``isBase64Encoded: true``, any other is text; an empty body is ``null``.

    Examples
    --------
    >>> request = ProxyRequest("GET", "/studies/{STUDY}", "/studies/1.2", body=b"")
    >>> event = proxy_event(request, Stage("v1", path_has_stage=True))
    >>> event["requestContext"]["path"], event["isBase64Encoded"]
    ('/v1/studies/1.2', False)
    """
    body: str | None = None
    if request.body:
        body = (
            pybase64.b64encode_as_string(request.body)
            if request.binary
            else request.body.decode("utf-8", errors="replace")
        )
    when = request.time
    context: dict[str, Any] = {
        "resourceId": request.resource_id,
        "resourcePath": request.resource,
        "httpMethod": request.method,
        "extendedRequestId": request.extended_request_id or request.request_id,
        "requestTime": when.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "path": f"/{stage.name}{request.path}" if stage.path_has_stage else request.path,
        "accountId": stage.account_id,
        "protocol": "HTTP/1.1",
        "stage": stage.name,
        "domainPrefix": stage.domain_prefix,
        "requestTimeEpoch": int(when.timestamp() * 1000),
        "requestId": request.request_id,
        "identity": _identity(request),
        "domainName": stage.domain_name,
        "apiId": stage.api_id,
    }
    if request.authorizer is not None:
        context["authorizer"] = dict(request.authorizer)
    headers, query = list(request.headers), list(request.query)
    parameters = request.path_parameters
    return {
        "resource": request.resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": dict(headers) or None,
        "multiValueHeaders": _multi(headers) or None,
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": _multi(query) or None,
        "pathParameters": dict(parameters) if parameters is not None else None,
        "stageVariables": None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": request.binary and body is not None,
    }


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def is_binary(media_type: str | None, binary_media_types: tuple[str, ...]) -> bool:
    """Whether a media type matches one of the API's binary media types (``*`` wildcards)."""
    candidate = _media_type(media_type)
    if not candidate:
        return False
    return any(fnmatch.fnmatchcase(candidate, pattern.lower()) for pattern in binary_media_types)


def read_response(
    output: Any, accept: str | None, binary_media_types: tuple[str, ...], request_id: str
) -> HttpResponse:
    """The HTTP answer to a function's proxy response, as API Gateway gives it.

    ``multiValueHeaders`` win over ``headers`` for a name given in both; ``Content-Type``
    defaults to ``application/json``; a base64 body is decoded when the request's first
    ``Accept`` type or the answer's ``Content-Type`` is a binary media type. A malformed
    answer (not an object, no numeric ``statusCode``, a body that is not base64) is an
    ``INTEGRATION_FAILURE``.
    """
    malformed = GatewayError("INTEGRATION_FAILURE", "Internal server error")
    if not isinstance(output, dict):
        logger.error("Malformed Lambda proxy response: not an object")
        raise malformed
    try:
        status = int(output.get("statusCode", ""))
    except (TypeError, ValueError):
        logger.error("Malformed Lambda proxy response: statusCode missing or not a number")
        raise malformed from None
    headers: list[tuple[str, str]] = []
    for key, values in (output.get("multiValueHeaders") or {}).items():
        headers += [(str(key), str(v)) for v in values]
    seen = {key.lower() for key, _ in headers}
    for key, value in (output.get("headers") or {}).items():
        if key.lower() not in seen:
            headers.append((str(key), str(value)))
    names = {key.lower() for key, _ in headers}
    if "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    raw_body = output.get("body")
    body = b"" if raw_body is None else str(raw_body).encode("utf-8")
    if output.get("isBase64Encoded") and raw_body is not None:
        content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
        first_accept = (accept or "").split(",", 1)[0]
        if is_binary(first_accept, binary_media_types) or is_binary(
            content_type, binary_media_types
        ):
            try:
                body = pybase64.b64decode(str(raw_body), validate=True)
            except (binascii.Error, ValueError):
                logger.error("Malformed Lambda proxy response: body is not base64")
                raise malformed from None
    headers.append(("x-amzn-RequestId", request_id))
    return HttpResponse(status, headers, body)
