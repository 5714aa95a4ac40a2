"""The archive seen from the gateway: QIDO-RS searches paged with ``offset``/``limit``, and
WADO-RS retrievals read part by part (:mod:`tools.gateway.parts`), with the gateway's API
key. Thread-safe: one HTTP session per thread."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from tools.gateway import parts

PAGE = 200  # results per QIDO request
RETRYABLE = frozenset({429, 502, 503, 504})
CHUNK = 1 << 16
_CONTINUE = re.compile(r"Continue with offset=(\d+)")
DICOM_PARTS = 'multipart/related; type="application/dicom"'


class ArchiveError(Exception):
    """The archive could not answer (unreachable, refused, malformed answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Archive:
    """QIDO-RS and WADO-RS on one archive, as ``aet`` (the ``{AET}`` QIDO path segment)."""

    base_url: str
    api_key: str
    page: int = PAGE
    timeout: float = 120.0
    attempts: int = 3
    sleep: Callable[[float], None] = time.sleep
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _get(self, url: str, headers: dict[str, str], *, stream: bool = False) -> requests.Response:
        """GET, retried on 429/5xx and connection errors."""
        last = ""
        for attempt in range(self.attempts):
            try:
                reply = self._session().get(
                    url,
                    headers={"Authorization": self.api_key, **headers},
                    timeout=self.timeout,
                    stream=stream,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = type(exc).__name__
            else:
                if reply.status_code not in RETRYABLE or attempt + 1 == self.attempts:
                    return reply
                last = f"HTTP {reply.status_code}"
                reply.close()
            self.sleep(min(2.0, 0.2 * 2**attempt))
        raise ArchiveError(f"the archive is unreachable ({last})")

    # ------------------------------------------------------------------ QIDO-RS

    def search(
        self,
        aet: str,
        resource: str,
        query: Callable[[int, int], str],
    ) -> Iterator[dict[str, Any]]:
        """Every result of a QIDO-RS search, page by page; ``query(offset, limit)`` gives the
        query string of a page. Follows the archive's 299 warnings: more results, or a
        search that stopped on its budget and continues at the offset it names."""
        offset = 0
        base = f"{self.base_url.rstrip('/')}/qido/{quote(aet, safe='')}/{resource}"
        while True:
            reply = self._get(
                f"{base}?{query(offset, self.page)}", {"Accept": "application/dicom+json"}
            )
            if reply.status_code != 200:
                raise ArchiveError(f"QIDO-RS answered {reply.status_code}", reply.status_code)
            results = reply.json() if reply.content else []
            if not isinstance(results, list):
                raise ArchiveError("QIDO-RS answered something other than a list")
            yield from results
            warning = reply.headers.get("Warning", "")
            resume = _CONTINUE.search(warning)
            if resume:
                next_offset = int(resume.group(1))
            elif "299" in warning and results:
                next_offset = offset + len(results)
            else:
                return
            if next_offset <= offset:
                return
            offset = next_offset

    # ------------------------------------------------------------------ WADO-RS

    def retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        *,
        transfer_syntax: str = "",
    ) -> Iterator[bytes]:
        """The Part 10 files of a study, series or instance, one at a time as they arrive;
        ``transfer_syntax``: ask the archive for that syntax (it transcodes)."""
        path = f"{self.base_url.rstrip('/')}/rs/studies/{study}"
        if series:
            path += f"/series/{series}"
            if instance:
                path += f"/instances/{instance}"
        accept = DICOM_PARTS + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")
        reply = self._get(path, {"Accept": accept}, stream=True)
        with reply:
            if reply.status_code != 200:
                raise ArchiveError(f"WADO-RS answered {reply.status_code}", reply.status_code)
            boundary = parts.boundary_of(reply.headers.get("Content-Type", ""))
            if not boundary:
                raise ArchiveError("WADO-RS answered without a multipart boundary")
            try:
                yield from parts.split(reply.iter_content(CHUNK), boundary)
            except parts.MalformedMultipart as exc:
                raise ArchiveError(f"WADO-RS answer cut off: {exc}") from exc
