"""Part 10 files in S3 (port :class:`shared.ports.ObjectStore`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable
from shared.ports import ObjectInfo

#: Managed transfers (download of an upload, server-side copy) in parts of this size.
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


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

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """A ranged GetObject."""
        if length <= 0:
            return b""
        try:
            reply = self._client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            data: bytes = reply["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return data

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

    def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, *, durable: bool = False
    ) -> None:
        """Write a body of any size from chunks: one PutObject when it is smaller than a
        part, else a multipart upload (parts of 8 MiB); S3 is durable once it answers,
        ``durable`` or not."""
        part_size = 8 * 1024 * 1024
        stream = iter(chunks)
        buffer = bytearray()
        for chunk in stream:
            buffer += chunk
            if len(buffer) >= part_size:
                break
        else:  # the whole body is smaller than a part
            self._put_small(key, bytes(buffer), content_type)
            return
        try:
            upload = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for chunk in itertools.chain([b""], stream):
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

    def _put_small(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

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

    # ------------------------------------------------------------ uploads

    def presign_put(self, key: str, *, expires: int, content_type: str, size: int) -> str:
        """A SigV4 URL to PUT one object of exactly ``size`` bytes (the ``content-length``
        header is signed: S3 answers another length 403 SignatureDoesNotMatch)."""
        url: str = self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "ContentType": content_type,
                "ContentLength": size,
            },
            ExpiresIn=expires,
        )
        return url

    def start_multipart(self, key: str, content_type: str) -> str:
        """CreateMultipartUpload; its id."""
        try:
            reply = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        upload_id: str = reply["UploadId"]
        return upload_id

    def presign_part(
        self, key: str, upload_id: str, part_number: int, *, expires: int, size: int
    ) -> str:
        """A SigV4 URL for UploadPart of exactly ``size`` bytes (``content-length`` signed)."""
        url: str = self._client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
                "ContentLength": size,
            },
            ExpiresIn=expires,
        )
        return url

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], size: int
    ) -> None:
        """CompleteMultipartUpload of parts that add up to ``size`` bytes (ListParts says how
        large each is); S3 checks every part's ETag."""
        try:
            sizes = self._part_sizes(key, upload_id)
            listed = [sizes.get(number) for number, _ in parts]
            if None in listed:
                raise ValueError("the parts do not complete the upload (a part is missing)")
            total = sum(n for n in listed if n is not None)
            if total != size:
                raise ValueError(f"the parts hold {total:,} bytes; the upload declared {size:,}")
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"InvalidPart", "InvalidPartOrder", "NoSuchUpload", "EntityTooSmall"}:
                raise ValueError(f"the parts do not complete the upload ({code})") from exc
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def _part_sizes(self, key: str, upload_id: str) -> dict[int, int]:
        """ListParts: part number -> bytes, for every part uploaded so far."""
        sizes: dict[int, int] = {}
        paginator = self._client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self._bucket, Key=key, UploadId=upload_id):
            for part in page.get("Parts", []):
                sizes[int(part["PartNumber"])] = int(part["Size"])
        return sizes

    def read(self, key: str) -> bytes | None:
        """A small object, or None when there is none."""
        try:
            data: bytes = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return data

    def copy(self, source: str, target: str) -> None:
        """Server-side copy (multipart above 64 MiB, so up to S3's 5 TB)."""
        try:
            self._client.copy(
                {"Bucket": self._bucket, "Key": source},
                self._bucket,
                target,
                ExtraArgs={"ContentType": "application/dicom", "MetadataDirective": "REPLACE"},
                Config=_TRANSFER,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        """HeadObject."""
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return ObjectInfo(
            key, int(head["ContentLength"]), head["LastModified"].timestamp(), head["ETag"]
        )

    def listing(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 pages, lazily."""
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if start_after:
            params["StartAfter"] = start_after
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**params):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        item["Key"],
                        int(item["Size"]),
                        item["LastModified"].timestamp(),
                        item.get("ETag", ""),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path | None]:
        """The object downloaded to a temporary file (Lambda's /tmp: ephemeral storage
        sized for the largest upload), removed afterwards; None when there is none."""
        descriptor, name = tempfile.mkstemp(prefix="ingest-", suffix=".dcm")
        path = Path(name)
        try:
            try:
                with os.fdopen(descriptor, "wb") as output:
                    self._client.download_fileobj(self._bucket, key, output, Config=_TRANSFER)
            except ClientError as exc:
                if _missing(exc):
                    yield None
                    return
                raise StorageUnavailable("object storage is unavailable, retry later") from exc
            except BotoCoreError as exc:
                raise StorageUnavailable("object storage is unavailable, retry later") from exc
            yield path
        finally:
            path.unlink(missing_ok=True)
