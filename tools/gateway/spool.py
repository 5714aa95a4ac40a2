"""The gateway's spool: a received instance is on disk, synced, before the modality hears
"success"; it leaves the spool only once the archive has it (or refused it for good).

Layout under the spool root::

    receiving/             pynetdicom's data sets as they arrive; removed on start
    incoming/              being written; never acknowledged, removed on start
    ready/ae=<calling AE>/ acknowledged, waiting to be forwarded
    failed/                refused by the archive: the file and <name>.json with the reason

A folder of ``ready/`` is ``ae=`` and the calling AE title with every character other than
letters, digits, ``_`` and ``-`` percent-encoded (``ae=CT_1``, ``ae=CT%201``, ``ae=%2E%2E``):
no title can name a folder outside ``ready/``. Folders of earlier versions (the title
percent-encoded without the prefix) are still found and forwarded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

PREFIX = "ae="  # never produced by the earlier naming, which percent-encoded "="
log = logging.getLogger("dicomweb-gateway")


def folder_name(calling_aet: str) -> str:
    """The ``ready/`` folder of a calling AE title: a single path segment, never ``.``/``..``."""
    return PREFIX + quote(calling_aet, safe="").replace(".", "%2E").replace("~", "%7E")


def title_of(folder: str) -> str:
    """The calling AE title a ``ready/`` folder holds (either naming)."""
    return unquote(folder.removeprefix(PREFIX))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Durable hand-over between the SCP thread(s) and the forwarder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.receiving = root / "receiving"
        self.incoming = root / "incoming"
        self.ready = root / "ready"
        self.failed = root / "failed"
        for folder in (self.receiving, self.incoming, self.ready, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        _fsync_dir(root)

    def recover(self) -> int:
        """Remove half-received and half-written files left by a crash (their sender never
        got a success, so it sends them again); set aside, with a reason, files an earlier
        version spooled outside any AE folder; return how many acknowledged files wait to be
        forwarded."""
        for leftover in [*self.receiving.iterdir(), *self.incoming.iterdir()]:
            leftover.unlink(missing_ok=True)
        strays = [(p, ".") for p in self.ready.glob("*.dcm")]
        strays += [(p, "..") for p in self.root.glob("*.dcm")]
        for path, title in strays:
            if path.is_file():
                self.fail(path, {"source": path.name, "reason": _STRAY.format(title=title)})
        if strays:
            log.warning("%d files spooled outside any AE folder moved to failed/", len(strays))
        return sum(len(paths) for paths in self.pending().values())

    def put(self, calling_aet: str, data: bytes) -> Path:
        """Write ``data`` durably: temp file, fsync, rename into ``ready/``, fsync the folder.
        Only when this returns may the modality be told "success"."""
        temporary = self._temporary()
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return self._ready(calling_aet, temporary)

    def put_file(self, calling_aet: str, source: Path) -> Path:
        """:meth:`put` for an instance received into a file (pynetdicom's chunked receive),
        copied a megabyte at a time: memory stays bounded whatever its size."""
        temporary = self._temporary()
        with source.open("rb") as received, temporary.open("wb") as out:
            shutil.copyfileobj(received, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        return self._ready(calling_aet, temporary)

    def _temporary(self) -> Path:
        return self.incoming / f"{time.time_ns():020d}-{uuid.uuid4().hex}.dcm"

    def _ready(self, calling_aet: str, temporary: Path) -> Path:
        folder = self.ready / folder_name(calling_aet.strip() or "UNKNOWN")
        if not folder.exists():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.ready)
        target = folder / temporary.name
        temporary.rename(target)
        _fsync_dir(folder)
        return target

    def pending(self) -> dict[str, list[Path]]:
        """Acknowledged files by calling AE, oldest first; a folder that cannot be listed is
        logged and left for the next pass."""
        found: dict[str, list[Path]] = {}
        for folder in sorted(self.ready.iterdir()):
            try:
                if folder.is_dir():
                    files = [p for p in folder.iterdir() if p.suffix == ".dcm"]
                    if files:
                        found.setdefault(title_of(folder.name), []).extend(files)
            except OSError as exc:
                log.error("cannot list the spool folder %s: %s", folder.name, exc.strerror)
        return {title: sorted(files, key=lambda p: p.name) for title, files in found.items()}

    def done(self, path: Path) -> None:
        """The archive has it: forget it."""
        path.unlink(missing_ok=True)

    def fail(self, path: Path, reason: dict[str, Any]) -> None:
        """The archive refused it for good: keep it with the reason, out of the way."""
        target = self.failed / path.name
        (self.failed / f"{path.name}.json").write_text(json.dumps(reason, indent=2) + "\n")
        path.rename(target)


_STRAY = (
    "spooled by an earlier version of the gateway for the calling AE title '{title}', outside "
    "any AE folder, and never forwarded: send it with dicomweb-import"
)
