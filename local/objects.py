"""The embedded backend's answer to S3 presigned URLs: a small HTTP server of its own.

It runs on its own port, so a redirect to it leaves the API's origin as one to S3 does
(clients drop the Authorization header). It serves ``GET /_local/objects/{key}`` without an
API key when the signature is right and unexpired (``shared.adapters.local_urls``), 403
otherwise, 404 for a missing object; the body is streamed from the file. It accepts
``PUT`` of an object or of a multipart upload's part the same way (the upload path), writes
it durably, and tells the stack a new object is there (S3's "Object Created" event).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import PATH_PREFIX, UrlRefused, UrlSigner
from shared.errors import StorageUnavailable

logger = logging.getLogger("local.objects")
_CHUNK = 1 << 20
#: The largest PUT accepted (S3's limit for one object or one part).
MAX_PUT = 5 << 30
SWEEP_INTERVAL_S = 3600
_DAY_S = 86400


def expire(root: Path, expirations: tuple[tuple[str, int], ...], now: float) -> int:
    """Delete objects under each prefix older than its days, as an S3 lifecycle rule does
    (S3 counts from the object's creation; here from the file's modification). Returns how
    many were removed."""
    removed = 0
    for prefix, days in expirations:
        directory = root.joinpath(*[p for p in prefix.split("/") if p])
        if not prefix or not directory.is_dir():
            continue  # a rule over the whole bucket would expire the archive itself
        cutoff = now - days * _DAY_S
        for path in directory.rglob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # taken by a concurrent sweep or request
    return removed


class _Handler(BaseHTTPRequestHandler):
    server: ObjectServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK holds the second one back 40 ms (Nagle), whatever the handler's speed.
    disable_nagle_algorithm = True
    timeout = 30

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_PUT(self) -> None:
        """A presigned PUT of an object or of one part of a multipart upload."""
        raw_path, _, query = self.path.partition("?")
        key = unquote(raw_path[len(PATH_PREFIX) :]) if raw_path.startswith(PATH_PREFIX) else ""
        try:
            granted = self.server.signer.verify(
                key, dict(parse_qsl(query, keep_blank_values=True)), method="PUT"
            )
        except UrlRefused as refused:
            self.close_connection = True  # the body is not read
            self._refuse(403, refused.message, refused.code)
            return
        if not key:
            self.close_connection = True
            self._refuse(404, "no such object")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_PUT:
            self.close_connection = True
            self._refuse(411 if length < 0 else 413, "a Content-Length up to 5 GiB is required")
            return
        if granted.length is not None and length != granted.length:
            # S3 signs the content-length header: another length is another request.
            self.close_connection = True
            self._refuse(
                403,
                f"the URL is signed for a body of {granted.length:,} bytes, not {length:,}",
                "SignatureDoesNotMatch",
            )
            return
        try:
            etag = self._store(granted.key, granted.part, length)
        except ValueError as exc:
            self.close_connection = True
            self._refuse(400, str(exc))
            return
        except (StorageUnavailable, OSError):
            self.close_connection = True
            self._refuse(503, "object storage is unavailable, retry later")
            return
        if granted.part is None:
            self.server.created(granted.key)  # durable now: S3 would raise its event
        self.send_response(200)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _not_allowed(self) -> None:
        """A method presigned URLs never grant (S3: 405 MethodNotAllowed); the body is not
        read."""
        self.close_connection = True
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD, PUT, OPTIONS")
        payload = json.dumps(
            {"code": "MethodNotAllowed", "message": "a presigned URL takes GET, HEAD or PUT"}
        ).encode("utf-8")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_DELETE = do_PATCH = _not_allowed

    def _store(self, key: str, part: tuple[str, int] | None, length: int) -> str:
        store = self.server.store
        if part is None:
            store.put_file(key, self.rfile, length)
            return ""
        return store.write_part(key, part[0], part[1], self.rfile, length)

    def do_OPTIONS(self) -> None:
        """A CORS preflight, answered as the bucket's CORS rules say (S3's behaviour)."""
        origin = self._allowed_origin()
        if origin is None:
            self._refuse(403, "CORS is not allowed for this origin")
            return
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
        asked = self.headers.get("Access-Control-Request-Headers")
        if asked:
            self.send_header("Access-Control-Allow-Headers", asked)
        self.send_header("Access-Control-Max-Age", "3000")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _allowed_origin(self) -> str | None:
        origin = self.headers.get("Origin")
        allowed = self.server.cors_origins
        if origin is None or not allowed:
            return None
        return "*" if "*" in allowed else origin if origin in allowed else None

    def end_headers(self) -> None:
        origin = self._allowed_origin() if self.command != "OPTIONS" else None
        if origin is not None:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header(
                "Access-Control-Expose-Headers",
                "Content-Type, Content-Length, Content-Disposition, ETag",
            )
        super().end_headers()

    def _serve(self, *, body: bool) -> None:
        raw_path, _, query = self.path.partition("?")
        if not raw_path.startswith(PATH_PREFIX):
            self._refuse(404, "no such object")
            return
        key = unquote(raw_path[len(PATH_PREFIX) :])
        try:
            granted = self.server.signer.verify(
                key, dict(parse_qsl(query, keep_blank_values=True)), method=self.command
            )
        except UrlRefused as refused:
            self._refuse(403, refused.message, refused.code)
            return
        root = self.server.root
        path = (root / key).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            self._refuse(404, "no such object")
            return
        self.send_response(200)
        self.send_header("Content-Type", granted.content_type or "application/octet-stream")
        if granted.filename:
            self.send_header("Content-Disposition", f'attachment; filename="{granted.filename}"')
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        if body:
            with path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    self.wfile.write(chunk)

    def _refuse(self, status: int, message: str, code: str = "") -> None:
        """A short JSON error; ``code``: S3's error code when S3 would name one."""
        document = {"code": code, "message": message} if code else {"message": message}
        payload = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to logging instead of stderr."""
        logger.info("%s %s", self.address_string(), format % args)


class ObjectServer(ThreadingHTTPServer):
    """Serves signed object URLs from ``root`` on ``address``."""

    daemon_threads = True

    def __init__(  # noqa: PLR0913 - the server's address, keys, files and bucket rules
        self,
        address: tuple[str, int],
        signer: UrlSigner,
        root: Path,
        expirations: tuple[tuple[str, int], ...] = (),
        cors_origins: tuple[str, ...] = (),
        *,
        on_created: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.signer = signer
        self.root = root.resolve()
        self.store = FileBlobStore(self.root)
        self.created = on_created
        self.expirations = expirations
        self.cors_origins = cors_origins
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of this server."""
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> None:
        """Serve in a daemon thread; apply the bucket's lifecycle rules in another."""
        self._thread = threading.Thread(target=self.serve_forever, name="objects", daemon=True)
        self._thread.start()
        if self.expirations:
            self._sweeper = threading.Thread(target=self._sweep, name="lifecycle", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while True:
            removed = expire(self.root, self.expirations, time.time())
            if removed:
                logger.info("lifecycle: %d expired objects removed", removed)
            if self._stopping.wait(SWEEP_INTERVAL_S):
                return

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stopping.set()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
