"""Secrets of the embedded backend: random keys in files under the data directory.

What Secrets Manager holds in AWS (the anonymization key, the URL-signing key) is a file of
32 random bytes here, created on first use by whichever process gets there first (an
exclusive link, so concurrent workers agree on one value), readable by the owner only.
The local stack keeps its dev API key the same way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def _random() -> bytes:
    return secrets.token_hex(32).encode("ascii")


def secret(path: Path, generate: Callable[[], bytes] = _random) -> bytes:
    """The secret in ``path``, created from ``generate()`` (32 random bytes in hex by
    default) if absent."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_bytes(generate())
    temporary.chmod(0o600)
    with contextlib.suppress(FileExistsError):
        os.link(temporary, path)  # fails if another process made it first: keep theirs
    temporary.unlink()
    return path.read_bytes()


class FileSecret:
    """A secret of the embedded backend (port :class:`shared.ports.Secret`): the file
    ``path``, created on first use, read once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: bytes | None = None

    def value(self) -> bytes:
        """The secret's bytes (created if absent)."""
        if self._value is None:
            self._value = secret(self.path)
        return self._value
