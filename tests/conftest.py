"""Shared fixtures.

``local_stack``: the local stack (moto + API Gateway emulator) started in-process on a free
port, once per test session (once per pytest-xdist worker), stopped at the end. Use
``local_stack.base_url`` (``http://127.0.0.1:PORT/o3-dpacs-wado``) and ``api_headers``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import LocalStack
from shared import keys


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The local stack, with a fresh API key in ``.api_key``."""
    key, _ = keys.generate("pytest")
    with LocalStack(port=0, api_key=key) as stack:
        yield stack


@pytest.fixture
def api_headers(local_stack: LocalStack) -> dict[str, str]:
    """Headers carrying the local stack's API key."""
    return {"Authorization": local_stack.api_key}
