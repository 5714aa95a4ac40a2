"""The local object server: signed GETs, and the bucket's lifecycle rules applied to files."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local import objects, template
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import UrlSigner

DAY = 86400


def _file(root: Path, key: str, age_days: float, now: float) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_objects_older_than_the_rule_are_removed_under_its_prefix_only(tmp_path: Path) -> None:
    now = time.time()
    old = _file(tmp_path, "retrieve/a", 1.5, now)
    fresh = _file(tmp_path, "retrieve/b", 0.5, now)
    archived = _file(tmp_path, "dicom/1/2/3/x.dcm", 400, now)
    assert objects.expire(tmp_path, (("retrieve/", 1),), now) == 1
    assert not old.exists()
    assert fresh.exists()
    assert archived.exists()


def test_a_rule_without_prefix_never_empties_the_archive(tmp_path: Path) -> None:
    now = time.time()
    archived = _file(tmp_path, "dicom/x.dcm", 400, now)
    assert objects.expire(tmp_path, (("", 1),), now) == 0
    assert archived.exists()


def test_the_template_bucket_expires_assembled_bodies_after_a_day() -> None:
    bucket = next(iter(template.load().buckets.values()))
    assert ("retrieve/", 1) in bucket.expirations


@pytest.fixture
def server(tmp_path: Path) -> Iterator[objects.ObjectServer]:
    served = objects.ObjectServer(
        ("127.0.0.1", 0), UrlSigner(b"k" * 32, ""), tmp_path, (("retrieve/", 1),), ("*",)
    )
    _file(tmp_path, "retrieve/old", 2, time.time())
    served.start()
    yield served
    served.stop()


def test_the_server_sweeps_when_it_starts(server: objects.ObjectServer) -> None:
    deadline = time.monotonic() + 5
    while (server.root / "retrieve" / "old").exists():
        assert time.monotonic() < deadline, "the lifecycle sweep did not run"
        time.sleep(0.05)
    assert any(t.name == "lifecycle" for t in threading.enumerate())


def test_a_signed_url_serves_the_object_and_a_tampered_one_is_refused(
    server: objects.ObjectServer,
) -> None:
    (server.root / "retrieve").mkdir(exist_ok=True)
    (server.root / "retrieve" / "body").write_bytes(b"payload")
    signer = UrlSigner(b"k" * 32, server.base_url)
    url = signer.url("retrieve/body", expires=60, content_type="application/dicom", filename=None)
    reply = requests.get(url, timeout=5)
    assert (reply.status_code, reply.content) == (200, b"payload")
    assert (
        requests.get(url.replace("retrieve/body", "retrieve/other"), timeout=5).status_code == 403
    )


def test_the_template_bucket_lets_browsers_follow_redirects() -> None:
    bucket = next(iter(template.load().buckets.values()))
    assert bucket.cors_origins == ("*",)  # CorsAllowOrigin's default


def test_cors_preflight_and_headers_as_the_bucket_rules_say(
    server: objects.ObjectServer,
) -> None:
    (server.root / "retrieve").mkdir(exist_ok=True)
    (server.root / "retrieve" / "body").write_bytes(b"payload")
    signer = UrlSigner(b"k" * 32, server.base_url)
    url = signer.url("retrieve/body", expires=60, content_type="application/dicom", filename=None)
    origin = {"Origin": "http://viewer.example"}
    preflight = requests.options(
        url,
        headers={**origin, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "accept"},
        timeout=5,
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Headers"] == "accept"
    reply = requests.get(url, headers=origin, timeout=5)
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Content-Type" in reply.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in requests.get(url, timeout=5).headers


class _Uploads:
    """An object server on tmp_path, what it announced, and a store signing URLs for it."""

    def __init__(self, root: Path) -> None:
        self.created: list[str] = []
        self.server = objects.ObjectServer(
            ("127.0.0.1", 0), UrlSigner(b"k" * 32, ""), root, on_created=self.created.append
        )
        self.server.start()
        self.store = FileBlobStore(root, UrlSigner(b"k" * 32, self.server.base_url))


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[_Uploads]:
    served = _Uploads(tmp_path)
    yield served
    served.server.stop()


def test_a_presigned_put_writes_the_object_and_announces_it(
    tmp_path: Path, uploads: _Uploads
) -> None:
    created, store = uploads.created, uploads.store
    url = store.presign_put(
        "incoming/uploads/a", expires=60, content_type="application/dicom", size=7
    )
    assert requests.put(url, data=b"payload", timeout=5).status_code == 200
    assert (tmp_path / "incoming" / "uploads" / "a").read_bytes() == b"payload"
    assert created == ["incoming/uploads/a"]
    # A PUT URL does not read, a GET URL does not write, and a changed key is refused.
    assert requests.get(url, timeout=5).status_code == 403
    get_url = store.presign_get("incoming/uploads/a", expires=60, content_type="x")
    assert requests.put(get_url, data=b"evil", timeout=5).status_code == 403
    other = url.replace("uploads/a", "uploads/b")
    assert requests.put(other, data=b"evil", timeout=5).status_code == 403
    assert not (tmp_path / "incoming" / "uploads" / "b").exists()


def test_multipart_parts_are_put_then_assembled(tmp_path: Path, uploads: _Uploads) -> None:
    store = uploads.store
    upload = store.start_multipart("incoming/big", "application/dicom")
    etags = []
    for number, chunk in ((1, b"a" * 1000), (2, b"b" * 10)):
        url = store.presign_part("incoming/big", upload, number, expires=60, size=len(chunk))
        reply = requests.put(url, data=chunk, timeout=5)
        assert reply.status_code == 200
        etags.append((number, reply.headers["ETag"]))
    assert not (tmp_path / "incoming" / "big").exists()  # not an object until completed
    assert list(store.listing("")) == []  # parts are not objects
    store.complete_multipart("incoming/big", upload, etags, size=1010)
    assert (tmp_path / "incoming" / "big").read_bytes() == b"a" * 1000 + b"b" * 10
    with pytest.raises(ValueError, match="no such upload"):
        store.complete_multipart("incoming/big", upload, etags, size=1010)


def test_a_put_without_a_length_or_cut_short_stores_nothing(
    tmp_path: Path, uploads: _Uploads
) -> None:
    served, store = uploads.server, uploads.store
    url = store.presign_put("incoming/x", expires=60, content_type="application/dicom", size=100)
    chunked = requests.put(url, data=iter([b"abc"]), timeout=5)  # no Content-Length
    assert chunked.status_code == 411
    host, port = served.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as connection:
        path = url.split(str(port), 1)[1]
        connection.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort".encode()
        )
        connection.shutdown(socket.SHUT_WR)
        assert connection.recv(100).startswith(b"HTTP/1.1 400")
    assert not (tmp_path / "incoming" / "x").exists()
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == []  # no temporary left


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (
            lambda url: url.split("&signature=")[0] + "&signature=%C3%A9t%C3%A9",
            "SignatureDoesNotMatch",
        ),
        (lambda url: url.split("&signature=")[0], "AccessDenied"),
        (
            lambda url: url.split("&signature=")[0] + "&signature=" + "0" * 64,
            "SignatureDoesNotMatch",
        ),
        (lambda url: url.replace("expires=", "expires=%E2%80%8B"), "SignatureDoesNotMatch"),
        (lambda url: url.split("?")[0], "AccessDenied"),
    ],
    ids=["non-ascii", "missing", "wrong", "non-ascii-expiry", "no-query"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_a_malformed_signature_is_a_403_with_a_reason_never_a_dropped_connection(
    uploads: _Uploads, tamper, code: str, method: str
) -> None:
    store = uploads.store
    store.put("retrieve/body", b"payload")
    if method == "PUT":
        url = store.presign_put("incoming/x", expires=60, content_type="application/dicom", size=3)
    else:
        url = store.presign_get("retrieve/body", expires=60, content_type="application/dicom")
    reply = requests.request(
        method, tamper(url), data=b"abc" if method == "PUT" else None, timeout=5
    )
    assert reply.status_code == 403
    if method != "HEAD":
        assert reply.json()["code"] == code
        assert reply.json()["message"]
    assert not (uploads.server.root / "incoming" / "x").exists()


def test_an_expired_url_is_a_403_access_denied(uploads: _Uploads) -> None:
    uploads.store.put("retrieve/body", b"payload")
    url = uploads.store.presign_get("retrieve/body", expires=-1, content_type="x")
    reply = requests.get(url, timeout=5)
    assert (reply.status_code, reply.json()["code"]) == (403, "AccessDenied")
    assert "expired" in reply.json()["message"]


@pytest.mark.parametrize("body", [b"", b"payloa", b"payload!", b"payload" * 1000])
def test_a_put_of_another_length_than_signed_is_refused_and_stores_nothing(
    tmp_path: Path, uploads: _Uploads, body: bytes
) -> None:
    store = uploads.store
    url = store.presign_put("incoming/x", expires=60, content_type="application/dicom", size=7)
    reply = requests.put(url, data=body, timeout=5)
    assert reply.status_code == 403
    assert reply.json()["code"] == "SignatureDoesNotMatch"
    assert "7 bytes" in reply.json()["message"]
    assert not (tmp_path / "incoming" / "x").exists()
    assert uploads.created == []
    upload = store.start_multipart("incoming/big", "application/dicom")
    part = store.presign_part("incoming/big", upload, 1, expires=60, size=7)
    assert requests.put(part, data=body, timeout=5).status_code == 403
    assert requests.put(part, data=b"payload", timeout=5).status_code == 200
    assert requests.put(url, data=b"payload", timeout=5).status_code == 200
    assert (tmp_path / "incoming" / "x").read_bytes() == b"payload"


def test_a_signed_length_cannot_be_changed_or_removed(uploads: _Uploads) -> None:
    url = uploads.store.presign_put("incoming/x", expires=60, content_type="t", size=7)
    longer = url.replace("length=7", "length=8")
    assert requests.put(longer, data=b"payload!", timeout=5).status_code == 403
    unbounded = url.replace("&length=7", "")
    assert requests.put(unbounded, data=b"payload!", timeout=5).status_code == 403


def test_the_template_bucket_expires_what_the_upload_path_writes() -> None:
    defaults = next(iter(template.load().buckets.values())).expirations
    assert {("quarantine/", 30), ("results/", 90), ("uploads/", 90)} <= set(defaults)
    kept = template.load(
        parameter_overrides={"QuarantineRetentionDays": "0", "UploadResultsRetentionDays": "7"}
    )
    rules = next(iter(kept.buckets.values())).expirations
    assert not any(prefix == "quarantine/" for prefix, _ in rules)  # 0: kept for ever
    assert {("results/", 7), ("uploads/", 7)} <= set(rules)


def test_the_upload_path_s_retention_leaves_pending_uploads_and_the_archive(
    tmp_path: Path,
) -> None:
    now = time.time()
    expired = [
        _file(tmp_path, "quarantine/DOE^JANE/a.dcm", 31, now),
        _file(tmp_path, "results/uploads/0a1b.json", 91, now),
        _file(tmp_path, "uploads/0a1b.json", 91, now),
        _file(tmp_path, "uploads/owners/00ff/0a1b", 91, now),
    ]
    kept = [
        _file(tmp_path, "quarantine/b.dcm", 29, now),
        _file(tmp_path, "uploads/0c2d.json", 0.25, now),  # asked for 6 hours ago
        _file(tmp_path, "incoming/uploads/0a1b", 91, now),  # never expired: ingested instead
        _file(tmp_path, "dicom/1/2/3.dcm", 400, now),
    ]
    rules = next(iter(template.load().buckets.values())).expirations
    assert objects.expire(tmp_path, rules, now) == len(expired)
    assert not any(path.exists() for path in expired)
    assert all(path.exists() for path in kept)


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH"])
def test_a_method_no_presigned_url_grants_is_405_and_changes_nothing(
    uploads: _Uploads, method: str
) -> None:
    uploads.store.put("retrieve/body", b"payload")
    url = uploads.store.presign_get("retrieve/body", expires=60, content_type="x")
    reply = requests.request(method, url, data=b"x" * 100, timeout=5)
    assert reply.status_code == 405
    assert reply.json()["code"] == "MethodNotAllowed"
    assert "PUT" in reply.headers["Allow"]
    assert (uploads.server.root / "retrieve" / "body").read_bytes() == b"payload"
