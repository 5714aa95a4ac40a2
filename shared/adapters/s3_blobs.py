"""Part 10 files in S3."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable


class S3BlobStore:
    """One object per stored instance; integrity checked by S3 with a SHA-256 checksum."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        """Store a Part 10 file."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType="application/dicom",
                ChecksumSHA256=checksum,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def delete(self, key: str) -> None:
        """Delete an object (used to remove the copy of an instance the index refused)."""
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
