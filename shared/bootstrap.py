"""Composition root: the archive's adapters, built from Settings (cosmicpython's bootstrap).

:func:`build` returns an :class:`Archive`: one deployment's object store, index, catalog,
de-identified lookup, audit sink, API key store (with the authorizer's cached key ring over
it) and anonymizer. The backend is ``Settings.storage``: ``aws`` (S3, DynamoDB, Secrets
Manager; moto through ``AWS_ENDPOINT_URL_*``) or ``local`` (files and SQLite in
``Settings.data_dir``). Each part is built on first use and kept as long as the archive
lives, so a function pays only for what it touches (the authorizer builds the key store and
nothing else); building an archive opens no connection.

Handlers take their archive from a :class:`Provider`: the one of the current settings
(:func:`current`, built once per container), unless a test gave it another, made by
``build(settings, objects=fake, ...)``. The local stack, tools and benchmarks build theirs
with :func:`build` too. Of the code the functions run, only this module imports
``shared.adapters``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config

from shared import config, keys
from shared.ports import (
    AuditSink,
    Catalog,
    DeidentifiedLookup,
    EventBus,
    InstanceIndex,
    KeyStore,
    Lease,
    ObjectStore,
    Secret,
)

if TYPE_CHECKING:  # the authorizer imports this module: services are loaded when first used
    from shared.dicom.uid_map import UidMap
    from shared.services.anonymizer import Anonymizer

#: Where the embedded backend keeps each part, under ``Settings.data_dir``.
INDEX_FILE = "index.sqlite3"
OBJECTS_DIR = "objects"
SECRETS_DIR = "secrets"
API_KEYS_FILE = "api-keys.json"
AUDIT_FILE = "audit.jsonl"
LEASES_FILE = "leases.sqlite3"
EVENTS_FILE = "events.jsonl"
ANONYMIZATION_KEY_FILE = "anonymization.key"
URL_SIGNING_KEY_FILE = "url-signing.key"

BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, tcp_keepalive=True)
#: S3 presigns with SigV4 (required by KMS-encrypted buckets and every new region).
S3_CONFIG = BOTO_CONFIG.merge(Config(signature_version="s3v4"))
#: Makes a boto3 client: ``clients(service, config)``.
Clients = Callable[[str, Config], Any]

_T = TypeVar("_T")


def aws_client(service: str, client_config: Config) -> Any:
    """A boto3 client configured by the environment (region, credentials, endpoints)."""
    factory: Any = boto3.client  # the stubs want a literal service name
    return factory(service, config=client_config)


@dataclass(frozen=True, eq=False)
class Archive:
    """One deployment's adapters, each built on first use (``given`` ones are used as they
    are: tests hand fakes in through :func:`build`)."""

    settings: config.Settings
    given: Mapping[str, Any] = field(default_factory=dict, repr=False)
    clients: Clients = field(default=aws_client, repr=False)
    _built: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def _part(self, name: str, make: Callable[[], _T]) -> _T:
        if name in self.given:
            return cast(_T, self.given[name])
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = make()
        return cast(_T, self._built[name])

    def _data(self, *parts: str) -> Path:
        return Path(self.settings.data_dir).joinpath(*parts)

    # ------------------------------------------------------------ the parts

    @property
    def objects(self) -> ObjectStore:
        """The object store: S3 (SigV4 presigning) or a directory with signed local URLs."""
        return self._part("objects", self._make_objects)

    @property
    def index(self) -> InstanceIndex:
        """The index's write side: DynamoDB or SQLite (writing the de-identified UIDs too)."""
        return self._part("index", self._make_index)

    @property
    def catalog(self) -> Catalog:
        """The index's read side (QIDO, WADO lookups): DynamoDB or SQLite."""
        return self._part("catalog", self._make_catalog)

    @property
    def deidentified(self) -> DeidentifiedLookup:
        """The index's de-identified UIDs: the catalog adapter answers them."""
        return self._part("deidentified", lambda: cast(DeidentifiedLookup, self.catalog))

    @property
    def lease(self) -> Lease:
        """Leases of background jobs: items of the index table, or rows of a SQLite file."""
        return self._part("lease", self._make_lease)

    @property
    def events(self) -> EventBus:
        """Where the change feed's events go: EventBridge (AWS) or ``events.jsonl`` (the
        local stack, on either of its backends)."""
        return self._part("events", self._make_events)

    @property
    def audit(self) -> AuditSink:
        """The audit trail: the function's log stream (AWS) or a JSON-lines file (local)."""
        return self._part("audit", self._make_audit)

    @property
    def key_store(self) -> KeyStore:
        """Where API key digests live: a Secrets Manager secret or a file."""
        return self._part("key_store", self._make_key_store)

    @property
    def key_ring(self) -> keys.KeyRingCache:
        """The active API keys as the authorizer checks them: the key store's list, re-read
        after ``Settings.key_cache_ttl`` and when an unknown key is presented."""
        return self._part(
            "key_ring",
            lambda: keys.KeyRingCache(self.key_store.load, self.settings.key_cache_ttl),
        )

    @property
    def anonymizer(self) -> Anonymizer:
        """De-identification with the deployment key (read from its secret when first used)."""
        return self._part("anonymizer", self._make_anonymizer)

    # ------------------------------------------------------------ how each is made

    def _make_objects(self) -> ObjectStore:
        if self.settings.embedded:
            from shared.adapters.file_blobs import FileBlobStore  # noqa: PLC0415
            from shared.adapters.local_secrets import FileSecret  # noqa: PLC0415
            from shared.adapters.local_urls import UrlSigner  # noqa: PLC0415

            signing_key = FileSecret(self._data(SECRETS_DIR, URL_SIGNING_KEY_FILE)).value()
            signer = UrlSigner(signing_key, self.settings.local_url)
            return FileBlobStore(self._data(OBJECTS_DIR), signer)
        from shared.adapters.s3_blobs import S3BlobStore  # noqa: PLC0415

        return S3BlobStore(self.clients("s3", S3_CONFIG), self.settings.bucket)

    def _dynamodb(self) -> Any:
        return self._part("dynamodb", lambda: self.clients("dynamodb", BOTO_CONFIG))

    def _make_index(self) -> InstanceIndex:
        if self.settings.embedded:
            from shared.adapters.sqlite_index import SqliteIndex  # noqa: PLC0415

            return SqliteIndex(self._data(INDEX_FILE), self._uid_map())
        from shared.adapters.dynamo_index import DynamoInstanceIndex  # noqa: PLC0415

        return DynamoInstanceIndex(self._dynamodb(), self.settings.table, uid_map=self._uid_map())

    def _make_catalog(self) -> Catalog:
        if self.settings.embedded:
            from shared.adapters.sqlite_catalog import SqliteCatalog  # noqa: PLC0415

            return SqliteCatalog(self._data(INDEX_FILE), self._uid_map())
        from shared.adapters.dynamo_search import DynamoSearch  # noqa: PLC0415

        return DynamoSearch(self._dynamodb(), self.settings.table)

    def _make_lease(self) -> Lease:
        if self.settings.embedded:
            from shared.adapters.sqlite_lease import SqliteLease  # noqa: PLC0415

            return SqliteLease(self._data(LEASES_FILE))
        from shared.adapters.dynamo_lease import DynamoLease  # noqa: PLC0415

        return DynamoLease(self._dynamodb(), self.settings.table)

    def _make_events(self) -> EventBus:
        if self.settings.storage != "aws":
            from shared.adapters.file_bus import JsonLinesBus  # noqa: PLC0415

            return JsonLinesBus(self._data(EVENTS_FILE))
        from shared.adapters.eventbridge_bus import EventBridgeBus  # noqa: PLC0415

        return EventBridgeBus(self.clients("events", BOTO_CONFIG), self.settings.event_bus_name)

    def _make_audit(self) -> AuditSink:
        from shared.adapters.audit_log import FileAuditSink, LogAuditSink  # noqa: PLC0415

        if self.settings.embedded:
            return FileAuditSink(self._data(AUDIT_FILE))
        return LogAuditSink()

    def _make_key_store(self) -> KeyStore:
        from shared.adapters import key_store as stores  # noqa: PLC0415

        if self.settings.embedded:
            return stores.FileKeyStore(self._data(SECRETS_DIR, API_KEYS_FILE))
        client = self.clients("secretsmanager", BOTO_CONFIG)
        return stores.SecretsManagerKeyStore(client, self.settings.keys_secret_id)

    def _anonymization_secret(self) -> Secret:
        def make() -> Secret:
            if self.settings.embedded:
                from shared.adapters.local_secrets import FileSecret  # noqa: PLC0415

                return FileSecret(self._data(SECRETS_DIR, ANONYMIZATION_KEY_FILE))
            from shared.adapters.secrets_manager import SecretsManagerSecret  # noqa: PLC0415

            return SecretsManagerSecret(
                lambda: self.clients("secretsmanager", BOTO_CONFIG),
                self.settings.anonymization_secret_id,
                "the anonymization key",
            )

        return self._part("anonymization_secret", make)

    def _make_anonymizer(self) -> Anonymizer:
        from shared.services.anonymizer import Anonymizer  # noqa: PLC0415

        return Anonymizer(lambda: self._anonymization_secret().value())

    def _uid_map(self) -> UidMap | None:
        """The de-identified UIDs the index writes (the anonymizer's key); None on AWS
        when no anonymization secret is configured (nothing is written then, and the
        de-identified view finds nothing)."""

        def make() -> UidMap | None:
            from shared.dicom.uid_map import UidMap  # noqa: PLC0415

            if not self.settings.embedded and not self.settings.anonymization_secret_id:
                return None
            return UidMap(self.anonymizer.key())

        return self._part("uid_map", make)


