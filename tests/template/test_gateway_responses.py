"""The gateway responses of template.yaml: every 4xx answers JSON with CORS, and every 413
API Gateway can give names the upload path (docs/large-objects.md)."""

from __future__ import annotations

import json

import pytest
import yaml

from local.template import DEFAULT_TEMPLATE, GatewayResponse, load

pytestmark = pytest.mark.template

#: API Gateway's gateway response types (REST APIs) whose default status is a 4xx.
TYPES_4XX = {
    "ACCESS_DENIED",
    "BAD_REQUEST_PARAMETERS",
    "BAD_REQUEST_BODY",
    "EXPIRED_TOKEN",
    "INVALID_API_KEY",
    "INVALID_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN",
    "QUOTA_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "RESOURCE_NOT_FOUND",
    "THROTTLED",
    "UNAUTHORIZED",
    "UNSUPPORTED_MEDIA_TYPE",
    "WAF_FILTERED",
}
UPLOAD_PATH = "POST stowRsListener/{CALLING_AET}/uploads"


def responses() -> dict[str, GatewayResponse]:
    api = load().api
    assert api is not None
    return api.gateway_responses


def rendered(response: GatewayResponse, message: str) -> dict[str, object]:
    """The JSON body API Gateway would send for ``message``."""
    body = response.templates["application/json"]
    body = body.replace("$context.error.messageString", json.dumps(message))
    document: dict[str, object] = json.loads(body.replace("$context.error.message", message))
    return document


def test_every_4xx_type_has_a_response_of_its_own_so_default_4xx_is_the_lambda_limit() -> None:
    assert set(responses()) >= TYPES_4XX


@pytest.mark.parametrize("kind", sorted(TYPES_4XX | {"DEFAULT_4XX", "DEFAULT_5XX"}))
def test_every_gateway_response_is_json_with_cors(kind: str) -> None:
    response = responses()[kind]
    assert "Access-Control-Allow-Origin" in response.headers
    assert rendered(response, 'Request "Too" Long')["message"]


@pytest.mark.parametrize("kind", ["REQUEST_TOO_LARGE", "DEFAULT_4XX"])
def test_the_413s_name_the_upload_path(kind: str) -> None:
    assert UPLOAD_PATH in json.dumps(rendered(responses()[kind], "Request Too Long"))


def test_the_template_has_no_yaml_aliases() -> None:
    """CloudFormation refuses YAML anchors and aliases."""
    events = yaml.parse(DEFAULT_TEMPLATE.read_text(encoding="utf-8"))
    assert not any(isinstance(event, yaml.AliasEvent) for event in events)
