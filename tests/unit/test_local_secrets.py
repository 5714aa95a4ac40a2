"""Secrets of the embedded backend: created once, private, the same for every process."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.adapters.local_secrets import secret


def test_a_secret_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "key"
    first = secret(path)
    assert len(first) == 64 and secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_first_uses_agree_on_one_value(tmp_path: Path) -> None:
    path = tmp_path / "key"
    with ThreadPoolExecutor(16) as pool:
        values = set(pool.map(lambda _: secret(path), range(64)))
    assert len(values) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
