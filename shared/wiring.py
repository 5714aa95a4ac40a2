"""Composition root: adapters built from Settings on first use, reused across invocations.

The only place that builds AWS clients and picks a backend (``Settings.storage``): ``aws``
(S3, DynamoDB, Secrets Manager; moto through ``AWS_ENDPOINT_URL_*``) or ``local`` (files
and SQLite in ``Settings.data_dir``). Importing this module opens no connection and reads
no setting. Tests swap adapters with :func:`override`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared import config, keys
from shared.deadline import Deadline
from shared.errors import Conflict, NotAcceptable, StorageUnavailable
from shared.ports import (
    AuditSink,
    Catalog,
    DeidentifiedLookup,
    InstanceIndex,
    KeyStore,
    ObjectStore,
)

if TYPE_CHECKING:  # the authorizer imports this module: keep the retrieve service out of it
    from shared.dicom.uid_map import UidMap
    from shared.services.deidentified import View
    from shared.services.retrieve import Anonymizer, Delivery

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, tcp_keepalive=True)
# Adapters are built once per Settings value (a process serving two backends, as the test
# suite does, keeps one set per backend); tests replace them by name with override().
_built: dict[tuple[str, config.Settings], Any] = {}
_overrides: dict[str, Any] = {}

INDEX_FILE = "index.sqlite3"
OBJECTS_DIR = "objects"
SECRETS_DIR = "secrets"
API_KEYS_FILE = "api-keys.json"
AUDIT_FILE = "audit.jsonl"


def _client(service: str, **kwargs: Any) -> Any:
    factory: Any = boto3.client  # the stubs want a literal service name
    return factory(service, config=kwargs.pop("config", _BOTO_CONFIG), **kwargs)


def data_path(*parts: str) -> Path:
    """A path under the embedded backend's data directory."""
    return Path(config.settings().data_dir).joinpath(*parts)


def objects() -> ObjectStore:
    """The Part 10 object store: S3 (SigV4 presigning) or a directory."""
    return uploads()


def uploads() -> ObjectStore:
    """The object store with what the upload path needs (presigned PUTs, copies, lists)."""

    def build() -> ObjectStore:
        settings = config.settings()
        if settings.embedded:
            from shared.adapters.file_blobs import FileBlobStore  # noqa: PLC0415
            from shared.adapters.local_secrets import secret  # noqa: PLC0415
            from shared.adapters.local_urls import UrlSigner  # noqa: PLC0415

            signing_key = secret(data_path(SECRETS_DIR, "url-signing.key"))
            signer = UrlSigner(signing_key, settings.local_url)
            return FileBlobStore(data_path(OBJECTS_DIR), signer)
        from shared.adapters.s3_blobs import S3BlobStore  # noqa: PLC0415

        client = _client("s3", config=_BOTO_CONFIG.merge(Config(signature_version="s3v4")))
        return S3BlobStore(client, settings.bucket)

    store: ObjectStore = _cached("objects", build)
    return store


def blobs() -> ObjectStore:
    """The Part 10 object store, as STOW uses it."""
    store: ObjectStore = _overrides["blobs"] if "blobs" in _overrides else objects()
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

    def attributes(self, document: dict[str, Any]) -> dict[str, Any]:
        """DICOM JSON attributes (a QIDO result) de-identified; ``ValueError`` if they cannot be."""
        module = importlib.import_module("shared.dicom.anonymize")
        cleaned: dict[str, Any] = module.anonymize_json(document, anonymization_key())
        return cleaned


def anonymizer() -> Anonymizer:
    """The de-identification the WADO functions apply for ``anonymize``."""
    return _Anonymizer()


def delivery(memory_budget: int, deadline: Deadline | None = None) -> Delivery:
    """How the WADO functions answer: object store, inline limit, presigning, anonymizer,
    and the request's memory budget and deadline."""
    from shared.services.retrieve import Delivery  # noqa: PLC0415

    settings = config.settings()
    return Delivery(
        store=objects(),
        inline_limit=settings.inline_limit,
        presign_ttl=settings.presign_ttl,
        anonymizer=anonymizer(),
        memory_budget=memory_budget,
        deadline=deadline or Deadline.never(),
    )


def anonymization_key() -> bytes:
    """The deployment's secret key for UID replacement (read once per container)."""

    def build() -> bytes:
        settings = config.settings()
        if settings.embedded:
            from shared.adapters.local_secrets import secret  # noqa: PLC0415

            return secret(data_path(SECRETS_DIR, "anonymization.key"))
        client = _client("secretsmanager")
        try:
            reply = client.get_secret_value(SecretId=settings.anonymization_secret_id)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the anonymization key is unavailable") from exc
        value: bytes = reply["SecretString"].encode("utf-8")
        return value

    key: bytes = _cached("anonymization_key", build)
    return key


