"""Part 10 files in a directory: the embedded backend's object store (``local``).

A key is a relative path under the root. Every write is atomic: the bytes go to a temporary
file in the target directory and are renamed over the final name. Stored instances are also
durable: the file is fsynced before the rename and the directory after it (and the parent
of every directory created for it), so after a crash an object is either whole or absent.
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
        self._write(key, [data], durable=True)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Write a derived body of any size from chunks (one chunk in memory at a time).

        Atomic but not fsynced: these are responses assembled under fresh keys (WADO's
        303 targets), which a crash may lose since nothing refers to them afterwards.
        """
        self._write(key, chunks, durable=False)

    def _write(self, key: str, chunks: Iterable[bytes], *, durable: bool) -> None:
        target = self.path(key)
        try:
            _make_directory(target.parent, durable=durable)
            temporary = target.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
            try:
                with temporary.open("wb") as output:
                    for chunk in chunks:
                        output.write(chunk)
                    if durable:
                        output.flush()
                        os.fsync(output.fileno())
                temporary.replace(target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            if durable:
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


def _make_directory(directory: Path, *, durable: bool) -> None:
    """Create ``directory`` and its missing parents; when durable, fsync the parent of each
    one created, so that the new entries survive a crash with the file written in them."""
    if directory.is_dir():
        return
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    if durable:
        for created in reversed(missing):
            _fsync_directory(created.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    with contextlib.suppress(FileNotFoundError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
