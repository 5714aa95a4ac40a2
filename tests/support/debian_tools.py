"""Command-line tools from Debian packages, installed for the tests that need them.

``make test`` runs ``python -m tests.support.debian_tools`` before pytest starts: every
package of :data:`PACKAGES` whose binary is missing is installed in one ``apt-get install``
(as root on a Debian-like machine with ``apt-get``, a fresh CI runner), so parallel test
workers never run apt. ``require_debian_tool("dciodvfy", "dicom3tools")`` then returns the
binary's path; if it is still missing (a test run without ``make``), it installs the package
itself under a lock file held across processes. When nothing can install it, the calling
test is skipped with the reason, so a developer machine without root still runs the rest of
the suite; in CI (``CI=true``) it fails instead: a check that cannot run must not pass.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
UPDATE_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 1200
LOCK_WAIT_S = 1800.0

# binary (or an absolute path the package installs) -> Debian package, for every tool a
# test runs.
PACKAGES: dict[str, str] = {
    "dcmdump": "dcmtk",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "dciodvfy": "dicom3tools",
    "gdcmconv": "libgdcm-tools",
    "opj_decompress": "libopenjp2-tools",
    "openssl": "openssl",
    "Orthanc": "orthanc",
    ORTHANC_DICOMWEB_PLUGIN: "orthanc-dicomweb",
}

# Wait for a concurrent dpkg (unattended upgrades) instead of failing. apt's lists lock is
# not covered by this option: the lock file below serialises this project's own apt runs.
_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")
LOCK_FILE = Path(tempfile.gettempdir()) / "dicomweb-pacs-apt.lock"

_lock = threading.Lock()
_failed: dict[str, str] = {}  # package -> reason, so a failed install is not retried per test


def _find(binary: str) -> str | None:
    """The binary on the PATH (or in /usr/sbin), or an absolute path that exists."""
    if binary.startswith("/"):
        return binary if Path(binary).exists() else None
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")


def require_debian_tool(binary: str, package: str) -> str:
    """Path of ``binary`` (a name, or an absolute path the package installs); install Debian
    ``package`` if missing and possible, else skip."""
    found = _find(binary)
    if found:
        return found
    with _lock:
        found = _find(binary)
        if found:
            return found
        if package in _failed:
            cannot_run(_failed[package])
        with apt_lock():
            found = _find(binary)
            reason = "" if found else install([package])
        found = _find(binary)
        if found:
            return found
        _failed[package] = reason or f"{binary} not found after installing Debian package {package}"
        cannot_run(_failed[package])
    raise AssertionError("unreachable")  # pragma: no cover


def cannot_run(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where every check must run."""
    if _in_ci():
        pytest.fail(f"CI=true and the check cannot run: {reason}")
    pytest.skip(reason)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@contextmanager
def apt_lock() -> Iterator[None]:
    """Hold a lock file shared by every process of this project that runs apt-get."""
    with LOCK_FILE.open("a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK_FILE} held for {LOCK_WAIT_S:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(packages: list[str]) -> str:
    """Install ``packages`` with apt-get (the caller holds the lock); '' or why it cannot."""
    names = " ".join(packages)
    apt = shutil.which("apt-get")
    if apt is None:
        return f"needs Debian package {names}: apt-get not available on this machine"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"needs Debian package {names}: not installed and not running as root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [apt, *_LOCK_WAIT, "install", "-y", "-q", "--no-install-recommends", *packages]
    if not _run(command, env, INSTALL_TIMEOUT_S):
        return ""
    # The package lists are missing or stale (a fresh machine): refresh them, then retry.
    error = _run([apt, *_LOCK_WAIT, "update", "-q"], env, UPDATE_TIMEOUT_S)
    if error:
        return f"needs Debian package {names}: apt-get update failed ({error})"
    error = _run(command, env, INSTALL_TIMEOUT_S)
    if error:
        return f"needs Debian package {names}: apt-get install failed ({error})"
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


def missing_packages() -> list[str]:
    """Packages of :data:`PACKAGES` whose binary is not on the PATH, in a stable order."""
    return sorted({package for binary, package in PACKAGES.items() if not _find(binary)})


def main() -> int:
    """Install what the tests need before they start (``make test``); exit 1 only in CI."""
    missing = missing_packages()
    if not missing:
        return 0
    print(  # noqa: T201
        f"installing Debian packages for the tests: {' '.join(missing)}", flush=True
    )
    started = time.monotonic()
    with apt_lock():
        missing = missing_packages()
        reason = install(missing) if missing else ""
    if reason:
        print(reason, file=sys.stderr)  # noqa: T201
        if _in_ci():
            return 1
        print("the tests that need them will be skipped", file=sys.stderr)  # noqa: T201
        return 0
    print(f"installed in {time.monotonic() - started:.0f} s", flush=True)  # noqa: T201
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
