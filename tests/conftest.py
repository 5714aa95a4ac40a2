"""Shared fixtures.

``local_stack``: the local stack on its default backend (files and SQLite in a temporary
data directory), started in-process on a free port, once per test session (once per
pytest-xdist worker), stopped at the end. ``moto_stack``: the same on moto (cloud
fidelity), for a smoke test per route. Use ``stack.base_url``
(``http://127.0.0.1:PORT/o3-dpacs-wado``) and ``api_headers``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local import moto_fixes
from local.stack import LocalStack
from shared import keys

moto_fixes.install()  # every test on moto (in-process or the stack's server)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local stack (embedded backend), with a fresh API key in ``.api_key``."""
    key, _ = keys.generate("pytest")
    data_dir = tmp_path_factory.mktemp("local-data")
    with LocalStack(port=0, api_key=key, data_dir=data_dir) as stack:
        yield stack


@pytest.fixture(scope="session")
def moto_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local stack on moto. One stack runs at a time per process: the handlers read the
    process environment, so the moto stack runs only inside its own tests' scope; and moto's
    backend is one per process, so no test starts a second one (its tables exist). Its
    data directory holds only the change feed's events; studies are stable after 2 s."""
    key, _ = keys.generate("pytest-moto")
    with LocalStack(
        port=0,
        api_key=key,
        storage="moto",
        data_dir=tmp_path_factory.mktemp("moto-data"),
        parameter_overrides={"StudyStableSeconds": "2"},
    ) as stack:
        yield stack


@pytest.fixture
def api_headers(local_stack: LocalStack) -> dict[str, str]:
    """Headers carrying the local stack's API key."""
    return {"Authorization": local_stack.api_key}
