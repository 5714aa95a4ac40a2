"""API Gateway REST (v1) emulator with Lambda proxy integration, driven by template.yaml.

Reproduces: routing on path templates, the TOKEN authorizer (with its result cache and
policy evaluation; refusals are cached too), usage plans (per-key token bucket and daily
quota, :mod:`local.usage`), gateway responses from the template, binary media types, the
10,240-byte head limit and the 10 MB body limit (:mod:`local.http1`), Lambda's 6 MB invoke
payload limits, and REST proxy events (format 1.0).
Handlers run in-process, each module loaded from ``<CodeUri>/<module>.py``.
See docs/local-stack.md for what is not reproduced.
"""

from __future__ import annotations

import binascii
import contextlib
import fnmatch
import importlib.util
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pybase64

from local import http1, usage
from local.template import (
    ACCOUNT_ID,
    PROJECT_ROOT,
    REGION,
    Api,
    Authorizer,
    Function,
    Route,
    StackTemplate,
)

logger = logging.getLogger("local.emulator")

# API Gateway REST: maximum request payload (hard quota).
API_PAYLOAD_LIMIT = 10 * 1024 * 1024
# Lambda synchronous invoke: request payload (the event JSON) and response payload.
LAMBDA_REQUEST_LIMIT = 6_291_456
LAMBDA_RESPONSE_LIMIT = 6_291_556
API_ID = "localapi00"

# Default status of each gateway response type used here (AWS defaults).
_DEFAULT_STATUS = {
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "REQUEST_TOO_LARGE": 413,
    "AUTHORIZER_FAILURE": 500,
    "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "INTEGRATION_FAILURE": 502,
    "BAD_REQUEST_BODY": 400,
    "THROTTLED": 429,
    "QUOTA_EXCEEDED": 429,
    "INVALID_API_KEY": 403,
}
_ERROR_TYPES = {
    "UNAUTHORIZED": "UnauthorizedException",
    "ACCESS_DENIED": "AccessDeniedException",
    "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
    "REQUEST_TOO_LARGE": "RequestTooLargeException",
    "AUTHORIZER_FAILURE": "AuthorizerFailureException",
    "AUTHORIZER_CONFIGURATION_ERROR": "AuthorizerConfigurationException",
    "INTEGRATION_FAILURE": "InternalServerErrorException",
    "LAMBDA_REQUEST_TOO_LARGE": "BadRequestException",
    "THROTTLED": "TooManyRequestsException",
    "QUOTA_EXCEEDED": "LimitExceededException",
    "INVALID_API_KEY": "ForbiddenException",
}
_USAGE_MESSAGES = {
    usage.THROTTLED: "Too Many Requests",
    usage.QUOTA_EXCEEDED: "Limit Exceeded",
    usage.INVALID_API_KEY: "Forbidden",
}


class GatewayError(Exception):
    """An error API Gateway answers itself, through a gateway response."""

    def __init__(self, response_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.response_type = response_type
        self.message = message
        self.status = status


@dataclass
class HttpResponse:
    """What goes back to the client."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


# ---------------------------------------------------------------- Lambda side


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    identity: object | None = None
    client_context: object | None = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        """The function's ARN, as Lambda would pass it."""
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        """The log group Lambda would write to."""
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        """A log stream name in Lambda's format."""
        return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured timeout (not enforced)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[dict[str, Any], LambdaContext], Any]


