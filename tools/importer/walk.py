"""Find the Part 10 files under the paths given: files, folders, zip and tar archives, DICOMDIRs.

Everything that is not a Part 10 file (no 128-byte preamble + ``DICM``) becomes a
:class:`Note` instead of an error: the walker never raises on bad input. Zip members are read
in place when sent; tar members (a compressed tar cannot seek) are copied once into a scratch
folder the caller owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pydicom
from pydicom.filereader import read_file_meta_info

# What reading an item can raise: a vanished or unreadable file, a zip member that fails
# its CRC or does not inflate.
READ_ERRORS: tuple[type[Exception], ...] = (OSError, zipfile.BadZipFile, zlib.error, EOFError)

PREAMBLE = 128
MAGIC = b"DICM"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class Item:
    """One Part 10 file to send: on disk (``member`` empty) or inside a zip archive."""

    source: str  # what the report shows: a path, or "archive.zip!member"
    size: int
    path: Path  # the file itself, or the zip archive that holds it
    member: str = ""

    def open(self) -> IO[bytes]:
        """A binary file object positioned at the start of the Part 10 file."""
        if not self.member:
            return self.path.open("rb")
        with zipfile.ZipFile(self.path) as archive:
            # the member keeps the archive's file open until the member itself is closed
            return archive.open(self.member)

    def read(self) -> bytes:
        """The whole Part 10 file."""
        with self.open() as fp:
            return fp.read()


@dataclass(frozen=True)
class Note:
    """Something found that is not sent, and why."""

    source: str
    note: str


def walk(paths: list[Path], scratch: Path) -> Iterator[Item | Note]:
    """Every Part 10 file under ``paths`` (each on-disk file once), and a note for the rest."""
    seen: set[Path] = set()
    for path in paths:
        yield from _walk_path(path, scratch, seen)


def _walk_path(path: Path, scratch: Path, seen: set[Path]) -> Iterator[Item | Note]:
    try:
        info = path.stat()
    except OSError as exc:
        yield Note(str(path), f"cannot read: {exc.strerror or exc}")
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _walk_folder(path, scratch, seen)
    elif stat.S_ISREG(info.st_mode):
        yield from _walk_file(path, info.st_size, scratch, seen)
    else:
        yield Note(str(path), "not a regular file")


def _walk_folder(folder: Path, scratch: Path, seen: set[Path]) -> Iterator[Item | Note]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        yield Note(str(folder), f"cannot list: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink() and entry.is_dir():
            yield Note(str(path), "symbolic link to a folder not followed")
            continue
        yield from _walk_path(path, scratch, seen)


def _walk_file(path: Path, size: int, scratch: Path, seen: set[Path]) -> Iterator[Item | Note]:
    resolved = path.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    try:
        with path.open("rb") as fp:
            head = fp.read(PREAMBLE + len(MAGIC))
    except OSError as exc:
        yield Note(str(path), f"cannot read: {exc.strerror or exc}")
        return
    if head[PREAMBLE:] == MAGIC:
        if is_dicomdir(path):
            yield from _walk_dicomdir(path, scratch, seen)
        else:
            yield Item(str(path), size, path)
    elif _is_zip(path):
        yield from _walk_zip(path)
    elif _is_tar(path):
        yield from _walk_tar(path, scratch)
    else:
        yield Note(str(path), "not a DICOM Part 10 file (no preamble and DICM prefix)")


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return False


def is_dicomdir(path: Path) -> bool:
    """A Part 10 file whose Media Storage SOP Class is the Media Storage Directory."""
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        meta = read_file_meta_info(path)
        return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY
    except Exception:  # noqa: BLE001 - any unreadable meta means "not a DICOMDIR"
        return False


def _walk_dicomdir(path: Path, scratch: Path, seen: set[Path]) -> Iterator[Item | Note]:
    """The files a DICOMDIR references (missing ones as notes); the DICOMDIR itself is not
    an instance and is not sent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints about values: not ours
            fileset = pydicom.dcmread(path, force=False)
        records = list(fileset.get("DirectoryRecordSequence", []))
    except Exception as exc:  # noqa: BLE001 - a broken DICOMDIR is a note, not a crash
        yield Note(str(path), f"DICOMDIR not readable: {type(exc).__name__}")
        return
    yield Note(str(path), f"DICOMDIR with {len(records)} records; its files are imported")
    root = path.parent
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        if any(part in {"", ".", ".."} or "/" in part or "\\" in part for part in parts):
            yield Note(str(path), f"DICOMDIR references an unsafe path {'/'.join(parts)!r}")
            continue
        target = _find_case_insensitive(root, parts)
        if target is None:
            yield Note(str(root.joinpath(*parts)), "referenced by DICOMDIR but missing")
            continue
        yield from _walk_path(target, scratch, seen)