def uid_map() -> UidMap | None:
    """The de-identified UIDs the index keeps for the read-deidentified view (the deployment
    key); None on AWS when no anonymization secret is configured (nothing is written then,
    and the view finds nothing)."""

    def build() -> UidMap | None:
        from shared.dicom.uid_map import UidMap  # noqa: PLC0415

        settings = config.settings()
        if not settings.embedded and not settings.anonymization_secret_id:
            return None
        return UidMap(anonymization_key())

    mapping: UidMap | None = _cached("uid_map", build)
    return mapping


def index() -> InstanceIndex:
    """The index's write side: DynamoDB or SQLite (writing the de-identified UIDs too)."""

    def build() -> InstanceIndex:
        settings = config.settings()
        if settings.embedded:
            from shared.adapters.sqlite_index import SqliteIndex  # noqa: PLC0415

            return SqliteIndex(data_path(INDEX_FILE), uid_map())
        from shared.adapters.dynamo_index import DynamoInstanceIndex  # noqa: PLC0415

        return DynamoInstanceIndex(_client("dynamodb"), settings.table, uid_map=uid_map())

    idx: InstanceIndex = _cached("index", build)
    return idx


def catalog() -> Catalog:
    """The read side of the index (QIDO, WADO lookups): DynamoDB or SQLite."""

    def build() -> Catalog:
        settings = config.settings()
        if settings.embedded:
            from shared.adapters.sqlite_catalog import SqliteCatalog  # noqa: PLC0415

            return SqliteCatalog(data_path(INDEX_FILE), uid_map())
        from shared.adapters.dynamo_search import DynamoSearch  # noqa: PLC0415

        return DynamoSearch(_client("dynamodb"), settings.table)

    found: Catalog = _cached("catalog", build)
    return found


def deidentified_lookup() -> DeidentifiedLookup:
    """The index's de-identified UIDs: the catalog adapter answers them too."""
    lookup: DeidentifiedLookup = _overrides.get("deidentified_lookup") or catalog()  # type: ignore[assignment]
    return lookup


def deidentified_view() -> View:
    """What a read-deidentified key sees (``shared.services.deidentified``)."""
    from shared.services.deidentified import View  # noqa: PLC0415

    return View(catalog(), deidentified_lookup(), _Anonymizer())


def audit_sink() -> AuditSink:
    """The audit trail: the function's log stream (AWS) or a JSON-lines file (embedded)."""

    def build() -> AuditSink:
        from shared.adapters.audit_log import FileAuditSink, LogAuditSink  # noqa: PLC0415

        if config.settings().embedded:
            return FileAuditSink(data_path(AUDIT_FILE))
        return LogAuditSink()

    sink: AuditSink = _cached("audit_sink", build)
    return sink


def key_store() -> KeyStore:
    """Where API key digests live: a Secrets Manager secret or a file."""

    def build() -> KeyStore:
        settings = config.settings()
        from shared.adapters import key_store as stores  # noqa: PLC0415

        if settings.embedded:
            return stores.FileKeyStore(data_path(SECRETS_DIR, API_KEYS_FILE))
        return stores.SecretsManagerKeyStore(_client("secretsmanager"), settings.keys_secret_id)

    store: KeyStore = _cached("key_store", build)
    return store


def key_ring() -> keys.KeyRing:
    """The active API keys, re-read at most every ``KEY_CACHE_TTL`` seconds (authorizer)."""
    now = time.monotonic()
    slot = ("key_ring", config.settings())
    loaded = _built.get(slot)
    if loaded is None or now - loaded[1] >= slot[1].key_cache_ttl:
        loaded = (keys.KeyRing(key_store().load()), now)
        _built[slot] = loaded
    ring: keys.KeyRing = loaded[0]
    return ring


def _cached(name: str, build: Callable[[], Any]) -> Any:
    """The adapter ``name``: an override, or the one built for the current settings."""
    if name in _overrides:
        return _overrides[name]
    slot = (name, config.settings())
    if slot not in _built:
        _built[slot] = build()
    return _built[slot]


def override(**adapters: Any) -> None:
    """Replace adapters by name (tests); ``override()`` with no arguments resets everything."""
    if not adapters:
        _overrides.clear()
        _built.clear()
    _overrides.update(adapters)
