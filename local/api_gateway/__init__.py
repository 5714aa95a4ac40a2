"""API Gateway (REST, v1) emulated from template.yaml, one job per module.

* :mod:`.gateway`: :class:`Gateway`, one request from routing to the function's answer;
* :mod:`.router`: the template's routes, most specific first;
* :mod:`.authorizer`: TOKEN authorizers, their answers cached per token, policies evaluated;
* :mod:`.usage`: usage plans (token bucket and daily quota per API key);
* :mod:`.proxy`: the Lambda proxy event (built here for the emulator, the sample events,
  the tests and the benchmarks) and the proxy response;
* :mod:`.responses`: gateway responses rendered from the template.

It runs no function and serves no socket: :mod:`local.lambda_runtime` runs the functions,
:mod:`local.server` serves HTTP.
"""

from local.api_gateway.gateway import API_PAYLOAD_LIMIT, Gateway, Request
from local.api_gateway.responses import GatewayError, HttpResponse

__all__ = ["API_PAYLOAD_LIMIT", "Gateway", "GatewayError", "HttpResponse", "Request"]