def _find_case_insensitive(root: Path, parts: list[str]) -> Path | None:
    """``root/parts...``, matching each component without regard to case (media file IDs
    are upper case; copied file sets often are not)."""
    current = root
    for part in parts:
        exact = current / part
        if exact.exists():
            current = exact
            continue
        try:
            matches = [p for p in current.iterdir() if p.name.upper() == part.upper()]
        except OSError:
            return None
        if not matches:
            return None
        current = matches[0]
    return current


def _walk_zip(path: Path) -> Iterator[Item | Note]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            found: list[Item | Note] = []
            for member in members:
                if member.is_dir():
                    continue
                source = f"{path}!{member.filename}"
                if member.flag_bits & 0x1:
                    found.append(Note(source, "encrypted zip member"))
                    continue
                try:
                    with archive.open(member) as fp:
                        head = fp.read(PREAMBLE + len(MAGIC))
                except Exception as exc:  # noqa: BLE001 - broken member, broken compression
                    found.append(Note(source, f"zip member not readable: {type(exc).__name__}"))
                    continue
                if head[PREAMBLE:] == MAGIC:
                    found.append(Item(source, member.file_size, path, member.filename))
                else:
                    found.append(Note(source, "not a DICOM Part 10 file (in a zip archive)"))
    except Exception as exc:  # noqa: BLE001 - a broken archive is a note
        yield Note(str(path), f"zip archive not readable: {type(exc).__name__}")
        return
    yield from found


def _walk_tar(path: Path, scratch: Path) -> Iterator[Item | Note]:
    """Tar members are copied into ``scratch`` (the caller deletes it at the end)."""
    target_dir = scratch / f"tar-{abs(hash(str(path.resolve())))}"
    found: list[Item | Note] = []
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                source = f"{path}!{member.name}"
                if not member.isfile():
                    continue
                extracted = _extract(archive, member, target_dir, len(found))
                if extracted is None:
                    found.append(Note(source, "tar member not readable"))
                    continue
                with extracted.open("rb") as fp:
                    head = fp.read(PREAMBLE + len(MAGIC))
                if head[PREAMBLE:] == MAGIC:
                    found.append(Item(source, member.size, extracted))
                else:
                    extracted.unlink(missing_ok=True)
                    found.append(Note(source, "not a DICOM Part 10 file (in a tar archive)"))
    except Exception as exc:  # noqa: BLE001 - a broken archive is a note
        found.append(Note(str(path), f"tar archive not readable to the end: {type(exc).__name__}"))
    yield from found


def _extract(
    archive: tarfile.TarFile, member: tarfile.TarInfo, folder: Path, number: int
) -> Path | None:
    """Copy one member to ``folder/<number>`` (never to the member's own name: no path
    traversal); None if it cannot be read whole."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{number:08d}"
    try:
        source = archive.extractfile(member)
        if source is None:
            return None
        with source, target.open("wb") as out:
            shutil.copyfileobj(source, out)
    except Exception:  # noqa: BLE001 - truncated data, bad checksums
        with contextlib.suppress(OSError):
            target.unlink()
        return None
    return target
