"""HTTP through the local stack: routing, authorizer, gateway responses, payload limits.

The STOW route is used only as far as routing and auth go: a request that passes the
authorizer reaches functions/stow/app.py, whose own answer (a 4xx for a wrong Content-Type) is
not checked in detail here. Proxy-event details are checked on a small echo function.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.lambda_runtime import LAMBDA_REQUEST_LIMIT
from local.stack import DEV_KEY_FILE, DEV_KEY_LABEL, LocalStack
from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from tests.support.served import Served
from tests.support.served import served as serve

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def stow_url(stack: LocalStack, suffix: str = "") -> str:
    return f"{stack.base_url}/stowRsListener/TESTAET/studies{suffix}"


def reached_handler(response: requests.Response) -> bool:
    """The request went past API Gateway: routed, authorized, answered by the function."""
    return "x-amzn-ErrorType" not in response.headers and response.status_code not in (401, 403)


# ---------------------------------------------------------------- authorizer and routing


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "o3k_wrong"}])
def test_missing_or_wrong_key_is_401_json_with_cors(
    local_stack: LocalStack, headers: dict[str, str]
) -> None:
    response = requests.post(stow_url(local_stack), headers=headers, data=b"x", timeout=30)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["WWW-Authenticate"] == "ApiKey"
    assert "API key" in response.json()["message"]


@pytest.mark.parametrize("scheme", ["", "Bearer ", "ApiKey "])
def test_valid_key_with_or_without_scheme_reaches_the_function(
    local_stack: LocalStack, scheme: str
) -> None:
    response = requests.post(
        stow_url(local_stack),
        headers={"Authorization": scheme + local_stack.api_key, "Content-Type": "text/plain"},
        data=b"not a multipart body",
        timeout=30,
    )
    assert reached_handler(response), response.text
    assert 400 <= response.status_code < 500


def test_study_route_with_path_parameter_reaches_the_function(
    local_stack: LocalStack, api_headers: dict[str, str]
) -> None:
    response = requests.post(
        stow_url(local_stack, "/1.2.3.4"),
        headers={**api_headers, "Content-Type": "application/json"},
        data=b"{}",
        timeout=30,
    )
    assert reached_handler(response), response.text


def test_options_preflight_needs_no_key(local_stack: LocalStack) -> None:
    response = requests.options(
        stow_url(local_stack),
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert response.status_code < 300
    assert reached_handler(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nothing/here"), ("GET", "/stowRsListener/TESTAET/studies"), ("DELETE", "")],
)
def test_unknown_route_or_method_is_404_json(
    local_stack: LocalStack, api_headers: dict[str, str], method: str, path: str
) -> None:
    response = requests.request(
        method, local_stack.base_url + path, headers=api_headers, timeout=30
    )
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Not found" in response.json()["message"]


# ---------------------------------------------------------------- payload limits


def test_body_over_10_mb_is_413_before_the_authorizer(local_stack: LocalStack) -> None:
    response = requests.post(
        stow_url(local_stack),
        headers={"Content-Type": "application/dicom"},
        data=b"\0" * (10 * MB + 1),
        timeout=60,
    )
    assert response.status_code == 413
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "10 MB" in response.json()["message"]


def test_chunked_body_over_10_mb_is_413(local_stack: LocalStack) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(11):
            yield b"\0" * MB

    response = requests.post(
        stow_url(local_stack),
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        data=chunks(),
        timeout=60,
    )
    assert response.status_code == 413


def test_body_too_large_for_the_lambda_event_is_413_request_too_long(
    local_stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # 5 MB is under API Gateway's 10 MB but base64 in the event makes it 6.7 MB, over
    # Lambda's 6,291,456-byte invoke limit: API Gateway answers 413 "Request Too Long"
    # (docs/local-stack.md), rendered through the DEFAULT_4XX gateway response.
    response = requests.post(
        stow_url(local_stack),
        headers={**api_headers, "Content-Type": "application/dicom"},
        data=b"\0" * (5 * MB),
        timeout=60,
    )
    assert response.status_code == 413
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Request Too Long" in response.text


def test_body_just_under_the_event_limit_reaches_the_function(
    local_stack: LocalStack, api_headers: dict[str, str]
) -> None:
    size = (LAMBDA_REQUEST_LIMIT - 8192) * 3 // 4  # about 4.7 MB: base64 fits with headers
    response = requests.post(
        stow_url(local_stack),
        headers={**api_headers, "Content-Type": "application/dicom"},
        data=b"\0" * size,
        timeout=60,
    )
    assert reached_handler(response), response.text


UPLOAD_PATH = "stowRsListener/{CALLING_AET}/uploads"


@pytest.mark.parametrize("size", [int(7.2 * MB), 10 * MB + 1])
def test_every_413_of_the_gateway_names_the_upload_path(
    local_stack: LocalStack, api_headers: dict[str, str], size: int
) -> None:
    """Over Lambda's 6 MB event (about 4.7 MB of binary body) and over API Gateway's 10 MB."""
    response = requests.post(
        stow_url(local_stack),
        headers={**api_headers, "Content-Type": "application/dicom"},
        data=b"\0" * size,
        timeout=60,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert UPLOAD_PATH in json.dumps(response.json())


def raw_exchange(stack: LocalStack, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=timeout) as connection:
        with contextlib.suppress(OSError):
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
    return received


def status_and_json(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    assert b"application/json" in head
    return int(head.split()[1]), json.loads(body)


def chunked_stow(stack: LocalStack, body: bytes) -> bytes:
    return (
        b"POST /o3-dpacs-wado/stowRsListener/AE/studies HTTP/1.1\r\nHost: h\r\n"
        b"Authorization: " + stack.api_key.encode() + b"\r\n"
        b"Content-Type: application/dicom\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )


@pytest.mark.parametrize("declared", [b"7fffffff", b"a00001", b"ffffffffffffffff"])
def test_a_chunk_declared_over_the_limit_is_413_before_it_is_read(
    local_stack: LocalStack, declared: bytes
) -> None:
    started = time.monotonic()
    answer = raw_exchange(local_stack, chunked_stow(local_stack, declared + b"\r\nabc"))
    assert time.monotonic() - started < 5  # answered, not waiting for the chunk's bytes
    status, body = status_and_json(answer)
    assert status == 413
    assert UPLOAD_PATH in json.dumps(body)


@pytest.mark.parametrize(
    "framing",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hexadecimal
        b"-1\r\nabc\r\n0\r\n\r\n",  # negative
        b"0x3\r\nabc\r\n0\r\n\r\n",  # a prefix int() would take
        b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",  # digits int() would join
        b"3\r\nabcXY0\r\n\r\n",  # no line end after the data
        b"\r\n",  # no size at all
        b"3\r\nab",  # the body ends inside a chunk
    ],
)
def test_bad_chunked_framing_is_400_json(local_stack: LocalStack, framing: bytes) -> None:
    status, body = status_and_json(raw_exchange(local_stack, chunked_stow(local_stack, framing)))
    assert status == 400
    assert body["message"]


@pytest.mark.parametrize(
    "length",
    [b"1_0", b"+3", b"\xb2", b"3, 4", b"99"],  # 99: the body ends before it
)
def test_bad_or_unmet_content_length_is_400_json(local_stack: LocalStack, length: bytes) -> None:
    request = (
        b"POST /o3-dpacs-wado/stowRsListener/AE/studies HTTP/1.1\r\nHost: h\r\n"
        b"Content-Length: " + length + b"\r\n\r\nabc"
    )
    status, body = status_and_json(raw_exchange(local_stack, request))
    assert status == 400
    assert body["message"]


@pytest.mark.parametrize("size", [10_300, 20_000, 64 * 1024, 1024 * 1024])
def test_a_head_over_api_gateway_limit_is_431_json(
    local_stack: LocalStack, api_headers: dict[str, str], size: int
) -> None:
    response = requests.get(
        f"{local_stack.base_url}/qido/AE/studies",
        headers={**api_headers, "X-Big": "a" * size},
        timeout=30,
    )
    assert response.status_code == 431
    assert "10,240" in response.json()["message"]


def test_many_headers_over_the_limit_together_are_431(
    local_stack: LocalStack, api_headers: dict[str, str]
) -> None:
    padding = {f"X-Pad-{i}": "v" * 200 for i in range(60)}
    response = requests.get(
        f"{local_stack.base_url}/qido/AE/studies", headers={**api_headers, **padding}, timeout=30
    )
    assert response.status_code == 431


def test_a_request_line_over_the_limit_is_431(local_stack: LocalStack) -> None:
    answer = raw_exchange(
        local_stack, b"GET /o3-dpacs-wado/qido/AE/studies?x=" + b"a" * 70_000 + b" HTTP/1.1\r\n"
    )
    assert status_and_json(answer)[0] == 431


@pytest.mark.parametrize(("total", "status"), [(10_240, 200), (10_241, 431)])
def test_the_head_limit_is_exactly_api_gateways(
    local_stack: LocalStack, total: int, status: int
) -> None:
    """Request line plus header values: 10,240 bytes are served, one more is not."""
    line = b"GET /o3-dpacs-wado/qido/AE/studies HTTP/1.1"
    key, host, close = local_stack.api_key.encode(), b"h", b"close"
    pad = b"v" * (total - len(line) - len(key) - len(host) - len(close))
    request = (
        line
        + b"\r\nHost: "
        + host
        + b"\r\nAuthorization: "
        + key
        + b"\r\nConnection: "
        + close
        + b"\r\nX-Pad: "
        + pad
        + b"\r\n\r\n"
    )
    answer = raw_exchange(local_stack, request)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]


# ---------------------------------------------------------------- proxy events (echo function)

ECHO_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
Globals:
  Function:
    Environment:
      Variables:
        ECHO_STAGE: !Ref Stage
Resources:
  EchoApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      BinaryMediaTypes: ["application~1octet-stream", "image~1*"]
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Events:
        Echo:
          Type: Api
          Properties: {RestApiId: !Ref EchoApi, Path: "/echo/{id}", Method: any}
        Special:
          Type: Api
          Properties: {RestApiId: !Ref EchoApi, Path: "/echo/special", Method: get}
"""

