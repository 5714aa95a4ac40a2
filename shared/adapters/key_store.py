"""API key digests: in one Secrets Manager secret (AWS, moto) or a file (embedded backend).

Both hold the whole key list as one document (``keys.dump_secret``); adding and revoking a
key read it, change it and write it back.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from shared import keys


class _KeyList(ABC):
    """add/revoke over a store's load/save of the whole list."""

    @abstractmethod
    def load(self) -> list[keys.KeyEntry]:
        """Return the active key entries."""

    @abstractmethod
    def save(self, entries: list[keys.KeyEntry]) -> None:
        """Replace the key list."""

    def add(self, entry: keys.KeyEntry) -> None:
        """Add one key entry."""
        self.save([*self.load(), entry])

    def revoke(self, key_id: str) -> bool:
        """Remove the entry with this id; return whether one was removed."""
        entries = self.load()
        kept = [e for e in entries if e.id != key_id]
        if len(kept) == len(entries):
            return False
        self.save(kept)
        return True


class SecretsManagerKeyStore(_KeyList):
    """Read and change the key list held in a Secrets Manager secret."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def load(self) -> list[keys.KeyEntry]:
        """Return the active key entries."""
        value = self._client.get_secret_value(SecretId=self._secret_id)
        return keys.parse_secret(value.get("SecretString", ""))

    def save(self, entries: list[keys.KeyEntry]) -> None:
        """Replace the key list (a new secret version)."""
        self._client.put_secret_value(
            SecretId=self._secret_id, SecretString=keys.dump_secret(entries)
        )


class FileKeyStore(_KeyList):
    """The key list of the embedded backend: a JSON file, replaced atomically on change."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> list[keys.KeyEntry]:
        """Return the active key entries (none when the file does not exist)."""
        try:
            return keys.parse_secret(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []

    def save(self, entries: list[keys.KeyEntry]) -> None:
        """Replace the key list."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        temporary.write_text(keys.dump_secret(entries), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(self._path)
