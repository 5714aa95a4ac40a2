"""The API Gateway emulator on its own: requests in, gateway responses or the function's
answer out, with a fake in place of the Lambda runtime (no socket, no handler module)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local import template
from local.api_gateway import Gateway, Request
from local.api_gateway.proxy import ProxyRequest, Stage, proxy_event, read_response
from local.api_gateway.responses import GatewayError
from local.lambda_runtime import LAMBDA_REQUEST_LIMIT

TEMPLATE = """
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: dev
      BinaryMediaTypes: ["application~1octet-stream"]
      Auth:
        DefaultAuthorizer: Keys
        Authorizers:
          Keys: {FunctionArn: !GetAtt Auth.Arn, Identity: {ReauthorizeEvery: 300}}
      GatewayResponses:
        UNAUTHORIZED:
          StatusCode: 401
          ResponseTemplates: {"application/json": '{"message": $context.error.messageString}'}
  Auth:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: auth/, Handler: app.handler}
  Echo:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Events:
        Item: {Type: Api, Properties: {RestApiId: !Ref Api, Path: "/items/{id}", Method: any}}
        Open:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /open, Method: get, Auth: {Authorizer: NONE}}
"""
ALLOW = {
    "principalId": "apikey:k1",
    "policyDocument": {
        "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]
    },
    "context": {"keyId": "k1"},
}


class FakeRuntime:
    """Functions by logical id; remembers every event it was given."""

    def __init__(self, functions: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self.functions = functions
        self.events: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        self.events.append((function, event))
        return self.functions[function](event)


def _authorizer(event: dict[str, Any]) -> dict[str, Any]:
    if event["authorizationToken"] != "good":
        raise Exception("Unauthorized")
    return ALLOW


def _echo(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps(event)}


@pytest.fixture
def stack(tmp_path: Path) -> template.StackTemplate:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    return template.load(path)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime({"Auth": _authorizer, "Echo": _echo})


def request(
    path: str,
    *,
    key: str | None = "good",
    method: str = "GET",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> Request:
    raw_path, _, query = path.partition("?")
    fields = [("Authorization", key)] if key is not None else []
    return Request(method, raw_path, query, fields + list(headers), body, "10.0.0.1")


def test_a_routed_request_reaches_its_function_as_a_proxy_event(
    stack: template.StackTemplate, runtime: FakeRuntime
) -> None:
    answer = Gateway(stack, runtime.invoke).handle(request("/items/a%20b?x=1&x=2&flag"))
    assert answer.status == 200
    event = json.loads(answer.body)
    assert (event["resource"], event["path"]) == ("/items/{id}", "/items/a b")
    assert event["pathParameters"] == {"id": "a b"}
    assert event["queryStringParameters"] == {"x": "2", "flag": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "flag": [""]}
    assert event["headers"]["X-Forwarded-For"] == "10.0.0.1"
    context = event["requestContext"]
    assert (context["stage"], context["path"], context["resourceId"]) == (
        "dev",
        "/items/a b",
        "Item",
    )
    assert context["authorizer"] == {
        "principalId": "apikey:k1",
        "integrationLatency": 0,
        "keyId": "k1",
    }
    assert ("x-amzn-RequestId", context["requestId"]) in answer.headers


def test_no_route_is_missing_authentication_token(
    stack: template.StackTemplate, runtime: FakeRuntime
) -> None:
    answer = Gateway(stack, runtime.invoke).handle(request("/nothing"))
    assert answer.status == 403
    assert ("x-amzn-ErrorType", "MissingAuthenticationTokenException") in answer.headers
    assert runtime.events == []


def test_a_refusal_is_cached_per_token_and_rendered_from_the_template(
    stack: template.StackTemplate, runtime: FakeRuntime
) -> None:
    gateway = Gateway(stack, runtime.invoke)
    for _ in range(3):
        answer = gateway.handle(request("/items/1", key="bad"))
        assert answer.status == 401
        assert json.loads(answer.body) == {"message": "Unauthorized"}
    assert [function for function, _ in runtime.events] == ["Auth"]


def test_a_route_without_authorizer_asks_none(
    stack: template.StackTemplate, runtime: FakeRuntime
) -> None:
    answer = Gateway(stack, runtime.invoke).handle(request("/open", key=None))
    assert answer.status == 200
    assert "authorizer" not in json.loads(answer.body)["requestContext"]
    assert [function for function, _ in runtime.events] == ["Echo"]


def test_a_binary_body_travels_base64(stack: template.StackTemplate, runtime: FakeRuntime) -> None:
    body = bytes(range(256))
    answer = Gateway(stack, runtime.invoke).handle(
        request(
            "/items/1",
            method="PUT",
            body=body,
            headers=(("Content-Type", "application/octet-stream"),),
        )
    )
    event = json.loads(answer.body)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


@pytest.mark.parametrize(
    ("output", "status"),
    [({"body": "no status"}, 502), ("not an object", 502), ({"statusCode": 204}, 204)],
)
def test_the_function_s_answer_is_read_as_api_gateway_reads_it(
    stack: template.StackTemplate, output: Any, status: int
) -> None:
    runtime = FakeRuntime({"Auth": _authorizer, "Echo": lambda event: output})
    assert Gateway(stack, runtime.invoke).handle(request("/items/1")).status == status


def test_an_event_over_lambda_s_limit_is_413_and_never_invoked(
    stack: template.StackTemplate, runtime: FakeRuntime
) -> None:
    body = b"x" * (LAMBDA_REQUEST_LIMIT + 1)
    answer = Gateway(stack, runtime.invoke).handle(request("/items/1", method="POST", body=body))
    assert answer.status == 413
    assert ("x-amzn-ErrorType", "BadRequestException") in answer.headers
    assert [function for function, _ in runtime.events] == ["Auth"]


def test_the_proxy_event_keeps_repeated_names_and_names_the_stage() -> None:
    event = proxy_event(
        ProxyRequest(
            "POST",
            "/a/{x}",
            "/a/1",
            headers=[("X-Dup", "one"), ("x-dup", "two"), ("User-Agent", "ua")],
            query=[("q", "1"), ("q", "2")],
            path_parameters={"x": "1"},
            body=b"{}",
            binary=False,
            api_key="usage-key",
        ),
        Stage("v1", path_has_stage=True),
    )
    assert event["multiValueHeaders"] == {"X-Dup": ["one"], "x-dup": ["two"], "User-Agent": ["ua"]}
    assert event["queryStringParameters"] == {"q": "2"}
    assert (event["body"], event["isBase64Encoded"]) == ("{}", False)
    identity = event["requestContext"]["identity"]
    assert (identity["userAgent"], identity["apiKey"]) == ("ua", "usage-key")
    assert event["requestContext"]["path"] == "/v1/a/1"


def test_an_empty_body_is_null() -> None:
    event = proxy_event(ProxyRequest("GET", "/", "/", body=b""), Stage("v1"))
    assert (event["body"], event["isBase64Encoded"]) == (None, False)


def test_a_base64_answer_is_decoded_only_for_binary_types() -> None:
    output = {
        "statusCode": 200,
        "headers": {"Content-Type": "image/png"},
        "body": base64.b64encode(b"\x89PNG").decode(),
        "isBase64Encoded": True,
    }
    assert read_response(output, "image/png", ("image/*",), "r").body == b"\x89PNG"
    assert (
        read_response(output, "text/plain", ("application/dicom",), "r").body
        == output["body"].encode()
    )
    with pytest.raises(GatewayError):
        read_response({**output, "body": "not base64!"}, None, ("image/*",), "r")


def test_query_strings_are_decoded_as_api_gateway_decodes_them() -> None:
    """A ``+`` is a space (requests sends one so: ``StudyDescription=CT+HEAD``), ``%2B`` a
    plus sign, percent escapes are decoded, and order and empty values are kept."""
    from local.api_gateway.gateway import query_pairs

    assert query_pairs("StudyDescription=*CT+HEAD*&x=1%2B1&flag&PatientName=Doe%5EJ") == [
        ("StudyDescription", "*CT HEAD*"),
        ("x", "1+1"),
        ("flag", ""),
        ("PatientName", "Doe^J"),
    ]
