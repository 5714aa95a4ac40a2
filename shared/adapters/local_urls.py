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
    method: str = "GET"
    #: (upload id, part number) of a multipart upload's part, for a PUT.
    part: tuple[str, int] | None = None


class UrlSigner:
    """Signs and checks object URLs with a secret shared by every worker of the server."""

    def __init__(
        self, secret: bytes, base_url: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._clock = clock

    def url(  # noqa: PLR0913 - keyword-only, as S3's presign parameters
        self,
        key: str,
        *,
        expires: int,
        content_type: str,
        filename: str | None,
        method: str = "GET",
        part: tuple[str, int] | None = None,
    ) -> str:
        """A URL that serves (GET) or accepts (PUT) ``key`` for ``expires`` seconds."""
        until = int(self._clock()) + expires
        query = {"expires": str(until), "type": content_type, "name": filename or ""}
        if method != "GET":
            query["method"] = method
        if part is not None:
            query["uploadId"], query["partNumber"] = part[0], str(part[1])
        query["signature"] = self._sign(key, query)
        return f"{self._base}{PATH_PREFIX}{quote(key)}?{urlencode(query, quote_via=quote)}"

    def check(self, key: str, query: Mapping[str, str], method: str = "GET") -> SignedObject | None:
        """What a request may do with the object, or None (bad signature, another method
        than signed for, or expired)."""
        try:
            until = int(query.get("expires", ""))
        except ValueError:
            return None
        expected = self._sign(key, query)
        if not hmac.compare_digest(expected, query.get("signature", "")):
            return None
        if until < self._clock():
            return None
        signed_method = query.get("method", "GET")
        if signed_method != method and not (signed_method == "GET" and method == "HEAD"):
            return None
        part = None
        if "uploadId" in query:
            try:
                part = (query["uploadId"], int(query.get("partNumber", "")))
            except ValueError:
                return None
        return SignedObject(key, query.get("type", ""), query.get("name", ""), signed_method, part)

    def _sign(self, key: str, query: Mapping[str, str]) -> str:
        fields = [key, query.get("expires", ""), query.get("type", ""), query.get("name", "")]
        if query.get("method", "GET") != "GET":
            fields += [query["method"], query.get("uploadId", ""), query.get("partNumber", "")]
        message = "\n".join(fields)
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()
