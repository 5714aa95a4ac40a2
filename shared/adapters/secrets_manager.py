"""A secret held in AWS Secrets Manager (port :class:`shared.ports.Secret`).

The client is made on first read, so a function that never needs the secret never builds
one; the value is read once and kept for the life of the container.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable


class SecretsManagerSecret:
    """The ``SecretString`` of one secret, as bytes."""

    def __init__(self, client: Callable[[], Any], secret_id: str, name: str) -> None:
        """``client`` makes the Secrets Manager client; ``name`` says what the secret is
        in the error raised when it cannot be read."""
        self._client = client
        self._secret_id = secret_id
        self._name = name
        self._value: bytes | None = None

    def value(self) -> bytes:
        """The secret's bytes; ``StorageUnavailable`` when Secrets Manager does not answer."""
        if self._value is None:
            try:
                reply = self._client().get_secret_value(SecretId=self._secret_id)
            except (BotoCoreError, ClientError) as exc:
                raise StorageUnavailable(f"{self._name} is unavailable") from exc
            self._value = str(reply["SecretString"]).encode("utf-8")
        return self._value
