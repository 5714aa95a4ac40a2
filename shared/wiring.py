"""Composition root: adapters built from Settings on first use, reused across invocations.

Importing this module opens no connection and reads no setting. Tests swap adapters with
:func:`override`.
"""

from __future__ import annotations

import importlib
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared import config
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.s3_blobs import S3BlobStore
from shared.errors import Conflict, NotAcceptable, StorageUnavailable
from shared.ports import BlobStore, Catalog, InstanceIndex, ObjectStore
from shared.services.retrieve import Anonymizer, Delivery

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, tcp_keepalive=True)
_cache: dict[str, Any] = {}


def objects() -> ObjectStore:
    """The Part 10 object store (S3, SigV4 presigning)."""
    if "objects" not in _cache:
        client = boto3.client("s3", config=_BOTO_CONFIG.merge(Config(signature_version="s3v4")))
        _cache["objects"] = S3BlobStore(client, config.settings().bucket)
    store: ObjectStore = _cache["objects"]
    return store


def blobs() -> BlobStore:
    """The Part 10 object store, as STOW uses it."""
    store: BlobStore = _cache["blobs"] if "blobs" in _cache else objects()
    return store


class _Anonymizer:
    """PS3.15 Basic Profile with the deployment key; pydicom is imported on first use."""

    def __call__(self, data: bytes) -> bytes:
        module = importlib.import_module("shared.dicom.anonymize")
        try:
            result: bytes = module.anonymize(data, anonymization_key())
        except module.BurnedInAnnotation as exc:
            raise Conflict(
                "the instance has burned-in annotation (BurnedInAnnotation YES): pixel data "
                "would still identify the patient, so it is not served anonymized"
            ) from exc
        except module.NotPart10 as exc:
            raise NotAcceptable("the stored object cannot be de-identified") from exc
        return result

    def uid(self, uid: str) -> str:
        module = importlib.import_module("shared.dicom.anonymize")
        mapped: str = module.map_uid(uid, anonymization_key())
        return mapped


def anonymizer() -> Anonymizer:
    """The de-identification the WADO functions apply for ``anonymize``."""
    return _Anonymizer()


def delivery(memory_budget: int) -> Delivery:
    """How the WADO functions answer: object store, inline limit, presigning, anonymizer."""
    settings = config.settings()
    return Delivery(
        store=objects(),
        inline_limit=settings.inline_limit,
        presign_ttl=settings.presign_ttl,
        anonymizer=anonymizer(),
        memory_budget=memory_budget,
    )


def anonymization_key() -> bytes:
    """The deployment's secret key for UID replacement (read once per container)."""
    if "anonymization_key" not in _cache:
        client = boto3.client("secretsmanager", config=_BOTO_CONFIG)
        try:
            secret = client.get_secret_value(SecretId=config.settings().anonymization_secret_id)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the anonymization key is unavailable, retry later") from exc
        _cache["anonymization_key"] = secret["SecretString"].encode("utf-8")
    key: bytes = _cache["anonymization_key"]
    return key


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
