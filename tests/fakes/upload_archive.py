"""An in-memory archive on a real HTTP socket speaking the importer's contract: STOW-RS
(with the 4,500,000-byte body limit) and the presigned upload path (single PUT or
multipart parts, each URL taking exactly its declared length as S3 does, complete, status
polling), with knobs for throttling and failures.

It keeps the instances it stored (SOP Instance UID -> bytes), so a test asserts on state.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pydicom

LIMIT = 4_500_000
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"


@dataclass
class State:
    """What the fake holds and how it misbehaves."""

    base: str = ""
    stored: dict[str, bytes] = field(default_factory=dict)
    stow_requests: list[int] = field(default_factory=list)  # body sizes
    throttle: list[int] = field(default_factory=list)  # statuses to answer first (429, 503)
    single_put_limit: int = 1_000_000  # above: multipart
    part_size: int = 300_000
    uploads_enabled: bool = True
    pending_polls: int = 1  # polls answered "pending" before the result
    put_failures: int = 0  # presigned PUTs answered 503 before one succeeds
    qido_status: int = 200  # 403: a key that may store but not search
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=itertools.count)

    def next_throttle(self) -> int | None:
        with self.lock:
            return self.throttle.pop(0) if self.throttle else None

    def store(self, data: bytes) -> tuple[str, str, int | None]:
        """(status, SOP Instance UID, failure reason) for one Part 10 file."""
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            sop = str(ds.SOPInstanceUID)
            str(ds.StudyInstanceUID)
        except Exception:  # noqa: BLE001 - a fake archive refuses what it cannot read
            return "failed", "", 0xC000
        with self.lock:
            if sop in self.stored:
                if self.stored[sop] == data:
                    return "duplicate", sop, None
                return "failed", sop, 0x0111
            self.stored[sop] = data
        return "stored", sop, None


def _item(sop: str, code: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"00081155": {"vr": "UI", "Value": [sop]} if sop else {"vr": "UI"}}
    if code is not None:
        item["00081197"] = {"vr": "US", "Value": [code]}
    return item


def _parts(body: bytes, content_type: str) -> list[bytes]:
    match = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    if not match:
        return []
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        header_end = chunk.find(b"\r\n\r\n")
        parts.append(chunk[header_end + 4 : -2])
    return parts


class _Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *_: Any) -> None:
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state = self.state
        body = self._body()
        if self.path.endswith("/studies"):
            self._stow(body)
        elif self.path.endswith("/uploads"):
            if not state.uploads_enabled:
                self._send(404, {"message": "Missing Authentication Token"})
                return
            self._ticket(json.loads(body))
        elif self.path.startswith("/complete/"):
            upload = state.uploads[self.path.rsplit("/", 1)[1]]
            etags = {p["partNumber"]: p["etag"] for p in json.loads(body)["parts"]}
            if sorted(etags) != list(range(1, len(self._part_sizes(upload)) + 1)):
                self._send(400, {"message": "parts must list each part 1 to N once"})
                return
            if etags != {n: hashlib.md5(d).hexdigest() for n, d in upload["parts"].items()}:  # noqa: S324
                self._send(400, {"message": "ETag mismatch"})
                return
            upload["data"] = b"".join(upload["parts"][n] for n in sorted(upload["parts"]))
            self._send(202, {"uploadId": upload["id"], "status": "pending"})
        else:
            self._send(404)

    def _stow(self, body: bytes) -> None:
        state = self.state
        state.stow_requests.append(len(body))
        throttled = state.next_throttle()
        if throttled:
            self._send(throttled, {"message": "slow down"}, {"Retry-After": "0"})
            return
        if len(body) > LIMIT:
            self._send(413, {"message": "too large"})
            return
        referenced, failed = [], []
        for part in _parts(body, self.headers.get("Content-Type", "")):
            status, sop, code = state.store(part)
            if status == "failed":
                failed.append(_item(sop, code))
            else:
                referenced.append(_item(sop))
        answer: dict[str, Any] = {}
        if referenced:
            answer[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced}
        if failed:
            answer[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
        self._send(200 if not failed else 202 if referenced else 409, answer)

    def _ticket(self, request: dict[str, Any]) -> None:
        state = self.state
        upload_id = f"u{next(state.ids)}"
        upload: dict[str, Any] = {
            "id": upload_id,
            "size": request["size"],
            "sha256": request.get("sha256"),
            "parts": {},
            "data": None,
            "polls": 0,
        }
        state.uploads[upload_id] = upload
        ticket: dict[str, Any] = {
            "uploadId": upload_id,
            "status": "pending",
            "statusUrl": f"{state.base}/status/{upload_id}",
            "expiresAt": "2030-01-01T00:00:00Z",
        }
        if request["size"] <= state.single_put_limit:
            ticket["upload"] = {
                "method": "PUT",
                "url": f"{state.base}/put/{upload_id}",
                "headers": {"Content-Type": "application/dicom"},
            }
        else:
            count = -(-request["size"] // state.part_size)
            ticket["multipart"] = {
                "partSize": state.part_size,
                "parts": [
                    {"partNumber": n, "url": f"{state.base}/part/{upload_id}/{n}"}
                    for n in range(1, count + 1)
                ],
                "completeUrl": f"{state.base}/complete/{upload_id}",
            }
        self._send(201, ticket)

    def do_PUT(self) -> None:
        state = self.state
        body = self._body()
        if "Authorization" in self.headers:
            self._send(400, {"message": "a presigned URL takes no Authorization header"})
            return
        with state.lock:
            fail, state.put_failures = state.put_failures > 0, max(0, state.put_failures - 1)
        if fail:
            self._send(503, {"message": "SlowDown"})
            return
        pieces = self.path.strip("/").split("/")
        upload = state.uploads[pieces[1]]
        signed = (
            upload["size"] if pieces[0] == "put" else self._part_sizes(upload)[int(pieces[2]) - 1]
        )
        if len(body) != signed:  # the URL signs content-length
            message = f"the URL is signed for {signed} bytes, not {len(body)}"
            self._send(403, {"code": "SignatureDoesNotMatch", "message": message})
            return
        if pieces[0] == "put":
            upload["data"] = body
            self._send(200)
        else:
            upload["parts"][int(pieces[2])] = body
            self._send(200, headers={"ETag": hashlib.md5(body).hexdigest()})  # noqa: S324

    def _part_sizes(self, upload: dict[str, Any]) -> list[int]:
        """Each part's size: ``part_size``, the last one the remainder."""
        size, part = upload["size"], self.state.part_size
        count = -(-size // part)
        return [part] * (count - 1) + [size - (count - 1) * part]

    def do_GET(self) -> None:
        state = self.state
        if self.path.startswith("/status/"):
            upload = state.uploads.get(self.path.rsplit("/", 1)[1])
            if upload is None:
                self._send(404)
                return
            self._send(200, self._status(upload))
        elif "/instances" in self.path:
            if state.qido_status != 200:
                self._send(state.qido_status, {"message": "Forbidden"})
                return
            held = [
                {"00080018": {"vr": "UI", "Value": [uid]}}
                for uid in re.findall(r"[0-9.]+", unquote(self.path.split("SOPInstanceUID=")[-1]))
                if uid in state.stored
            ]
            self._send(200, held)
        else:
            self._send(404)

    def _status(self, upload: dict[str, Any]) -> dict[str, Any]:
        upload["polls"] += 1
        data = upload["data"]
        if data is None or upload["polls"] <= self.state.pending_polls:
            return {"uploadId": upload["id"], "status": "pending"}
        if "result" not in upload:
            if len(data) != upload["size"] or (
                upload["sha256"] and hashlib.sha256(data).hexdigest() != upload["sha256"]
            ):
                upload["result"] = ("failed", "", 0xC000)
            else:
                upload["result"] = self.state.store(data)
        status, sop, code = upload["result"]
        answer: dict[str, Any] = {"uploadId": upload["id"], "status": status}
        if sop:
            answer["sopInstanceUID"] = sop
        if code is not None:
            answer["failureReason"] = code
            answer["message"] = "refused"
        return answer


@contextmanager
def fake_archive() -> Iterator[State]:
    """Serve a fresh :class:`State` on a free loopback port; ``state.base`` is the base URL."""
    state = State()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
