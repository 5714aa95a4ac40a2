"""Part 10 files in a directory: the embedded backend's object store (``local``).

A key is a relative path under the root. Every write is atomic: the bytes go to a temporary
file in the target directory and are renamed over the final name. Stored instances are also
durable: the file is fsynced before the rename and the directory after it (and the parent
of every directory created for it), so after a crash an object is either whole or absent.
Presigned URLs are served by the local server (``local_urls``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from shared.adapters.local_urls import UrlSigner
from shared.errors import StorageUnavailable
from shared.ports import ObjectInfo

TEMPORARY_PREFIX = ".tmp-"


class Readable(Protocol):
    """A byte stream (a request body)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; b"" at the end."""


#: Parts of multipart uploads, one directory per upload (outside every key prefix in use).
MULTIPART_DIR = ".multipart"
_COPY_CHUNK = 1 << 20


class FileBlobStore:
    """ObjectStore on a directory tree (port :class:`shared.ports.ObjectStore`)."""

    def __init__(self, root: Path, signer: UrlSigner | None = None) -> None:
        self.root = root
        self._signer = signer
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``; keys that would leave the root are refused."""
        relative = PurePosixPath(key)
        if (
            relative.is_absolute()
            or ".." in relative.parts
            or not relative.parts
            or relative.parts[0] == MULTIPART_DIR
            or relative.name.startswith(TEMPORARY_PREFIX)
        ):
            raise ValueError(f"not an object key: {key!r}")
        return self.root.joinpath(*relative.parts)

    def put(self, key: str, data: bytes) -> None:
        """Store bytes under key, atomically and durably."""
        self._write(key, [data], durable=True)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, *, durable: bool = False
    ) -> None:
        """Write a body of any size from chunks (one chunk in memory at a time).

        Atomic; fsynced only when ``durable`` (a new version of an instance): otherwise
        these are responses assembled under fresh keys (WADO's 303 targets), which a crash
        may lose since nothing refers to them afterwards.
        """
        self._write(key, chunks, durable=durable)

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

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``."""
        try:
            with self.path(key).open("rb") as source:
                source.seek(start)
                return source.read(length)
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
        return self._url_signer().url(
            key, expires=expires, content_type=content_type, filename=filename
        )

    def _url_signer(self) -> UrlSigner:
        if self._signer is None:
            raise StorageUnavailable("this object store has no URL to serve objects from")
        return self._signer

    # ------------------------------------------------------------ uploads

    def presign_put(self, key: str, *, expires: int, content_type: str, size: int) -> str:
        """A time-limited URL of the local server that accepts one PUT of the object, of
        exactly ``size`` bytes (the server refuses another length, as S3 does)."""
        self.path(key)  # refuse a bad key now, not at the PUT
        return self._url_signer().url(
            key,
            expires=expires,
            content_type=content_type,
            filename=None,
            method="PUT",
            length=size,
        )

    def start_multipart(self, key: str, content_type: str) -> str:
        """A directory for the parts, remembering the key they are for."""
        self.path(key)
        upload_id = uuid.uuid4().hex
        directory = self._parts_dir(upload_id)
        try:
            directory.mkdir(parents=True)
            (directory / "key").write_text(json.dumps({"key": key}), encoding="utf-8")
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return upload_id

    def presign_part(
        self, key: str, upload_id: str, part_number: int, *, expires: int, size: int
    ) -> str:
        """A time-limited URL that accepts one PUT of a part of exactly ``size`` bytes."""
        return self._url_signer().url(
            key,
            expires=expires,
            content_type="",
            filename=None,
            method="PUT",
            part=(upload_id, part_number),
            length=size,
        )

    def _parts_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ValueError("not an upload id")
        return self.root / MULTIPART_DIR / upload_id

    def write_part(
        self, key: str, upload_id: str, part_number: int, body: Readable, length: int
    ) -> str:
        """Store one part (what the local server does with a part's PUT); its ETag."""
        directory = self._parts_dir(upload_id)
        try:
            recorded = json.loads((directory / "key").read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError("no such upload") from exc
        if recorded != key or not 1 <= part_number <= 10_000:
            raise ValueError("no such upload")
        digest = hashlib.md5(usedforsecurity=False)
        target = directory / f"{part_number:05d}"
        temporary = directory / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
        try:
            with temporary.open("wb") as output:
                for chunk in _read_exactly(body, length):
                    digest.update(chunk)
                    output.write(chunk)
                output.flush()
                os.fsync(output.fileno())
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        etag = f'"{digest.hexdigest()}"'
        (directory / f"{part_number:05d}.etag").write_text(etag, encoding="ascii")
        return etag

    def put_file(self, key: str, body: Readable, length: int) -> None:
        """Store ``length`` bytes read from ``body`` (a presigned PUT), durably."""
        self._write(key, _read_exactly(body, length), durable=True)

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], size: int
    ) -> None:
        """Concatenate the parts, which must add up to ``size`` bytes, into the object
        (atomic and durable), then drop them."""
        directory = self._parts_dir(upload_id)
        try:
            recorded = json.loads((directory / "key").read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError("no such upload") from exc
        numbers = [number for number, _ in parts]
        if recorded != key or not parts or numbers != sorted(set(numbers)):
            raise ValueError("the parts must be listed once each, in ascending order")
        for number, etag in parts:
            try:
                stored = (directory / f"{number:05d}.etag").read_text(encoding="ascii")
            except OSError as exc:
                raise ValueError(f"part {number} was not uploaded") from exc
            if stored.strip('"') != etag.strip('"'):
                raise ValueError(f"part {number} has another ETag")
        total = sum((directory / f"{number:05d}").stat().st_size for number, _ in parts)
        if total != size:
            raise ValueError(f"the parts hold {total:,} bytes; the upload declared {size:,}")

        def chunks() -> Iterator[bytes]:
            for number, _ in parts:
                with (directory / f"{number:05d}").open("rb") as part:
                    while chunk := part.read(_COPY_CHUNK):
                        yield chunk

        self._write(key, chunks(), durable=True)
        shutil.rmtree(directory, ignore_errors=True)

    def read(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def copy(self, source: str, target: str) -> None:
        """A hard link when both are on one file system (no bytes copied), else a copy;
        atomic and durable either way; the copy is dated now."""
        origin, destination = self.path(source), self.path(target)
        try:
            _make_directory(destination.parent, durable=True)
            temporary = destination.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
            try:
                try:
                    os.link(origin, temporary)
                    # A copy is an object written now, as S3 dates one, and the lifecycle
                    # rules count from then (the link shares the source's time: both move).
                    os.utime(temporary)
                except OSError:
                    shutil.copyfile(origin, temporary)
                    with temporary.open("rb+") as copied:
                        os.fsync(copied.fileno())
                temporary.replace(destination)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            _fsync_directory(destination.parent)
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None."""
        try:
            found = self.path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable("object storage is unavailable, retry later") from exc
        return ObjectInfo(key, found.st_size, found.st_mtime)

    def listing(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, lazily (as S3 pages them:
        a page costs the directories it passes, not the whole tree). Temporary files and
        parts of unfinished uploads are not objects."""
        head, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*[p for p in head.split("/") if p])
        relative = f"{head}/" if head else ""
        for key in self._keys(base, relative, prefix, start_after):
            info = self.stat(key)
            if info is not None:
                yield info

    def _keys(self, directory: Path, relative: str, prefix: str, after: str) -> Iterator[str]:
        """Keys below ``directory`` (whose key prefix is ``relative``) in key order: entries
        sorted as their keys sort (a folder as its name and "/"), subtrees wholly at or
        before ``after`` or outside ``prefix`` skipped."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        named = []
        for entry in entries:
            if entry.name.startswith(TEMPORARY_PREFIX) or (
                not relative and entry.name == MULTIPART_DIR
            ):
                continue
            folder = entry.is_dir(follow_symlinks=False)
            named.append((f"{relative}{entry.name}{'/' if folder else ''}", folder, entry))
        for key, folder, entry in sorted(named):
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if folder:
                if after and key < after[: len(key)]:
                    continue  # every key below sorts before ``after``
                yield from self._keys(Path(entry.path), key, prefix, after)
            elif key > after and key.startswith(prefix):
                yield key

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path | None]:
        """The object's own file (read it, do not change it)."""
        path = self.path(key)
        yield path if path.is_file() else None


def _read_exactly(body: Readable, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``body`` in chunks; ValueError when it ends before."""
    remaining = length
    while remaining > 0:
        chunk = body.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            raise ValueError("the body ended before its Content-Length")
        remaining -= len(chunk)
        yield chunk


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