class FunctionRuntime:
    """A function's execution environments ("containers"), as Lambda keeps them.

    Each container is a separately loaded copy of the handler module and runs one
    invocation at a time, so module-level state (the Powertools resolver's current event,
    caches) is never shared by concurrent requests. A request takes an idle container or
    loads a new one (a cold start); containers are kept warm for the stack's lifetime.
    """

    def __init__(self, function: Function, namespace: str) -> None:
        self.function = function
        self._module_prefix = f"_local_{namespace}_{function.logical_id}"
        self._idle: list[Handler] = []
        self._created = 0
        self._lock = threading.Lock()

    @property
    def containers(self) -> int:
        """How many containers were started (cold starts)."""
        return self._created

    def _acquire(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._created += 1
            module_name = f"{self._module_prefix}_{self._created}"
        return self._load(module_name)

    def _load(self, module_name: str) -> Handler:
        module_path, _, attribute = self.function.handler.rpartition(".")
        source = self.function.code_uri.joinpath(*module_path.split(".")).with_suffix(".py")
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None or not source.is_file():
            raise ImportError(f"cannot load {source}")
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        handler: Handler = getattr(module, attribute)
        return handler

    def warm(self) -> None:
        """Start one container ahead of the first request (Lambda's init phase)."""
        handler = self._acquire()
        with self._lock:
            self._idle.append(handler)

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler; exceptions propagate (the caller maps them as AWS would)."""
        handler = self._acquire()
        context = LambdaContext(
            function_name=self.function.name,
            memory_limit_in_mb=self.function.memory_size,
            timeout_seconds=self.function.timeout,
        )
        try:
            return handler(event, context)
        finally:
            with self._lock:
                self._idle.append(handler)


class EnvironmentScope:
    """Apply the functions' environment while at least one invocation runs.

    Outside invocations the process environment is left as it was, so tests sharing the
    process (pytest workers) do not see the local endpoints and resource names. A process
    that serves nothing but the stack (``python -m local``) pins them instead: set once,
    never swapped per request.
    """

    def __init__(self, variables: Mapping[str, str], on_change: Callable[[], None]) -> None:
        self._variables = dict(variables)
        self._on_change = on_change
        self._saved: dict[str, str | None] = {}
        self._depth = 0
        self._pinned = False
        self._lock = threading.Lock()

    def pin(self) -> None:
        """Set the variables for the rest of the process's life."""
        import os  # noqa: PLC0415 - only the local stack touches the process environment

        with self._lock:
            os.environ.update(self._variables)
            self._on_change()
            self._pinned = True

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Context manager: the variables are set inside."""
        import os  # noqa: PLC0415 - only the local stack touches the process environment

        if self._pinned:
            yield
            return
        with self._lock:
            if self._depth == 0:
                self._saved = {key: os.environ.get(key) for key in self._variables}
                os.environ.update(self._variables)
                self._on_change()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for key, value in self._saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
                    self._on_change()


# ---------------------------------------------------------------- routing


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    literal_segments: int
    greedy: bool


def _compile(route: Route) -> _CompiledRoute:
    parts = []
    literals = 0
    greedy = False
    for segment in route.path.strip("/").split("/"):
        match = re.fullmatch(r"\{([A-Za-z0-9_.-]+)(\+?)\}", segment)
        if match and match.group(2):
            parts.append(f"(?P<{_group(match.group(1))}>.+)")
            greedy = True
        elif match:
            parts.append(f"(?P<{_group(match.group(1))}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    pattern = re.compile("/" + "/".join(parts) if parts != [""] else "/")
    return _CompiledRoute(route, pattern, literals, greedy)


def _group(name: str) -> str:
    """Return a regex group name for a path parameter (names may hold ``-`` or ``.``)."""
    return "p_" + "".join(c if c.isalnum() or c == "_" else f"_{ord(c)}_" for c in name)


def _param_name(group: str) -> str:
    return re.sub(r"_(\d+)_", lambda m: chr(int(m.group(1))), group[2:])


class Router:
    """Match request paths and methods to the template's routes, most specific first."""

    def __init__(self, routes: list[Route]) -> None:
        compiled = [_compile(route) for route in routes]
        self._routes = sorted(compiled, key=lambda c: (c.greedy, -c.literal_segments))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """Return the route and raw path parameters, or None (API Gateway's 403/404)."""
        if len(path) > 1:
            path = path.rstrip("/")
        for compiled in self._routes:
            found = compiled.pattern.fullmatch(path)
            if found and compiled.route.method in (method, "ANY"):
                params = {_param_name(k): v for k, v in found.groupdict().items()}
                return compiled.route, params
        return None


# ---------------------------------------------------------------- authorizer


def _policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    """Evaluate an IAM policy document for execute-api:Invoke on ``method_arn``."""
    allowed = False
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict):
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", str(a)) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(method_arn, str(r)) for r in resources):
            continue
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny":
            return False
        allowed = allowed or effect == "allow"
    return allowed


