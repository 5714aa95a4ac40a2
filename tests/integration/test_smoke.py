"""``dicomweb-smoke`` against the local stack, as an operator runs it after
``sam deploy``: every route passes, and the same command fails (exit 1) when they do not."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from tests.support.served import Served, served

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    key, _ = keys.generate("smoke")
    with served(tmp_path_factory.mktemp("smoke"), key) as running:
        yield running


def _smoke(base_url: str, key: str) -> tuple[int, dict[str, Any]]:
    smoke = Path(sys.executable).parent / "dicomweb-smoke"
    proc = subprocess.run(
        [smoke, "--url", base_url, "--key", key, "--json"],
        cwd=tempfile.gettempdir(),  # any directory
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_every_route_passes_against_the_local_stack(stack: Served) -> None:
    code, report = _smoke(stack.base_url, stack.api_key)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert failed == [], failed
    assert code == 0
    assert report["passed"] == len(report["checks"]) >= 40


def test_a_second_run_stores_the_same_instance_again_and_passes(stack: Served) -> None:
    code, _ = _smoke(stack.base_url, stack.api_key)
    assert code == 0
    objects = list(Path(stack.data_dir, "objects").rglob("*.dcm"))
    assert len(objects) == 1, "the smoke instance is one object however often it runs"


def test_a_wrong_key_fails_the_smoke_test_with_exit_1(stack: Served) -> None:
    code, report = _smoke(stack.base_url, "o3k_not-a-key-of-this-archive")
    assert code == 1
    verdicts = {c["name"]: c["passed"] for c in report["checks"]}
    assert not verdicts["STOW-RS store"]
    assert not verdicts["WADO-RS study"]
    assert verdicts["401 without a key"]  # these need no key: they still pass
    assert verdicts["OPTIONS preflight (QIDO)"]


def test_an_unreachable_archive_fails_every_check(tmp_path: Path) -> None:
    code, report = _smoke("http://127.0.0.1:9/o3-dpacs-wado", "o3k_x")
    assert code == 1
    assert report["failed"] == len(report["checks"])
