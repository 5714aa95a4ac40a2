"""One empty archive per backend (the fake, files + SQLite, S3 + DynamoDB on moto) for the
contract suites: ``(objects, index, catalog factory)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.s3_blobs import S3BlobStore
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from tests.fakes import FakeIndex, FakeObjectStore, FakeSearchCatalog

KINDS = ("fake", "sqlite", "dynamodb")
TABLE = "archive-contract"


def empty(kind: str, tmp_path: Path, name: str = TABLE) -> tuple[Any, Any, Callable[[], Any]]:
    """An empty archive of one backend; for ``dynamodb``, moto must be active, and ``name``
    (the table's and the bucket's) new to it."""
    if kind == "fake":
        index: Any = FakeIndex()
        return FakeObjectStore(), index, lambda: FakeSearchCatalog(index)
    if kind == "sqlite":
        path = tmp_path / "index.sqlite3"
        return FileBlobStore(tmp_path / "objects"), SqliteIndex(path), lambda: SqliteCatalog(path)
    dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
    dynamodb.create_table(TableName=name, **local_template.load().tables["IndexTable"].create_args)
    s3.create_bucket(Bucket=name)
    index = DynamoInstanceIndex(dynamodb, name, sleep=lambda _: None)
    return S3BlobStore(s3, name), index, lambda: DynamoSearch(dynamodb, name)
