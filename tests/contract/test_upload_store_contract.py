"""The object store port (``ObjectStore``) on the upload path, one contract for both adapters: S3 (moto
in-process, presigned URLs followed with requests) and files (the local object server).

moto stores whatever a presigned URL sends without checking its signature; S3 does check it.
So on S3 each presigned request is first held to S3's rule (:func:`_s3_signature_holds`: the
SigV4 signature recomputed over the headers the URL signed, with the values the request
sends), and refused with S3's 403 when it would not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
import requests
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from local.objects import ObjectServer
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import UrlSigner
from shared.adapters.s3_blobs import S3BlobStore

BUCKET = "contract-uploads"
REGION = "us-east-1"
CREDENTIALS = Credentials("AKIACONTRACTTEST", "contract-test-secret")
MIB = 1 << 20


def _s3_signature_holds(url: str, method: str, headers: dict[str, str]) -> bool:
    """Whether S3 would accept this presigned request: every header the URL signed is sent,
    and the signature over their sent values is the URL's (SigV4 query authentication)."""
    split = urlsplit(url)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    sent = {name.lower(): value for name, value in headers.items()} | {"host": split.netloc}
    signed = query["X-Amz-SignedHeaders"].split(";")
    if any(name not in sent for name in signed):
        return False
    unsigned = "&".join(p for p in split.query.split("&") if not p.startswith("X-Amz-Signature="))
    request = AWSRequest(
        method=method,
        url=split._replace(query=unsigned).geturl(),
        headers={name: sent[name] for name in signed},
    )
    request.context["timestamp"] = query["X-Amz-Date"]
    auth = S3SigV4QueryAuth(CREDENTIALS, "s3", REGION)
    expected = auth.signature(
        auth.string_to_sign(request, auth.canonical_request(request)), request
    )
    return bool(expected == query["X-Amz-Signature"])


def put(url: str, data: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    """PUT ``data`` to a presigned URL as a client does; on S3, refused as S3 would."""
    sent = {**(headers or {}), "Content-Length": str(len(data))}
    if ".amazonaws.com/" in url and not _s3_signature_holds(url, "PUT", sent):
        refused = requests.Response()
        refused.status_code = 403
        refused._content = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        return refused
    return requests.put(url, data=data, headers=headers, timeout=30)


@pytest.fixture(params=["s3", "files"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "s3":
        request.getfixturevalue("mocked_aws")
        client = boto3.client(
            "s3",
            region_name=REGION,
            aws_access_key_id=CREDENTIALS.access_key,
            aws_secret_access_key=CREDENTIALS.secret_key,
            config=Config(signature_version="s3v4"),  # as shared.bootstrap builds it
        )
        client.create_bucket(Bucket=BUCKET)
        yield S3BlobStore(client, BUCKET)
        return
    signer = UrlSigner(b"s" * 32, "")
    server = ObjectServer(("127.0.0.1", 0), signer, tmp_path)
    server.start()
    try:
        yield FileBlobStore(tmp_path, UrlSigner(b"s" * 32, server.base_url))
    finally:
        server.stop()


def test_a_presigned_put_stores_the_object(store: Any) -> None:
    url = store.presign_put("incoming/a", expires=300, content_type="application/dicom", size=7)
    reply = put(url, b"payload", {"Content-Type": "application/dicom"})
    assert reply.status_code == 200, reply.text
    assert store.read("incoming/a") == b"payload"
    info = store.stat("incoming/a")
    assert info is not None and info.size == 7


@pytest.mark.parametrize("body", [b"payload!", b"payloa", b""], ids=["longer", "shorter", "empty"])
def test_a_presigned_put_of_another_size_than_declared_is_refused(store: Any, body: bytes) -> None:
    url = store.presign_put("incoming/a", expires=300, content_type="application/dicom", size=7)
    reply = put(url, body, {"Content-Type": "application/dicom"})
    assert reply.status_code == 403
    assert b"SignatureDoesNotMatch" in reply.content
    assert store.stat("incoming/a") is None


def test_the_signature_check_refuses_an_altered_url(store: Any) -> None:
    url = store.presign_put("incoming/a", expires=300, content_type="application/dicom", size=7)
    reply = put(
        url.replace("incoming/a", "incoming/b"), b"payload", {"Content-Type": "application/dicom"}
    )
    assert reply.status_code == 403
    assert store.stat("incoming/b") is None


def test_a_multipart_upload_assembles_its_parts_and_checks_their_etags(store: Any) -> None:
    parts_data = [b"a" * (5 * MIB), b"b" * 100]
    upload = store.start_multipart("incoming/big", "application/dicom")
    etags = []
    for number, data in enumerate(parts_data, start=1):
        url = store.presign_part("incoming/big", upload, number, expires=300, size=len(data))
        assert put(url, data[:-1]).status_code == 403  # a part of another size than signed
        reply = put(url, data)
        assert reply.status_code == 200, reply.text
        etags.append((number, reply.headers["ETag"]))
    size = sum(map(len, parts_data))
    with pytest.raises(ValueError):
        store.complete_multipart("incoming/big", upload, [(1, etags[0][1]), (2, '"0000"')], size)
    with pytest.raises(ValueError, match="declared"):
        store.complete_multipart("incoming/big", upload, etags, size + 1)
    assert store.stat("incoming/big") is None
    store.complete_multipart("incoming/big", upload, etags, size)
    assert store.read("incoming/big") == b"".join(parts_data)


def test_missing_objects_are_none_not_errors(store: Any) -> None:
    assert store.read("results/none.json") is None
    assert store.stat("incoming/none") is None
    with store.local_file("incoming/none") as path:
        assert path is None


def test_copy_listing_and_a_local_file(store: Any) -> None:
    for key in ("incoming/s/b", "incoming/s/a", "incoming/t/c", "results/x.json"):
        store.put(key, key.encode())
    store.copy("incoming/s/a", "dicom/1/2/3.dcm")
    assert store.read("dicom/1/2/3.dcm") == b"incoming/s/a"
    assert store.read("incoming/s/a") == b"incoming/s/a"  # a copy, not a move
    assert [i.key for i in store.listing("incoming/")] == [
        "incoming/s/a",
        "incoming/s/b",
        "incoming/t/c",
    ]
    assert [i.key for i in store.listing("incoming/s")] == ["incoming/s/a", "incoming/s/b"]
    assert [i.key for i in store.listing("incoming/", "incoming/s/b")] == ["incoming/t/c"]
    with store.local_file("incoming/t/c") as path:
        assert path is not None and path.read_bytes() == b"incoming/t/c"
    assert store.read_range("incoming/t/c", 9, 100) == b"t/c"  # what there is of the range
    assert store.read_range("incoming/t/c", 0, 8) == b"incoming"
