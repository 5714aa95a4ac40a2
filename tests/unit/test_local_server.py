"""The HTTP server on its own, on loopback: what it reads off the socket reaches the gateway
as a Request (Host as API Gateway's own), and what it answers itself never does."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from local.api_gateway import GatewayError, HttpResponse, Request
from local.server import ApiServer


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the server closes the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


class FakeGateway:
    """Answers 200 with what it was asked; remembers each request and gateway response."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []

    def handle(self, request: Request) -> HttpResponse:
        self.requests.append(request)
        return HttpResponse(200, [("Content-Type", "text/plain")], request.body[::-1])

    def gateway_response(self, error: GatewayError, request_id: str) -> HttpResponse:
        self.errors.append(error.response_type)
        return HttpResponse(413, [("Content-Type", "application/json")], b"{}")


@pytest.fixture
def served() -> Iterator[tuple[ApiServer, FakeGateway]]:
    gateway = FakeGateway()
    server = ApiServer(("127.0.0.1", 0), gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, gateway
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_request_reaches_the_gateway_as_read(served: tuple[ApiServer, FakeGateway]) -> None:
    server, gateway = served
    response = requests.post(
        f"http://127.0.0.1:{server.port}/a/b?x=1",
        data=b"abc",
        headers={"Host": "elsewhere", "X-Test": "1"},
        timeout=10,
    )
    assert (response.status_code, response.content) == (200, b"cba")
    (request,) = gateway.requests
    assert (request.method, request.raw_path, request.query) == ("POST", "/a/b", "x=1")
    assert ("X-Test", "1") in request.headers
    assert request.header("Host") == f"127.0.0.1:{server.port}"
    assert request.source_ip == "127.0.0.1"


def test_a_declared_body_over_10_mb_is_refused_unread(
    served: tuple[ApiServer, FakeGateway],
) -> None:
    server, gateway = served
    answer = _exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    assert gateway.errors == ["REQUEST_TOO_LARGE"]
    assert gateway.requests == []


def test_a_malformed_head_is_answered_by_the_server_alone(
    served: tuple[ApiServer, FakeGateway],
) -> None:
    server, gateway = served
    answer = _exchange(server.port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"Connection: close" in head
    assert json.loads(body) == {"message": "Bad header field"}
    assert gateway.requests == [] and gateway.errors == []
