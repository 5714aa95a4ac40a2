"""Hypothesis over the emulator's edge, on the wire: request heads of random shapes and sizes
around API Gateway's 10,240 bytes, chunked framing with random and huge sizes, lying and
truncated bodies. Every connection ends with an HTTP answer below 500, or a clean close,
within seconds; a declared size is never allocated before it is checked.
"""

from __future__ import annotations

import contextlib
import socket
import time
import tracemalloc

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.stack import LocalStack

pytestmark = pytest.mark.integration

ANSWER_WITHIN_S = 10.0
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
STOW = b"/o3-dpacs-wado/stowRsListener/AE/studies"


def exchange(stack: LocalStack, data: bytes) -> tuple[bytes, float]:
    """Send, half-close, read to the end: (what came back, seconds taken)."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=ANSWER_WITHIN_S) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received, time.monotonic() - started


def answered_well(received: bytes, elapsed: float) -> None:
    assert elapsed < ANSWER_WITHIN_S
    if received:  # else a clean close: a request that never finished (the client went away)
        assert received.startswith(b"HTTP/1.1 "), received[:120]
        assert int(received[9:12]) < 500, received[:300]


def still_serving(stack: LocalStack) -> None:
    response = requests.get(
        f"{stack.base_url}/qido/AE/studies", headers={"Authorization": stack.api_key}, timeout=30
    )
    assert response.status_code == 200


_names = st.text("abcdefghijklmnopqrstuvwxyz-XYZ0123456789", min_size=1, max_size=30)
_fields = st.lists(
    st.tuples(_names, st.integers(0, 6000), st.sampled_from(b"av :\xff\t")), max_size=8
)
_lines = st.sampled_from(
    [
        b"GET /o3-dpacs-wado/qido/AE/studies HTTP/1.1",
        b"POST " + STOW + b" HTTP/1.1",
        b"GET /o3-dpacs-wado/qido/AE/studies?q=" + b"x" * 10_300 + b" HTTP/1.1",
        b"GET / HTTP/1.0",
        b"BREW /pot HTTP/1.1",
        b"GET /",
        b"\x00\xff garbage",
    ]
)


@FUZZ
@given(line=_lines, fields=_fields, junk=st.binary(max_size=64))
def test_random_heads_get_an_answer_or_a_clean_close(
    local_stack: LocalStack, line: bytes, fields: list[tuple[str, int, int]], junk: bytes
) -> None:
    head = line + b"\r\n"
    head += b"".join(b"%s: %s\r\n" % (n.encode(), bytes([f]) * size) for n, size, f in fields)
    answered_well(*exchange(local_stack, head + junk + b"\r\n\r\n"))


_sizes = st.one_of(
    st.integers(0, 5000).map(lambda n: b"%x" % n),
    st.integers(10 * 1024 * 1024 - 10, 2**64 - 1).map(lambda n: b"%x" % n),
    st.sampled_from([b"", b"-1", b"0x10", b"1_0", b" 5", b"g", b"f" * 40, b"+3"]),
)


@FUZZ
@given(
    chunks=st.lists(st.tuples(_sizes, st.binary(max_size=300), st.booleans()), max_size=5),
    end=st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"0\r\nX: 1\r\n\r\n"]),
    authorized=st.booleans(),
)
def test_random_chunked_framing_gets_an_answer_or_a_clean_close(
    local_stack: LocalStack,
    chunks: list[tuple[bytes, bytes, bool]],
    end: bytes,
    authorized: bool,
) -> None:
    body = b"".join(
        size + b"\r\n" + data + (b"\r\n" if crlf else b"") for size, data, crlf in chunks
    )
    key = b"Authorization: " + local_stack.api_key.encode() + b"\r\n" if authorized else b""
    request = (
        b"POST " + STOW + b" HTTP/1.1\r\nHost: h\r\n" + key + b"Content-Type: application/dicom\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body + end
    )
    answered_well(*exchange(local_stack, request))


@FUZZ
@given(
    declared=st.one_of(st.integers(0, 20_000), st.integers(10 * 1024 * 1024, 2**63)),
    sent=st.integers(0, 20_000),
    keep_alive=st.booleans(),
)
def test_lying_content_lengths_get_an_answer_or_a_clean_close(
    local_stack: LocalStack, declared: int, sent: int, keep_alive: bool
) -> None:
    request = (
        b"POST " + STOW + b" HTTP/1.1\r\nHost: h\r\nContent-Type: application/dicom\r\n"
        b"Authorization: " + local_stack.api_key.encode() + b"\r\n"
        b"Content-Length: %d\r\n"
        % declared
        + (b"" if keep_alive else b"Connection: close\r\n")
        + b"\r\n"
        + b"\0" * sent
    )
    answered_well(*exchange(local_stack, request))


def test_the_edge_still_serves_after_the_hunt(local_stack: LocalStack) -> None:
    still_serving(local_stack)


@pytest.mark.parametrize("declared", [b"7fffffff", b"ffffffffffff"])
def test_a_huge_declared_chunk_allocates_nothing_of_its_size(
    local_stack: LocalStack, declared: bytes
) -> None:
    request = (
        b"POST " + STOW + b" HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: " + local_stack.api_key.encode() + b"\r\n\r\n" + declared + b"\r\nabc"
    )
    tracemalloc.start()
    try:
        received, elapsed = exchange(local_stack, request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received.startswith(b"HTTP/1.1 413 ")
    assert elapsed < ANSWER_WITHIN_S
    assert peak < 32 * 1024 * 1024
