"""``python -m local`` started as a process of its own, for tests that need a whole stack to
themselves (its own moto, its own data) or that send it signals."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.template import PROJECT_ROOT

START_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    state_file: Path
    log: Path
    api_key: str
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/o3-dpacs-wado"


@contextlib.contextmanager
def served(
    workdir: Path, api_key: str, overrides: str = "", extra_env: dict[str, str] | None = None
) -> Iterator[Served]:
    """Start ``python -m local --quiet`` on a free port; kill it on exit. Output goes to a
    file (a pipe nobody reads would fill up and stall the server)."""
    port = free_port()
    state_file, log, data_dir = workdir / "state.json", workdir / "local.log", workdir / "data"
    # Not what an in-process stack of this worker pinned in the environment (a moto stack's
    # DICOMWEB_STORAGE and endpoints would make this one keep its data in memory).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env = {
        **inherited,
        "DICOMWEB_STORAGE": "local",
        "DICOMWEB_DATA_DIR": str(data_dir),
        "PORT": str(port),
        "DICOMWEB_API_KEY": api_key,
        "LOCAL_PARAMETER_OVERRIDES": overrides,
        "LOCAL_STACK_STATE": str(state_file),
        **(extra_env or {}),
    }
    state_file.unlink(missing_ok=True)  # a stale one, left by a killed server
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "local", "--quiet"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"python -m local did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    try:
        yield Served(process, port, state_file, log, api_key, data_dir)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
