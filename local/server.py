"""The local API's HTTP/1.1 server: requests read off the socket, answered by the gateway.

:class:`ApiServer` is a threading HTTP server whose handler reads each request's head and
body with :mod:`local.http1` (API Gateway's 10,240-byte head limit and 10 MB body limit,
``Content-Length`` or chunked), hands a :class:`~local.api_gateway.Request` to the
:class:`~local.api_gateway.Gateway` and writes its answer. Errors the front end answers
itself (a malformed head, 431, broken framing) are JSON ``{"message": ...}`` with
``Connection: close``; after answering before the whole request was read, the server drains
what the client still sends, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from local import http1
from local.api_gateway import API_PAYLOAD_LIMIT, GatewayError, HttpResponse, Request

logger = logging.getLogger(__name__)

#: What is read and dropped at most after an early answer, and for how long.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 2.0
#: A body up to this size leaves in the same write as the head.
_WITH_HEAD_BYTES = 64 * 1024


def _loggable(request_line: str) -> str:
    """The request line for the access log: without the query string (QIDO values name
    patients), at most 200 characters."""
    words = request_line.rstrip("\r\n").split(" ")
    if len(words) > 1:
        words[1] = words[1].split("?", 1)[0]
    return " ".join(words)[:200]


def _as_gateway_host(
    headers: list[tuple[str, str]], address: tuple[Any, ...]
) -> list[tuple[str, str]]:
    """Host as API Gateway passes it: its own authority, whatever the client sent.

    (dicomweb-client, for one, sends ``Host`` without the port.)
    """
    host = f"{address[0]}:{address[1]}"
    return [(k, v) for k, v in headers if k.lower() != "host"] + [("Host", host)]


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


class Answering(Protocol):
    """What answers the requests the server reads (a :class:`~local.api_gateway.Gateway`)."""

    def handle(self, request: Request) -> HttpResponse:
        """The answer to one request."""
        ...

    def gateway_response(self, error: GatewayError, request_id: str) -> HttpResponse:
        """The answer API Gateway gives itself for ``error``."""
        ...


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    # A large body goes out in a second write after the head: without TCP_NODELAY a
    # keep-alive client's delayed ACK holds it back 40 ms (Nagle), whatever the handler's
    # speed. A small one shares the head's write (one segment, one wake-up of the client).
    disable_nagle_algorithm = True
    #: The Date header of the current second (second, value), shared by the handlers.
    _date: tuple[int, str] = (0, "")
    timeout = 30  # seconds a client may stay silent (a declared body that never comes)
    #: Answered before the whole request was read: drain what follows before closing.
    _unread = False
    #: The head being written (``BaseHTTPRequestHandler`` makes it on the first line).
    _headers_buffer: list[bytes]

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
        self._end_headers_with(response.body if self.command != "HEAD" else b"")

    def _end_headers_with(self, body: bytes) -> None:
        """End the head and send ``body``: with the head in one write when it is small."""
        if len(body) > _WITH_HEAD_BYTES or self.request_version == "HTTP/0.9":
            self.end_headers()
            if body:
                self.wfile.write(body)
            return
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(body)
        self.flush_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header's value; for now, formatted once a second."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        cached = self._date
        if cached[0] != second:
            cached = (second, super().date_time_string(second))
            _RequestHandler._date = cached
        return cached[1]

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to logging instead of stderr."""
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to a gateway (given at once, or once the port is known: the
    environment of the functions names the server's own address).

    Examples
    --------
    >>> server = ApiServer(("127.0.0.1", 0), Gateway(template, runtime.invoke))
    >>> threading.Thread(target=server.serve_forever, daemon=True).start()
    >>> requests.get(f"http://127.0.0.1:{server.port}/o3-dpacs-wado/wado").status_code
    401
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Answering | None) -> None:
        self._gateway = gateway
        super().__init__(address, _RequestHandler)

    @property
    def gateway(self) -> Answering:
        """The gateway answering requests."""
        if self._gateway is None:
            raise RuntimeError("the API server has no gateway yet")
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: Answering) -> None:
        self._gateway = gateway

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])
