"""API Gateway's REST API (v1), emulated: one HTTP request routed, authorized, metered and
handed to its function as a proxy event; the function's answer, or a gateway response.

Per request, in API Gateway's order: the 10 MB payload limit, the route
(:mod:`.router`), the TOKEN authorizer through its cache (:mod:`.authorizer`), the usage
plan of the caller's API key (:mod:`.usage`), the proxy event (:mod:`.proxy`) within
Lambda's 6 MB invoke limit, and the function's answer read back. Whatever API Gateway would
answer itself is a gateway response from the template (:mod:`.responses`).

The functions run elsewhere: the gateway is given ``invoke(function, event)`` (the Lambda
runtime's, :mod:`local.lambda_runtime`), and the HTTP server (:mod:`local.server`) gives it
each :class:`Request`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus

from local.api_gateway import responses, usage
from local.api_gateway.authorizer import Invoke, TokenAuthorizers
from local.api_gateway.proxy import (
    API_ID,
    ProxyRequest,
    Stage,
    is_binary,
    proxy_event,
    read_response,
)
from local.api_gateway.responses import GatewayError, HttpResponse
from local.api_gateway.router import Router
from local.lambda_runtime import (
    LAMBDA_REQUEST_LIMIT,
    LAMBDA_RESPONSE_LIMIT,
    oversize,
    payload_size,
)
from local.template import ACCOUNT_ID, REGION, Api, Route, StackTemplate

logger = logging.getLogger(__name__)

#: API Gateway REST: maximum request payload (hard quota).
API_PAYLOAD_LIMIT = 10 * 1024 * 1024

_USAGE_MESSAGES = {
    usage.THROTTLED: "Too Many Requests",
    usage.QUOTA_EXCEEDED: "Limit Exceeded",
    usage.INVALID_API_KEY: "Forbidden",
}


@dataclass
class Request:
    """An HTTP request as received."""

    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    _last_values: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """Return the last value of a header (case-insensitive), or None."""
        if self._last_values is None:  # the headers are read several times per request
            self._last_values = {key.lower(): value for key, value in self.headers}
        return self._last_values.get(name.lower())


def _with_forwarded(request: Request) -> list[tuple[str, str]]:
    """Add the X-Forwarded-* headers API Gateway adds (plain HTTP locally)."""
    headers = list(request.headers)
    present = {key.lower() for key, _ in headers}
    added = {
        "X-Forwarded-For": request.source_ip,
        "X-Forwarded-Proto": "http",
    }
    headers += [(key, value) for key, value in added.items() if key.lower() not in present]
    return headers


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The parameters of a query string, decoded as API Gateway decodes them for
    ``queryStringParameters``: percent escapes, and ``+`` as a space (what ``requests``
    and HTML forms send for one; a plus sign itself comes as ``%2B``), in order (``?flag``
    gives ``""``)."""
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote_plus(key), unquote_plus(value)))
    return pairs