ECHO_APP = """
import base64, json, os

def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "crash":
        raise RuntimeError("boom")
    if mode == "huge":
        return {"statusCode": 200, "body": "x" * 6_300_000}
    if mode == "png":
        return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                "body": base64.b64encode(b"\\x89PNG").decode(), "isBase64Encoded": True}
    if mode == "malformed":
        return {"body": "no status"}
    event["context"] = {"function_name": context.function_name,
                        "remaining": context.get_remaining_time_in_millis(),
                        "request_id": context.aws_request_id}
    event["env"] = os.environ.get("ECHO_STAGE")
    return {"statusCode": 201, "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "headers": {"Content-Type": "application/json"}, "body": json.dumps(event)}
"""


@pytest.fixture(scope="module")
def echo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("echo")
    (root / "echo").mkdir()
    (root / "echo" / "app.py").write_text(ECHO_APP, encoding="utf-8")
    (root / "template.yaml").write_text(ECHO_TEMPLATE, encoding="utf-8")
    with LocalStack(port=0, template_path=root / "template.yaml", data_dir=root / "data") as stack:
        yield stack


def test_proxy_event_has_the_rest_v1_shape(echo_stack: LocalStack) -> None:
    response = requests.post(
        echo_stack.api_root + "/echo/a%20b?x=1&x=2&q=caf%C3%A9&empty",
        headers={"Content-Type": "application/json", "X-Dup": "one"},
        data=b'{"k": 1}',
        timeout=30,
    )
    assert response.status_code == 201
    assert response.headers["X-Multi"] == "a, b"
    event = response.json()
    assert event["resource"] == "/echo/{id}"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "a b"}
    assert event["queryStringParameters"] == {"x": "2", "q": "café", "empty": ""}
    assert event["multiValueQueryStringParameters"]["x"] == ["1", "2"]
    assert event["headers"]["X-Dup"] == "one"
    assert event["multiValueHeaders"]["X-Dup"] == ["one"]
    assert event["body"] == '{"k": 1}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "dev"
    assert context["resourcePath"] == "/echo/{id}"
    assert context["path"].startswith("/echo/")  # the path the client used: no stage locally
    assert event["headers"]["X-Forwarded-Proto"] == "http"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert "authorizer" not in context
    assert event["context"]["function_name"] == "local-echofunction"
    assert event["context"]["remaining"] > 0
    assert event["env"] == "dev"
    assert "ECHO_STAGE" not in os.environ  # set only while a function runs


