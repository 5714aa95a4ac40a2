"""Time-limited signed URLs for objects of the embedded backend, as S3 presigns them.

The local server answers ``GET {base}/{key}?expires=...&type=...&name=...&signature=...``
without an API key when the HMAC-SHA256 signature (over key, expiry, content type and file
name; for a PUT also the method, the multipart part and the object's length) is right and
the expiry has not passed; otherwise 403, as S3 answers an expired or altered presigned URL.
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
    #: The exact Content-Length a PUT must have (None: any), as S3 signs ``content-length``.
    length: int | None = None


class UrlRefused(Exception):
    """A signed URL that grants nothing: S3's error code (``AccessDenied``,
    ``SignatureDoesNotMatch``) and a reason for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        length: int | None = None,
    ) -> str:
        """A URL that serves (GET) or accepts (PUT, of exactly ``length`` bytes when given)
        ``key`` for ``expires`` seconds."""
        until = int(self._clock()) + expires
        query = {"expires": str(until), "type": content_type, "name": filename or ""}
        if method != "GET":
            query["method"] = method
        if part is not None:
            query["uploadId"], query["partNumber"] = part[0], str(part[1])
        if length is not None:
            query["length"] = str(length)
        query["signature"] = self._sign(key, query)
        return f"{self._base}{PATH_PREFIX}{quote(key)}?{urlencode(query, quote_via=quote)}"

    def check(self, key: str, query: Mapping[str, str], method: str = "GET") -> SignedObject | None:
        """What a request may do with the object, or None (see :meth:`verify`)."""
        try:
            return self.verify(key, query, method)
        except UrlRefused:
            return None

    def verify(self, key: str, query: Mapping[str, str], method: str = "GET") -> SignedObject:
        """What a request may do with the object; :class:`UrlRefused` when the URL lacks its
        signature or expiry, is altered or signed for another method, or has expired."""
        signature, expires = query.get("signature"), query.get("expires")
        if not signature or not expires:
            raise UrlRefused("AccessDenied", "the URL is not signed: signature and expires needed")
        presented = signature.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(self._sign(key, query).encode("ascii"), presented):
            raise UrlRefused("SignatureDoesNotMatch", "the signature does not match the request")
        signed_method = query.get("method", "GET")
        if signed_method != method and not (signed_method == "GET" and method == "HEAD"):
            raise UrlRefused("SignatureDoesNotMatch", f"the URL is not signed for {method}")
        try:
            until = int(expires)
            part = (
                (query["uploadId"], int(query.get("partNumber", "")))
                if "uploadId" in query
                else None
            )
            signed_length = query.get("length") if signed_method != "GET" else None
            length = None if signed_length is None else int(signed_length)
        except ValueError as exc:  # signed by someone else with this secret: refused too
            raise UrlRefused("AccessDenied", "the URL's signed fields are malformed") from exc
        if until < self._clock():
            raise UrlRefused("AccessDenied", "the URL has expired")
        return SignedObject(
            key, query.get("type", ""), query.get("name", ""), signed_method, part, length
        )

    def _sign(self, key: str, query: Mapping[str, str]) -> str:
        fields = [key, query.get("expires", ""), query.get("type", ""), query.get("name", "")]
        if query.get("method", "GET") != "GET":
            fields += [query["method"], query.get("uploadId", ""), query.get("partNumber", "")]
            fields.append(query.get("length", ""))
        message = "\n".join(fields)
        return hmac.new(
            self._secret, message.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
