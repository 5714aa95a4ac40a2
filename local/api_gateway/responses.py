"""Gateway responses: the answers API Gateway gives itself, rendered from the template.

A :class:`GatewayError` names the response type (``UNAUTHORIZED``, ``THROTTLED``...);
:func:`render` turns it into an :class:`HttpResponse` with the template's status, static
headers and body template, falling back to ``DEFAULT_4XX`` / ``DEFAULT_5XX`` and AWS's
default status for types the template does not configure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from local.template import GatewayResponse

#: Default status of each gateway response type used here (AWS defaults).
DEFAULT_STATUS = {
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
#: ``x-amzn-ErrorType`` of each response type.
ERROR_TYPES = {
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


def render(
    responses: Mapping[str, GatewayResponse], error: GatewayError, request_id: str
) -> HttpResponse:
    """The gateway response for ``error`` as configured in ``responses`` (or AWS's default).

    Body templates may use ``$context.error.message``, ``$context.error.messageString``
    (the message with its quotes), ``$context.error.responseType`` and
    ``$context.requestId``.
    """
    default_status = error.status or DEFAULT_STATUS.get(error.response_type, 500)
    fallback = "DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX"
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
    error_type = ERROR_TYPES.get(error.response_type, "InternalServerErrorException")
    headers += [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", error_type)]
    return HttpResponse(status, headers, body.encode("utf-8"))