def test_literal_route_wins_over_path_parameter(echo_stack: LocalStack) -> None:
    response = requests.get(echo_stack.api_root + "/echo/special", timeout=30)
    assert response.json()["resource"] == "/echo/special"


def test_binary_media_type_body_is_base64_and_chunked_bodies_are_read(
    echo_stack: LocalStack,
) -> None:
    payload = bytes(range(256)) * 10

    def chunks() -> Iterator[bytes]:
        yield payload[:1000]
        yield payload[1000:]

    response = requests.put(
        echo_stack.api_root + "/echo/1",
        headers={"Content-Type": "application/octet-stream"},
        data=chunks(),
        timeout=30,
    )
    event = response.json()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_base64_response_is_decoded_for_binary_types(echo_stack: LocalStack) -> None:
    response = requests.get(
        echo_stack.api_root + "/echo/1?mode=png", headers={"Accept": "image/png"}, timeout=30
    )
    assert response.content == b"\x89PNG"


@pytest.mark.parametrize("mode", ["crash", "huge", "malformed"])
def test_function_failures_are_502_internal_server_error(echo_stack: LocalStack, mode: str) -> None:
    response = requests.get(echo_stack.api_root + f"/echo/1?mode={mode}", timeout=60)
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


# ---------------------------------------------------------------- python -m local and apikeys


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(
        tmp_path,
        "o3k_subprocess-test-key-0123456789",
        overrides="AuthorizerCacheTtl=0 KeyCacheTtl=0",
    ) as stack:
        yield stack


