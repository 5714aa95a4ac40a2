"""API key digests kept in one Secrets Manager secret."""

from __future__ import annotations

from typing import Any

from shared import keys


class SecretsManagerKeyStore:
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
