"""Part 10 files in S3."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterable, Iterator
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

    def get(self, key: str) -> bytes:
        """The whole object (callers check its size first)."""
        try:
            reply = self._client.get_object(Bucket=self._bucket, Key=key)
            data: bytes = reply["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return data

    def chunks(self, key: str, size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        """The object as a stream of chunks (bounded memory)."""
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
            while chunk := body.read(size):
                yield chunk
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def presign_get(
        self, key: str, *, expires: int, content_type: str, filename: str | None = None
    ) -> str:
        """A short-lived SigV4 URL to GET the object, with the response headers set."""
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "ResponseContentType": content_type,
        }
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires
        )
        return url

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Write a body of any size from chunks with a multipart upload (parts of 8 MiB)."""
        part_size = 8 * 1024 * 1024
        try:
            upload = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        try:
            for chunk in chunks:
                buffer += chunk
                while len(buffer) >= part_size:
                    self._upload_part(key, upload_id, parts, bytes(buffer[:part_size]))
                    del buffer[:part_size]
            if buffer or not parts:
                self._upload_part(key, upload_id, parts, bytes(buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except (BotoCoreError, ClientError) as exc:
            self._abort(key, upload_id)
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _upload_part(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], data: bytes
    ) -> None:
        number = len(parts) + 1
        reply = self._client.upload_part(
            Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        parts.append({"ETag": reply["ETag"], "PartNumber": number})

    def _abort(self, key: str, upload_id: str) -> None:
        # On failure the bucket's lifecycle rule aborts the upload after a day anyway.
        with contextlib.suppress(BotoCoreError, ClientError):
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    def delete(self, key: str) -> None:
        """Delete an object (used to remove the copy of an instance the index refused)."""
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
