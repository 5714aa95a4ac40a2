"""Composition root: adapters built from Settings on first use, reused across invocations.

Importing this module opens no connection and reads no setting. Tests swap adapters with
:func:`override`.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from shared import config
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.s3_blobs import S3BlobStore
from shared.ports import BlobStore, Catalog, InstanceIndex

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, tcp_keepalive=True)
_cache: dict[str, Any] = {}


def blobs() -> BlobStore:
    """The Part 10 object store."""
    if "blobs" not in _cache:
        client = boto3.client("s3", config=_BOTO_CONFIG.merge(Config(signature_version="s3v4")))
        _cache["blobs"] = S3BlobStore(client, config.settings().bucket)
    store: BlobStore = _cache["blobs"]
    return store


def index() -> InstanceIndex:
    """The DynamoDB index."""
    if "index" not in _cache:
        client = boto3.client("dynamodb", config=_BOTO_CONFIG)
        _cache["index"] = DynamoInstanceIndex(client, config.settings().table)
    idx: InstanceIndex = _cache["index"]
    return idx


def catalog() -> Catalog:
    """The read side of the index (QIDO)."""
    if "catalog" not in _cache:
        client = boto3.client("dynamodb", config=_BOTO_CONFIG)
        _cache["catalog"] = DynamoSearch(client, config.settings().table)
    found: Catalog = _cache["catalog"]
    return found


def override(**adapters: Any) -> None:
    """Replace adapters (tests); ``override()`` with no arguments resets everything."""
    if not adapters:
        _cache.clear()
    _cache.update(adapters)