@dataclass(frozen=True)
class _AuthResult:
    principal_id: str
    policy: dict[str, Any]
    context: dict[str, Any]
    expires: float
    usage_identifier: str | None = None
    #: The authorizer raised Unauthorized: the token gets 401 until the result expires.
    refused: bool = False


class AuthorizerCache:
    """Authorizer answers cached per token for ReauthorizeEvery seconds, as API Gateway does:
    policies, and refusals (``Unauthorized``) alike."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _AuthResult] = {}
        self._lock = threading.Lock()

    def get(self, authorizer: str, token: str) -> _AuthResult | None:
        """Return a live cached result, if any."""
        with self._lock:
            entry = self._entries.get((authorizer, token))
            if entry is not None and entry.expires > time.monotonic():
                return entry
            self._entries.pop((authorizer, token), None)
            return None

    def put(self, authorizer: str, token: str, result: _AuthResult) -> None:
        """Remember a result until it expires."""
        with self._lock:
            self._entries[(authorizer, token)] = result


# ---------------------------------------------------------------- media types


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def is_binary(media_type: str | None, binary_media_types: tuple[str, ...]) -> bool:
    """Whether a media type matches one of the API's binary media types (``*`` wildcards)."""
    candidate = _media_type(media_type)
    if not candidate:
        return False
    return any(fnmatch.fnmatchcase(candidate, pattern.lower()) for pattern in binary_media_types)


# ---------------------------------------------------------------- the gateway


@dataclass
class Request:
    """An HTTP request as received."""

    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str

    def header(self, name: str) -> str | None:
        """Return the last value of a header (case-insensitive), or None."""
        found = None
        for key, value in self.headers:
            if key.lower() == name.lower():
                found = value
        return found


def _as_gateway_host(
    headers: list[tuple[str, str]], address: tuple[Any, ...]
) -> list[tuple[str, str]]:
    """Host as API Gateway passes it: its own authority, whatever the client sent.

    (dicomweb-client, for one, sends ``Host`` without the port.)
    """
    host = f"{address[0]}:{address[1]}"
    return [(k, v) for k, v in headers if k.lower() != "host"] + [("Host", host)]


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


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in pairs:
        result.setdefault(key, []).append(value)
    return result


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def _payload_size(document: Any) -> int:
    """Bytes of ``document`` as Lambda's JSON payload. A base64 body needs no escaping, so it
    counts as its length plus quotes, without serialising megabytes for a number."""
    if isinstance(document, dict) and document.get("isBase64Encoded"):
        body = document.get("body")
        if isinstance(body, str) and body.isascii():
            rest = {**document, "body": ""}
            return len(json.dumps(rest, separators=(",", ":")).encode("utf-8")) + len(body)
    return len(json.dumps(document, separators=(",", ":")).encode("utf-8"))


