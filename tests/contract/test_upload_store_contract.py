"""The upload path's storage port (``UploadStore``), one contract for both adapters: S3 (moto
in-process, presigned URLs followed with requests) and files (the local object server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from local.objects import ObjectServer
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import UrlSigner
from shared.adapters.s3_blobs import S3BlobStore

BUCKET = "contract-uploads"
MIB = 1 << 20


@pytest.fixture(params=["s3", "files"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "s3":
        request.getfixturevalue("mocked_aws")
        client = boto3.client("s3", region_name="us-east-1")
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
    url = store.presign_put("incoming/a", expires=300, content_type="application/dicom")
    reply = requests.put(
        url, data=b"payload", headers={"Content-Type": "application/dicom"}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert store.read("incoming/a") == b"payload"
    info = store.stat("incoming/a")
    assert info is not None and info.size == 7


def test_a_multipart_upload_assembles_its_parts_and_checks_their_etags(store: Any) -> None:
    parts_data = [b"a" * (5 * MIB), b"b" * 100]
    upload = store.start_multipart("incoming/big", "application/dicom")
    etags = []
    for number, data in enumerate(parts_data, start=1):
        url = store.presign_part("incoming/big", upload, number, expires=300)
        reply = requests.put(url, data=data, timeout=30)
        assert reply.status_code == 200, reply.text
        etags.append((number, reply.headers["ETag"]))
    with pytest.raises(ValueError):
        store.complete_multipart("incoming/big", upload, [(1, etags[0][1]), (2, '"0000"')])
    store.complete_multipart("incoming/big", upload, etags)
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
