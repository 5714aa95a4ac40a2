"""Part 10 files in a directory: the embedded backend's object store (``local``).

A key is a relative path under the root. Every write is atomic and durable: the bytes go to
a temporary file in the target directory, are flushed and fsynced, renamed over the final
name, and the directory is fsynced, so after a crash an object is either whole or absent.
Presigned URLs are served by the local server (``local_urls``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from shared.adapters.local_urls import UrlSigner
from shared.errors import StorageUnavailable

TEMPORARY_PREFIX = ".tmp-"


class FileBlobStore:
    """ObjectStore on a directory tree (port :class:`shared.ports.ObjectStore`)."""

    def __init__(self, root: Path, signer: UrlSigner | None = None) -> None:
        self.root = root
        self._signer = signer
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``; keys that would leave the root are refused."""
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"not an object key: {key!r}")
        return self.root.joinpath(*relative.parts)

    def put(self, key: str, data: bytes) -> None:
        """Store bytes under key, atomically and durably."""
        self.put_stream(key, [data], "application/dicom")

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Write a body of any size from chunks (one chunk in memory at a time)."""
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
            try:
                with temporary.open("wb") as output:
                    for chunk in chunks:
                        output.write(chunk)
                    output.flush()
                    os.fsync(output.fileno())
                temporary.replace(target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            _fsync_directory(target.parent)
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def get(self, key: str) -> bytes:
        """The whole object."""
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def chunks(self, key: str, size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        """The object as a stream of chunks."""
        try:
            with self.path(key).open("rb") as source:
                while chunk := source.read(size):
                    yield chunk
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def delete(self, key: str) -> None:
        """Remove the object, if any."""
        target = self.path(key)
        try:
            target.unlink(missing_ok=True)
            _fsync_directory(target.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def presign_get(
        self, key: str, *, expires: int, content_type: str, filename: str | None = None
    ) -> str:
        """A time-limited URL of the local server that serves the object."""
        if self._signer is None:
            raise StorageUnavailable("this object store has no URL to serve objects from")
        return self._signer.url(key, expires=expires, content_type=content_type, filename=filename)


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    with contextlib.suppress(FileNotFoundError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