class Gateway:
    """Turn HTTP requests into proxy events, run authorizer and handler, shape the answer."""

    def __init__(  # noqa: PLR0913 - the options are keyword-only
        self,
        template: StackTemplate,
        environment: Mapping[str, str],
        *,
        authorizer_ttl: int | None = None,
        on_environment_change: Callable[[], None] = lambda: None,
        usage_plans: usage.UsagePlans | None = None,
        on_request: Callable[[str], None] = lambda function: None,
    ) -> None:
        if template.api is None:
            raise ValueError("the template has no AWS::Serverless::Api to emulate")
        self.api: Api = template.api
        self.router = Router(template.routes)
        namespace = uuid.uuid4().hex[:8]
        self.runtimes = {
            name: FunctionRuntime(function, namespace)
            for name, function in template.functions.items()
        }
        self.environment = EnvironmentScope(environment, on_environment_change)
        #: Told the function of every request integrated (the local event source wakes up).
        self.on_request = on_request
        self.cache = AuthorizerCache()
        self.authorizer_ttl = authorizer_ttl
        # Without the stack's key entries: only the template's own API keys are on a plan.
        self.usage_plans = usage_plans or usage.UsagePlans(
            plans=template.usage_plans,
            api_keys=template.api_keys,
            default_plan=template.outputs.get("DefaultUsagePlanId"),
        )
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT))

    def warm(self) -> None:
        """One warm container per function, loaded with the functions' environment: a
        server that forks workers afterwards gives each of them loaded handlers."""
        with self.environment.active():
            for runtime in self.runtimes.values():
                runtime.warm()

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Run a function for an event that is not an API request (S3 events, schedules)."""
        with self.environment.active():
            return self.runtimes[function].invoke(event)

    # ------------------------------------------------------------ gateway responses

    def gateway_response(self, error: GatewayError, request_id: str) -> HttpResponse:
        """Render a gateway response as configured in the template (or AWS's default)."""
        default_status = error.status or _DEFAULT_STATUS.get(error.response_type, 500)
        fallback = "DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX"
        responses = self.api.gateway_responses
        configured = responses.get(error.response_type) or responses.get(fallback)
        status = default_status
        headers = [("Content-Type", "application/json")]
        message_string = json.dumps(error.message)
        body = '{"message":' + message_string + "}"
        if configured is not None:
            status = configured.status or default_status
            headers += list(configured.headers.items())
            template = configured.templates.get("application/json")
            if template is None and configured.templates:
                content_type, template = next(iter(configured.templates.items()))
                headers[0] = ("Content-Type", content_type)
            if template is not None:
                body = (
                    template.replace("$context.error.messageString", message_string)
                    .replace("$context.error.message", error.message)
                    .replace("$context.error.responseType", error.response_type)
                    .replace("$context.requestId", request_id)
                )
        error_type = _ERROR_TYPES.get(error.response_type, "InternalServerErrorException")
        headers += [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", error_type)]
        return HttpResponse(status, headers, body.encode("utf-8"))

    # ------------------------------------------------------------ request handling

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
        path = unquote(request.raw_path) if "%" in request.raw_path else request.raw_path
        matched = self.router.match(request.method, request.raw_path)
        if matched is None:
            raise GatewayError("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
        route, raw_params = matched
        stage = self.api.stage_name
        method_arn = (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{stage}/"
            f"{request.method}/{request.raw_path.lstrip('/')}"
        )
        with self.environment.active():
            authorizer_context, usage_identifier = self._authorize(route, request, method_arn)
            if route.api_key_required:
                usage_identifier = self._meter(request, usage_identifier)
            event = self._event(request, route, raw_params, path, request_id, authorizer_context)
            if route.api_key_required:
                event["requestContext"]["identity"]["apiKey"] = usage_identifier
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

    def _authorize(
        self, route: Route, request: Request, method_arn: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        if route.authorizer is None:
            return None, None
        authorizer = self.api.authorizers.get(route.authorizer)
        if authorizer is None:
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Authorizer misconfigured")
        token = request.header(authorizer.identity_header)
        if not token:
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        if authorizer.validation_expression and not re.fullmatch(
            authorizer.validation_expression, token
        ):
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        result = self._authorizer_result(authorizer, token, method_arn)
        if result.refused:
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        if not _policy_allows(result.policy, method_arn):
            raise GatewayError(
                "ACCESS_DENIED", "User is not authorized to access this resource", status=403
            )
        context = {"principalId": result.principal_id, "integrationLatency": 0, **result.context}
        return context, result.usage_identifier

    def _authorizer_result(
        self, authorizer: Authorizer, token: str, method_arn: str
    ) -> _AuthResult:
        """The cached answer for this token, or the authorizer's (then cached, refusals too)."""
        ttl = authorizer.reauthorize_every if self.authorizer_ttl is None else self.authorizer_ttl
        cached = self.cache.get(authorizer.name, token) if ttl > 0 else None
        if cached is not None:
            return cached
        try:
            result = self._call_authorizer(authorizer.function, token, method_arn, ttl)
        except GatewayError as error:
            if ttl > 0 and error.response_type == "UNAUTHORIZED":
                refusal = _AuthResult("", {}, {}, time.monotonic() + ttl, refused=True)
                self.cache.put(authorizer.name, token, refusal)
            raise
        if ttl > 0:
            self.cache.put(authorizer.name, token, result)
        return result

    def _call_authorizer(self, function: str, token: str, method_arn: str, ttl: int) -> _AuthResult:
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        try:
            output = self.runtimes[function].invoke(event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise GatewayError("UNAUTHORIZED", "Unauthorized") from exc
            logger.exception("authorizer %s failed", function)
            raise GatewayError("AUTHORIZER_FAILURE", "Internal server error") from exc
        if (
            not isinstance(output, dict)
            or not isinstance(output.get("policyDocument"), dict)
            or "principalId" not in output
        ):
            logger.error("authorizer %s returned no principalId/policyDocument", function)
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        context = output.get("context") or {}
        if not isinstance(context, dict) or any(
            isinstance(v, (dict, list)) for v in context.values()
        ):
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        identifier = output.get("usageIdentifierKey")
        return _AuthResult(
            principal_id=str(output["principalId"]),
            policy=output["policyDocument"],
            context=dict(context),
            expires=time.monotonic() + ttl,
            usage_identifier=str(identifier) if identifier else None,
        )

    def _event(  # noqa: PLR0913, PLR0917 - the parts of a proxy event
        self,
        request: Request,
        route: Route,
        raw_params: dict[str, str],
        path: str,
        request_id: str,
        authorizer: dict[str, Any] | None,
    ) -> dict[str, Any]:
        query = _query_pairs(request.query)
        multi_query = _multi(query)
        binary = is_binary(
            request.header("Content-Type") or "application/json", self.api.binary_media_types
        )
        body: str | None = None
        if request.body:
            body = (
                pybase64.b64encode_as_string(request.body)
                if binary
                else request.body.decode("utf-8", errors="replace")
            )
        stage = self.api.stage_name
        now = datetime.now(UTC)
        context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": "127.0.0.1",
            "domainPrefix": "127",
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": request.header("User-Agent"),
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
            # The path the client used: local URLs carry no stage (AWS: "/{stage}{path}").
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": route.event_name,
            "resourcePath": route.path,
            "stage": stage,
        }
        if authorizer is not None:
            context["authorizer"] = authorizer
        headers = _with_forwarded(request)
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": request.method,
            "headers": dict(headers) or None,
            "multiValueHeaders": _multi(headers) or None,
            "queryStringParameters": dict(query) or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": {k: unquote(v) for k, v in raw_params.items()} or None,
            "stageVariables": None,
            "requestContext": context,
            "body": body,
            "isBase64Encoded": binary and body is not None,
        }

    def _integrate(self, route: Route, event: dict[str, Any], request: Request) -> HttpResponse:
        self.on_request(route.function)
        size = _payload_size(event)
        if size > LAMBDA_REQUEST_LIMIT:
            logger.error(
                "Lambda request payload of %d bytes exceeds %d", size, LAMBDA_REQUEST_LIMIT
            )
            raise GatewayError("LAMBDA_REQUEST_TOO_LARGE", "Request Too Long", status=413)
        try:
            output = self.runtimes[route.function].invoke(event)
            payload_size = _payload_size(output)
        except Exception as exc:
            logger.exception("function %s failed", route.function)
            raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from exc
        if payload_size > LAMBDA_RESPONSE_LIMIT:
            logger.error(
                "Lambda response of %d bytes exceeds %d", payload_size, LAMBDA_RESPONSE_LIMIT
            )
            raise GatewayError("INTEGRATION_FAILURE", "Internal server error")
        return self._proxy_response(output, request, str(event["requestContext"]["requestId"]))

    def _proxy_response(self, output: Any, request: Request, request_id: str) -> HttpResponse:
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
            accept = (request.header("Accept") or "").split(",", 1)[0]
            if is_binary(accept, self.api.binary_media_types) or is_binary(
                content_type, self.api.binary_media_types
            ):
                try:
                    body = pybase64.b64decode(str(raw_body), validate=True)
                except (binascii.Error, ValueError):
                    logger.error("Malformed Lambda proxy response: body is not base64")
                    raise malformed from None
        headers.append(("x-amzn-RequestId", request_id))
        return HttpResponse(status, headers, body)


# ---------------------------------------------------------------- HTTP server


def _loggable(request_line: str) -> str:
    """The request line for the access log: without the query string (QIDO values name
    patients), at most 200 characters."""
    words = request_line.rstrip("\r\n").split(" ")
    if len(words) > 1:
        words[1] = words[1].split("?", 1)[0]
    return " ".join(words)[:200]


#: What is read and dropped at most after an early answer, and for how long.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 2.0


def _drain(connection: socket.socket) -> None:
    """Half-close, then read and drop what the client still sends (bounded in bytes and
    time): closing with unread data would reset the connection, and the client could lose
    the answer before reading it."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    left = _DRAIN_BYTES
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
        while left > 0 and (remaining := deadline - time.monotonic()) > 0:
            connection.settimeout(remaining)
            data = connection.recv(min(65536, left))
            if not data:
                break
            left -= len(data)


class _RequestHandler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK holds the second one back 40 ms (Nagle), whatever the handler's speed.
    disable_nagle_algorithm = True
    timeout = 30  # seconds a client may stay silent (a declared body that never comes)
    #: Answered before the whole request was read: drain what follows before closing.
    _unread = False

    def handle_one_request(self) -> None:
        """Read one request line (at most :data:`http1.READ_LIMIT` bytes) and serve it."""
        try:
            self.raw_requestline = self.rfile.readline(http1.READ_LIMIT + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._serve()  # any method: the gateway answers those no route has (404)
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def parse_request(self) -> bool:
        """Read the request head (:mod:`local.http1`), as the standard library would."""
        request_line: bytes = getattr(self, "raw_requestline", b"")
        self.command = ""  # send_error reads it
        self.request_version = "HTTP/1.1"  # an error answer gets a status line and headers
        self.close_connection = True
        self.requestline = _loggable(str(request_line, "iso-8859-1"))
        try:
            head = http1.read_head(request_line, self.rfile)
        except http1.HeadError as error:
            self._unread = True
            self.send_error(error.status, error.message)
            return False
        self.command, self.path, self.request_version = head.command, head.path, head.version
        self.headers = head.headers
        modern = head.version >= "HTTP/1.1" and self.protocol_version >= "HTTP/1.1"
        connection = (head.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif modern or connection == "keep-alive":
            self.close_connection = False
        expect = (head.headers.get("Expect") or "").lower()
        return not (modern and expect == "100-continue") or self.handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer ``code`` with ``{"message": ...}`` and close, as API Gateway's front end."""
        status = HTTPStatus(code)
        text = message or status.phrase
        self.log_error("code %d, message %s", code, text)
        body = json.dumps({"message": text}).encode("utf-8")
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def finish(self) -> None:
        """Send what is buffered; after an early answer, drain before the socket closes."""
        super().finish()
        if self._unread:
            _drain(self.connection)

    def _serve(self) -> None:
        too_large = False
        try:
            body = http1.read_body(self.headers, self.rfile, API_PAYLOAD_LIMIT)
        except http1.BodyTooLarge:
            body, too_large = b"", True
            self._unread = self.close_connection = True
        except http1.BodyError as error:
            self._unread = True
            self.send_error(HTTPStatus.BAD_REQUEST, error.message)
            return
        except OSError:  # the client went silent (timeout) or away: nothing to answer
            self.close_connection = True
            return
        raw_path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            raw_path=raw_path or "/",
            query=query,
            headers=_as_gateway_host(
                [(k, v) for k, v in self.headers.items() if k.lower() != "transfer-encoding"],
                self.server.server_address,
            ),
            body=body,
            source_ip=self.client_address[0],
        )
        gateway = self.server.gateway
        if too_large:
            response = gateway.gateway_response(
                GatewayError("REQUEST_TOO_LARGE", "Request Too Long"), str(uuid.uuid4())
            )
        else:
            response = gateway.handle(request)
        self.send_response(response.status)
        for key, value in response.headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to logging instead of stderr."""
        logger.info("%s %s", self.address_string(), format % args)


class EmulatorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to a :class:`Gateway` (given at once, or once the port is
    known: the environment of the functions names the server's own address)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway | None) -> None:
        self._gateway = gateway
        super().__init__(address, _RequestHandler)

    @property
    def gateway(self) -> Gateway:
        """The gateway answering requests."""
        if self._gateway is None:
            raise RuntimeError("the emulator has no gateway yet")
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])
