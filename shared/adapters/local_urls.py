"""Time-limited signed URLs for objects of the embedded backend, as S3 presigns them.

The local server answers ``GET {base}/{key}?expires=...&type=...&name=...&signature=...``
without an API key when the HMAC-SHA256 signature (over key, expiry, content type and file
name) is right and the expiry has not passed; otherwise 403, as S3 answers an expired or
altered presigned URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

PATH_PREFIX = "/_local/objects/"


@dataclass(frozen=True)
class SignedObject:
    """What a valid signed URL grants: one object, served with these headers."""

    key: str
    content_type: str
    filename: str


class UrlSigner:
    """Signs and checks object URLs with a secret shared by every worker of the server."""

    def __init__(
        self, secret: bytes, base_url: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._clock = clock

    def url(self, key: str, *, expires: int, content_type: str, filename: str | None) -> str:
        """A URL that serves ``key`` for ``expires`` seconds."""
        until = int(self._clock()) + expires
        query = {"expires": str(until), "type": content_type, "name": filename or ""}
        query["signature"] = self._sign(key, query)
        return f"{self._base}{PATH_PREFIX}{quote(key)}?{urlencode(query, quote_via=quote)}"

    def check(self, key: str, query: Mapping[str, str]) -> SignedObject | None:
        """The object a request may read, or None (bad signature or expired)."""
        try:
            until = int(query.get("expires", ""))
        except ValueError:
            return None
        expected = self._sign(key, query)
        if not hmac.compare_digest(expected, query.get("signature", "")):
            return None
        if until < self._clock():
            return None
        return SignedObject(key, query.get("type", ""), query.get("name", ""))

    def _sign(self, key: str, query: Mapping[str, str]) -> str:
        message = "\n".join(
            (key, query.get("expires", ""), query.get("type", ""), query.get("name", ""))
        )
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()