def test_python_m_local_serves_and_exits_0_on_sigterm(served: Served) -> None:
    url = f"{served.base_url}/stowRsListener/AE/studies"
    refused = requests.post(url, data=b"x", timeout=30)
    assert refused.status_code == 401
    accepted = requests.post(
        url,
        headers={"Authorization": "o3k_subprocess-test-key-0123456789"},
        data=b"x",
        timeout=30,
    )
    assert reached_handler(accepted)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=20) == 0
    assert not served.state_file.exists()


def apikeys(served: Served, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "dicomweb-apikeys"), "--local", "--state-file"]
    result = subprocess.run(
        [*command, str(served.state_file), *args],
        cwd=served.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_keys_created_and_revoked_with_apikeys_take_effect(served: Served) -> None:
    url = f"{served.base_url}/stowRsListener/AE/studies"
    output = apikeys(served, "create", "--label", "integration test")
    key = output.strip().splitlines()[-1]
    key_id = output.split()[2]
    assert requests.post(url, headers={"Authorization": key}, timeout=30).status_code != 401

    listing = apikeys(served, "list")
    assert key_id in listing
    assert "integration test" in listing
    assert "local dev key" in listing
    assert key not in listing

    assert f"Revoked key {key_id}" in apikeys(served, "revoke", key_id)
    assert requests.post(url, headers={"Authorization": key}, timeout=30).status_code == 401
    assert key_id not in apikeys(served, "list")


def test_scopes_set_with_apikeys_are_enforced_and_changed_without_a_restart(
    served: Served,
) -> None:
    stow = f"{served.base_url}/stowRsListener/AE/studies"
    qido = f"{served.base_url}/qido/AE/studies"
    output = apikeys(served, "create", "--label", "viewer", "--scope", "read")
    key, key_id = output.strip().splitlines()[-1], output.split()[2]
    headers = {"Authorization": key}
    assert requests.get(qido, headers=headers, timeout=30).status_code == 200
    refused = requests.post(stow, headers=headers, timeout=30)
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" in refused.headers  # a browser can read why
    assert "read" in apikeys(served, "list").split(key_id, 1)[1].splitlines()[0]

    assert "store" in apikeys(served, "scopes", key_id, "--scope", "store")
    deadline = time.monotonic() + 30  # the authorizer's caches: key list and decisions
    while requests.get(qido, headers=headers, timeout=30).status_code != 403:
        assert time.monotonic() < deadline, "the new scopes did not take effect"
        time.sleep(0.5)
    assert requests.post(stow, headers=headers, timeout=30).status_code != 403


def test_state_file_names_the_backend_and_its_data(served: Served) -> None:
    state = json.loads(served.state_file.read_text(encoding="utf-8"))
    assert state["storage"] == "local"
    assert state["data_dir"] == str(served.data_dir.resolve())
    assert state["base_url"] == served.base_url


# ---------------------------------------------------------------- per-key limits


def test_limits_set_with_apikeys_give_429_with_cors_and_spare_other_keys(served: Served) -> None:
    qido = f"{served.base_url}/qido/AE/studies"
    output = apikeys(
        served, "create", "--label", "limited", "--rate", "2", "--burst", "2", "--quota", "5"
    )
    key, key_id = output.strip().splitlines()[-1], output.split()[2]
    assert "2/s burst 2, 5/day" in output
    assert "2/s burst 2, 5/day" in apikeys(served, "list").split(key_id, 1)[1].splitlines()[0]
    headers = {"Authorization": key, "Origin": "https://viewer.example"}

    started = time.monotonic()
    burst = [requests.get(qido, headers=headers, timeout=30) for _ in range(6)]
    elapsed = time.monotonic() - started
    admitted = [r for r in burst if r.status_code == 200]
    throttled = [r for r in burst if r.status_code == 429]
    assert len(admitted) + len(throttled) == len(burst)
    assert 2 <= len(admitted) <= 2 + 2 * elapsed  # the burst, plus what the rate refilled
    assert throttled, "six requests at once went through a burst of 2"
    for response in throttled:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Retry-After"] == "1"
        assert response.json()["reason"] == "THROTTLED"

    # The other keys are on their own plans: the dev key (from before limits) has none.
    dev = {"Authorization": served.api_key}
    assert all(requests.get(qido, headers=dev, timeout=30).status_code == 200 for _ in range(8))
    preflight = requests.options(
        qido,
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert preflight.status_code != 429  # a preflight carries no key: never metered

    # Paced under the rate, the key gets exactly its quota of 5 a day, then QUOTA_EXCEEDED.
    total = len(admitted)
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the quota never ran out"
        time.sleep(0.6)
        response = requests.get(qido, headers=headers, timeout=30)
        if response.status_code == 200:
            total += 1
            continue
        assert response.status_code == 429
        if response.json()["reason"] == "QUOTA_EXCEEDED":
            break
    assert total == 5
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "UTC" in response.json()["message"]

    # Limits changed with the key tool apply without a restart; revoking ends the key.
    assert "default plan" in apikeys(served, "limits", key_id, "--default")
    deadline = time.monotonic() + 10
    while requests.get(qido, headers=headers, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the default plan did not take effect"
        time.sleep(0.5)
    apikeys(served, "revoke", key_id)
    assert requests.get(qido, headers=headers, timeout=30).status_code == 401


def test_migrate_moves_old_keys_to_the_default_plan_without_a_gap(served: Served) -> None:
    qido = f"{served.base_url}/qido/AE/studies"
    dev = {"Authorization": served.api_key}
    assert "legacy (migrate)" in apikeys(served, "list")
    assert "Migrated 1 key(s)" in apikeys(served, "migrate")
    listing = apikeys(served, "list")
    assert "legacy" not in listing and "default plan" in listing
    assert requests.get(qido, headers=dev, timeout=30).status_code == 200
    assert "Migrated 0 key(s)" in apikeys(served, "migrate")


def test_a_revoked_key_still_in_the_authorizer_cache_is_refused_by_its_missing_plan(
    tmp_path: Path,
) -> None:
    """API Gateway's decision cache still allows the key; its API key is gone: 403 with CORS."""
    with serve(
        tmp_path,
        "o3k_subprocess-test-key-0123456789",
        overrides="AuthorizerCacheTtl=300 KeyCacheTtl=0",
        extra_env={"LOCAL_WORKERS": "1"},  # one authorizer cache
    ) as stack:
        qido = f"{stack.base_url}/qido/AE/studies"
        output = apikeys(stack, "create", "--label", "soon revoked")
        key, key_id = output.strip().splitlines()[-1], output.split()[2]
        assert requests.get(qido, headers={"Authorization": key}, timeout=30).status_code == 200
        apikeys(stack, "revoke", key_id)
        deadline = time.monotonic() + 10  # the plans are re-read every second
        while (refused := requests.get(qido, headers={"Authorization": key}, timeout=30)).ok:
            assert time.monotonic() < deadline, "the revoked key's plan is still known"
            time.sleep(0.3)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "INVALID_API_KEY"
        assert refused.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------- a new key, with the caches on


def test_a_key_made_with_apikeys_works_at_once_with_the_caches_on(tmp_path: Path) -> None:
    """Default AuthorizerCacheTtl (300 s) and KeyCacheTtl (60 s): the authorizer has the key
    list cached when the key is made, and looks the unknown key up rather than refusing it."""
    dev_key = "o3k_subprocess-test-key-0123456789"
    with serve(tmp_path, dev_key, extra_env={"LOCAL_WORKERS": "1"}) as stack:
        qido = f"{stack.base_url}/qido/AE/studies"
        assert requests.get(qido, headers={"Authorization": dev_key}, timeout=30).ok
        output = apikeys(stack, "create", "--label", "made while cached")
        assert "Usable now" in output
        key = output.strip().splitlines()[-1]
        assert requests.get(qido, headers={"Authorization": key}, timeout=30).status_code == 200


def test_a_refusal_is_kept_for_the_authorizer_ttl_as_api_gateway_keeps_it(tmp_path: Path) -> None:
    """A key presented before it exists is refused, and the refusal cached by token: why the
    key tool shows a key only once the authorizers can see it."""
    late = "o3k_presented-before-it-was-stored-0123"
    with serve(
        tmp_path,
        "o3k_subprocess-test-key-0123456789",
        overrides="AuthorizerCacheTtl=300 KeyCacheTtl=0",
        extra_env={"LOCAL_WORKERS": "1"},
    ) as stack:
        qido = f"{stack.base_url}/qido/AE/studies"
        assert requests.get(qido, headers={"Authorization": late}, timeout=30).status_code == 401
        store = FileKeyStore(stack.data_dir / SECRETS_DIR / API_KEYS_FILE)
        store.add(keys.entry_for(late, "late"))
        time.sleep(keys.REFRESH_INTERVAL)
        refused = requests.get(qido, headers={"Authorization": late}, timeout=30)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "ApiKey"


# ---------------------------------------------------------------- the dev key


def test_starts_without_a_given_key_reuse_one_dev_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shown = []
    for _ in range(2):
        with LocalStack(port=0, data_dir=data_dir) as stack:
            shown.append(stack.api_key)
            qido = f"{stack.base_url}/qido/AE/studies"
            assert requests.get(qido, headers={"Authorization": stack.api_key}, timeout=30).ok
    ring = FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).load()
    dev_keys = [entry for entry in ring if entry.label == DEV_KEY_LABEL]
    assert len(dev_keys) == 1
    assert shown[0] == shown[1] and dev_keys[0].sha256 == keys.digest(shown[0])
    kept = data_dir / SECRETS_DIR / DEV_KEY_FILE
    assert kept.read_text(encoding="ascii") == shown[0]
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_given_key_is_installed_once_beside_the_kept_dev_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    given = "o3k_operator-chosen-key-0123456789"
    for api_key in (None, given, given):
        with LocalStack(port=0, api_key=api_key, data_dir=data_dir):
            pass
    ring = FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).load()
    assert sorted(entry.label for entry in ring) == [DEV_KEY_LABEL, DEV_KEY_LABEL]
    assert keys.digest(given) in {entry.sha256 for entry in ring}


# ---------------------------------------------------------------- the access log


def test_the_access_log_holds_no_query_values_or_keys(
    local_stack: LocalStack, api_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local.server")
    url = f"{local_stack.base_url}/qido/AE/studies?PatientName=DOE%5EJANE&PatientID=PID-4711"
    assert requests.get(url, headers=api_headers, timeout=30).status_code == 200
    requests.get(url + "&x=" + "a" * 20_000, headers=api_headers, timeout=30)  # a 431
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/qido/AE/studies" in logged
    for secret in ("DOE", "PID-4711", local_stack.api_key):
        assert secret not in logged