class Gateway:
    """Answer HTTP requests as the template's ``AWS::Serverless::Api`` would.

    Examples
    --------
    >>> runtime = LambdaRuntime(template.functions, environment)
    >>> gateway = Gateway(template, runtime.invoke)
    >>> gateway.handle(Request("GET", "/o3-dpacs-wado/wado", "", [], b"", "127.0.0.1")).status
    401
    """

    def __init__(  # noqa: PLR0913 - keyword-only hooks and options
        self,
        template: StackTemplate,
        invoke: Invoke,
        *,
        authorizer_ttl: int | None = None,
        usage_plans: usage.UsagePlans | None = None,
        on_request: Callable[[str], None] = lambda function: None,
        on_answered: Callable[[str], None] = lambda function: None,
    ) -> None:
        if template.api is None:
            raise ValueError("the template has no AWS::Serverless::Api to emulate")
        self.api: Api = template.api
        self.stage = Stage(self.api.stage_name)
        self.router = Router(template.routes)
        self._invoke = invoke
        self.authorizers = TokenAuthorizers(self.api.authorizers, invoke, ttl=authorizer_ttl)
        #: Told the function of every request integrated (the local event source wakes up).
        self.on_request = on_request
        #: Told the function once it answered (what it committed is committed: the local
        #: event source runs the table stream's readers).
        self.on_answered = on_answered
        # Without the stack's key entries: only the template's own API keys are on a plan.
        self.usage_plans = usage_plans or usage.UsagePlans(
            plans=template.usage_plans,
            api_keys=template.api_keys,
            default_plan=template.outputs.get("DefaultUsagePlanId"),
        )

    def gateway_response(self, error: GatewayError, request_id: str) -> HttpResponse:
        """Render a gateway response as configured in the template (or AWS's default)."""
        return responses.render(self.api.gateway_responses, error, request_id)

    def handle(self, request: Request) -> HttpResponse:
        """Answer one request as API Gateway would."""
        request_id = str(uuid.uuid4())
        try:
            return self._handle(request, request_id)
        except GatewayError as error:
            logger.info("%s %s -> %s", request.method, request.raw_path, error.response_type)
            return self.gateway_response(error, request_id)

    def _handle(self, request: Request, request_id: str) -> HttpResponse:
        if len(request.body) > API_PAYLOAD_LIMIT:
            raise GatewayError("REQUEST_TOO_LARGE", "Request Too Long")
        matched = self.router.match(request.method, request.raw_path)
        if matched is None:
            raise GatewayError("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
        route, raw_params = matched
        method_arn = (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{self.stage.name}/"
            f"{request.method}/{request.raw_path.lstrip('/')}"
        )
        authorizer_context, usage_identifier = None, None
        if route.authorizer is not None:
            authorizer_context, usage_identifier = self.authorizers.authorize(
                route.authorizer, request.header, method_arn
            )
        api_key = self._meter(request, usage_identifier) if route.api_key_required else None
        event = self._event(request, route, raw_params, request_id, authorizer_context, api_key)
        return self._integrate(route, event, request)

    def _meter(self, request: Request, from_authorizer: str | None) -> str:
        """Hold the request to its API key's usage plan; return the key (its value)."""
        if self.api.api_key_source == "AUTHORIZER":
            identifier = from_authorizer
        else:
            identifier = request.header("x-api-key")
        verdict = self.usage_plans.admit(identifier)
        if verdict is not None:
            raise GatewayError(verdict, _USAGE_MESSAGES[verdict])
        return str(identifier)

    def _event(  # noqa: PLR0913, PLR0917 - the parts of a proxy event
        self,
        request: Request,
        route: Route,
        raw_params: dict[str, str],
        request_id: str,
        authorizer: dict[str, Any] | None,
        api_key: str | None,
    ) -> dict[str, Any]:
        content_type = request.header("Content-Type") or "application/json"
        return proxy_event(
            ProxyRequest(
                method=request.method,
                resource=route.path,
                path=unquote(request.raw_path) if "%" in request.raw_path else request.raw_path,
                headers=_with_forwarded(request),
                query=query_pairs(request.query),
                path_parameters={k: unquote(v) for k, v in raw_params.items()} or None,
                body=request.body,
                binary=is_binary(content_type, self.api.binary_media_types),
                request_id=request_id,
                source_ip=request.source_ip,
                resource_id=route.event_name,
                authorizer=authorizer,
                api_key=api_key,
            ),
            self.stage,
        )

    def _integrate(self, route: Route, event: dict[str, Any], request: Request) -> HttpResponse:
        self.on_request(route.function)
        size = payload_size(event)
        if size > LAMBDA_REQUEST_LIMIT:
            logger.error(
                "Lambda request payload of %d bytes exceeds %d", size, LAMBDA_REQUEST_LIMIT
            )
            raise GatewayError("LAMBDA_REQUEST_TOO_LARGE", "Request Too Long", status=413)
        try:
            output = self._invoke(route.function, event)
            output_size = oversize(output, LAMBDA_RESPONSE_LIMIT)
        except Exception as exc:
            logger.exception("function %s failed", route.function)
            raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from exc
        finally:
            self.on_answered(route.function)
        if output_size is not None:
            logger.error(
                "Lambda response of %d bytes exceeds %d", output_size, LAMBDA_RESPONSE_LIMIT
            )
            raise GatewayError("INTEGRATION_FAILURE", "Internal server error")
        request_id = str(event["requestContext"]["requestId"])
        return read_response(
            output, request.header("Accept"), self.api.binary_media_types, request_id
        )
