"""tests/support/debian_tools.py: Debian tools installed once before the tests, apt never run
twice at once."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from tests.support import debian_tools


def _hold(lock_file: str, log: str, hold_s: float) -> None:
    debian_tools.LOCK_FILE = Path(lock_file)
    with debian_tools.apt_lock():
        start = time.monotonic()
        time.sleep(hold_s)
        with Path(log).open("a") as out:
            out.write(f"{start} {time.monotonic()}\n")


def test_the_apt_lock_holds_across_processes(tmp_path: Path) -> None:
    """Two processes (two xdist workers) never run apt at the same time."""
    log = tmp_path / "spans"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_hold, args=(str(tmp_path / "apt.lock"), str(log), 0.4))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two holders of the apt lock overlapped"


def test_main_installs_every_missing_package_in_one_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(debian_tools, "LOCK_FILE", tmp_path / "apt.lock")
    monkeypatch.setattr(
        debian_tools, "PACKAGES", {"no-such-tool-a": "pkg-a", "no-such-tool-b": "pkg-b"}
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(debian_tools, "install", lambda packages: calls.append(packages) or "")
    assert debian_tools.main() == 0
    assert calls == [["pkg-a", "pkg-b"]]


def test_main_installs_nothing_when_every_tool_is_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(debian_tools, "PACKAGES", {"sh": "dash"})
    monkeypatch.setattr(debian_tools, "install", lambda packages: pytest.fail("apt-get was run"))
    assert debian_tools.main() == 0


@pytest.mark.parametrize(("ci", "status"), [("true", 1), ("", 0)])
def test_a_failed_install_fails_only_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, status: int
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(debian_tools, "LOCK_FILE", tmp_path / "apt.lock")
    monkeypatch.setattr(debian_tools, "PACKAGES", {"no-such-tool-a": "pkg-a"})
    monkeypatch.setattr(debian_tools, "install", lambda packages: "not running as root")
    assert debian_tools.main() == status


def test_every_tool_a_test_requires_is_installed_before_the_tests() -> None:
    """Each ``require_debian_tool(binary, package)`` of the suite names a package that
    ``make test`` installs first, so no test worker runs apt on a fresh machine."""
    import re

    root = Path(__file__).resolve().parents[2]
    wanted = set()
    for path in (root / "tests").rglob("test_*.py"):
        for package in re.findall(r'require_debian_tool\("[^"]+", "([^"]+)"\)', path.read_text()):
            wanted.add(package)
    assert wanted, "no require_debian_tool call found"
    assert wanted <= set(debian_tools.PACKAGES.values())
