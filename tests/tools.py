"""Command-line tools from Debian packages, installed on demand for tests that need them.

``require_debian_tool("dciodvfy", "dicom3tools")`` returns the binary's path. When the binary
is missing and the test runs as root on a Debian-like machine with ``apt-get`` (a fresh CI
runner), the package is installed (``apt-get update`` once per session, then
``apt-get install -y --no-install-recommends``), each step under a timeout. Otherwise the
calling test is skipped with the reason, so a developer machine without root still runs the
rest of the suite; in CI (``CI=true``) it fails instead: a check that cannot run must not pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

UPDATE_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600

# Wait for a concurrent apt/dpkg (another xdist worker, unattended upgrades) instead of failing.
_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=120")

_lock = threading.Lock()
_updated = False
_failed: dict[str, str] = {}  # package -> reason, so a failed install is not retried per test


def require_debian_tool(binary: str, package: str) -> str:
    """Path of ``binary``; install Debian ``package`` if missing and possible, else skip."""
    found = shutil.which(binary)
    if found:
        return found
    with _lock:
        found = shutil.which(binary)
        if found:
            return found
        if package in _failed:
            _cannot_run(_failed[package])
        reason = _install(package)
        found = shutil.which(binary)
        if found:
            return found
        _failed[package] = reason or f"{binary} not found after installing Debian package {package}"
        _cannot_run(_failed[package])
    raise AssertionError("unreachable")  # pragma: no cover


def _cannot_run(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where every check must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the check cannot run: {reason}")
    pytest.skip(reason)


def _install(package: str) -> str:
    """Install ``package`` with apt-get; return a skip reason ('' on success)."""
    global _updated  # noqa: PLW0603 - once-per-session state
    apt = shutil.which("apt-get")
    if apt is None:
        return f"needs Debian package {package}: apt-get not available on this machine"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"needs Debian package {package}: not installed and not running as root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        error = _run([apt, *_LOCK_WAIT, "update"], env, UPDATE_TIMEOUT_S)
        if error:
            return f"needs Debian package {package}: apt-get update failed ({error})"
        _updated = True
    error = _run(
        [apt, *_LOCK_WAIT, "install", "-y", "--no-install-recommends", package],
        env,
        INSTALL_TIMEOUT_S,
    )
    if error:
        return f"needs Debian package {package}: apt-get install failed ({error})"
    return ""


def _run(command: list[str], env: dict[str, str], timeout: float) -> str:
    """Run an apt-get step without a terminal; return '' or a short error description."""
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    except OSError as exc:
        return str(exc)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"exit {done.returncode}: {tail[0][:200]}"
    return ""


_VALUES = (
    (re.compile(r"<[^>]*>"), "<>"),
    (re.compile(r'"[^"]*"'), '""'),
    (re.compile(r"\b[0-9]+(\.[0-9]+)*\b"), "#"),
)


def dciodvfy_errors(dciodvfy: str, path: Path) -> set[str]:
    """dciodvfy's error lines with values stripped (values differ after de-identification)."""
    done = subprocess.run(
        [dciodvfy, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    errors = set()
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("Error"):
            stripped = line
            for pattern, replacement in _VALUES:
                stripped = pattern.sub(replacement, stripped)
            errors.add(stripped)
    return errors