def build(  # noqa: PLR0913 - keyword-only: any part may be given
    settings: config.Settings,
    *,
    objects: ObjectStore | None = None,
    index: InstanceIndex | None = None,
    catalog: Catalog | None = None,
    deidentified: DeidentifiedLookup | None = None,
    audit: AuditSink | None = None,
    key_store: KeyStore | None = None,
    anonymizer: Anonymizer | None = None,
    clients: Clients = aws_client,
) -> Archive:
    """The archive of ``settings``; a part given here is used instead of the one the
    settings would build (``clients`` makes the boto3 clients of the AWS adapters)."""
    parts = {
        "objects": objects,
        "index": index,
        "catalog": catalog,
        "deidentified": deidentified,
        "audit": audit,
        "key_store": key_store,
        "anonymizer": anonymizer,
    }
    return Archive(settings, {k: v for k, v in parts.items() if v is not None}, clients)


_archives: dict[config.Settings, Archive] = {}
_archives_lock = threading.Lock()


def current() -> Archive:
    """The archive of the current settings (``config.settings()``), built once per process
    for each settings value (the local stack serves two backends from one process)."""
    settings = config.settings()
    found = _archives.get(settings)
    if found is None:
        with _archives_lock:
            found = _archives.setdefault(settings, build(settings))
    return found


class Provider:
    """Where a handler module takes its archive: :func:`current`, or the one set here.

    Each function module holds one (``archive = bootstrap.Provider()``); a test or a
    benchmark hands the module an archive of fakes with :meth:`using` (or :meth:`set`), and
    nothing else sees it.
    """

    def __init__(self) -> None:
        self._archive: Archive | None = None

    def __call__(self) -> Archive:
        """The archive to use now."""
        return self._archive if self._archive is not None else current()

    def set(self, archive: Archive | None) -> None:
        """Use ``archive`` from now on (None: the current settings' archive again)."""
        self._archive = archive

    @contextmanager
    def using(self, archive: Archive) -> Iterator[Archive]:
        """Use ``archive`` while the context lasts."""
        previous = self._archive
        self.set(archive)
        try:
            yield archive
        finally:
            self.set(previous)
