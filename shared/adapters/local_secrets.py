"""Secrets of the embedded backend: random keys in files under the data directory.

What Secrets Manager holds in AWS (the anonymization key, the URL-signing key) is a file of
32 random bytes here, created on first use by whichever process gets there first (an
exclusive link, so concurrent workers agree on one value), readable by the owner only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def secret(path: Path) -> bytes:
    """The secret in ``path``, created if absent."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_bytes(secrets.token_hex(32).encode("ascii"))
    temporary.chmod(0o600)
    with contextlib.suppress(FileExistsError):
        os.link(temporary, path)  # fails if another process made it first: keep theirs
    temporary.unlink()
    return path.read_bytes()
