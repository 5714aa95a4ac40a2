"""Load a function's app.py the way Lambda does (by file), and build REST proxy events
(with the one builder, :func:`local.api_gateway.proxy.proxy_event`)."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from local.api_gateway.proxy import ProxyRequest, Stage, proxy_event

ROOT = Path(__file__).resolve().parents[2]
#: The stage of the events built here: in AWS, ``requestContext.path`` starts with it.
STAGE = Stage(
    "v1",
    api_id="example",
    domain_name="example.execute-api.us-east-1.amazonaws.com",
    domain_prefix="example",
    path_has_stage=True,
)


def load(function: str) -> ModuleType:
    """Import functions/<function>/app.py under a unique module name."""
    path = ROOT / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"fn_{function}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    function_name = "test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/test"
    log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def rest_event(
    method: str,
    resource: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event with a base64 body, as API Gateway sends binary media."""
    all_headers = {"Host": STAGE.domain_name, **(headers or {})}
    request = ProxyRequest(
        method,
        resource,
        path,
        headers=list(all_headers.items()),
        path_parameters=path_parameters,
        body=body,
        request_id="req-1",
    )
    return proxy_event(request, STAGE)


def json_body(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


@contextlib.contextmanager
def quiet(module: ModuleType) -> Iterator[None]:
    """A function module's logger at WARNING for a while (its level is shared by service)."""
    logger = module.logger
    previous = logger.log_level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(previous)
