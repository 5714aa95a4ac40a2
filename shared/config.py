"""Settings read once from the environment; the only module that reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

# Lambda's synchronous invoke payload is 6,291,456 bytes of *event JSON*. A binary body
# travels base64-encoded (4/3) inside that JSON next to headers and request context, so
# the largest raw body a function can receive is a little under 4.7 MB. We accept up to
# 4,500,000 bytes inline and answer 413 above, leaving room for headers.
LAMBDA_EVENT_LIMIT = 6_291_456
DEFAULT_INLINE_LIMIT = 4_500_000
#: Where the adapters keep data: ``aws`` (S3, DynamoDB, Secrets Manager; also moto through
#: AWS_ENDPOINT_URL_*), ``local`` (files and SQLite in ``data_dir``: the embedded default of
#: ``make serve``). ``moto`` is ``aws`` pointed at moto by the local stack.
STORAGES = ("aws", "local", "moto")


@dataclass(frozen=True)
class Settings:
    """Deployment settings shared by the functions."""

    bucket: str = ""
    table: str = ""
    keys_secret_id: str = ""
    key_cache_ttl: float = 60.0
    base_path: str = "/o3-dpacs-wado"
    cors_allow_origin: str = "*"
    inline_limit: int = DEFAULT_INLINE_LIMIT
    presign_ttl: int = 300
    anonymization_secret_id: str = ""
    storage: str = "aws"
    data_dir: str = ".local-data"
    local_url: str = ""  # the local server's root, for signed object URLs
    #: Whether requests emit CloudWatch metrics (EMF on stdout); Powertools' own switch,
    #: POWERTOOLS_METRICS_DISABLED=true, turns them off (the local stack: no CloudWatch).
    metrics: bool = True
    #: The usage identifier of keys stored before per-key limits (the stack's legacy plan).
    legacy_usage_key: str = ""
    #: The calling AE title recorded for STOW-RS at the single root (``POST rs/studies``).
    default_calling_aet: str = "DICOMWEB"
    #: Days a deleted instance is kept under ``deleted/`` for a restore (0: purged at once;
    #: the bucket's lifecycle rule purges the rest, ``DeletedRetentionDays``).
    deleted_retention_days: int = 30
    #: The EventBridge bus the change feed's events go to (``default``: the account's).
    event_bus_name: str = "default"
    #: Seconds without a change after which a study is announced stable (``StudyStable``).
    study_stable_seconds: float = 300.0

    @property
    def embedded(self) -> bool:
        """Whether data lives in ``data_dir`` (files and SQLite) rather than in AWS."""
        return self.storage == "local"

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment-like mapping, validating numbers."""
        try:
            ttl = float(env.get("KEY_CACHE_TTL", "60"))
            limit = int(env.get("INLINE_PAYLOAD_LIMIT", str(DEFAULT_INLINE_LIMIT)))
            presign_ttl = int(env.get("PRESIGN_TTL", "300"))
            retention = int(env.get("DELETED_RETENTION_DAYS", "30") or "30")
            stable = float(env.get("STUDY_STABLE_SECONDS", "300") or "300")
        except ValueError as exc:
            raise ValueError(
                "KEY_CACHE_TTL, INLINE_PAYLOAD_LIMIT, PRESIGN_TTL, DELETED_RETENTION_DAYS and"
                " STUDY_STABLE_SECONDS must be numbers"
            ) from exc
        if ttl < 0 or limit <= 0 or not 1 <= presign_ttl <= 3600 or retention < 0 or stable < 0:
            raise ValueError(
                "KEY_CACHE_TTL must be >= 0, INLINE_PAYLOAD_LIMIT > 0, PRESIGN_TTL 1..3600,"
                " DELETED_RETENTION_DAYS >= 0, STUDY_STABLE_SECONDS >= 0"
            )
        storage = env.get("DICOMWEB_STORAGE", "aws") or "aws"
        if storage not in STORAGES:
            raise ValueError(f"DICOMWEB_STORAGE must be one of {', '.join(STORAGES)}")
        return cls(
            bucket=env.get("DICOM_BUCKET", ""),
            table=env.get("INDEX_TABLE", ""),
            keys_secret_id=env.get("API_KEYS_SECRET_ID", ""),
            key_cache_ttl=ttl,
            base_path=env.get("API_BASE_PATH", "/o3-dpacs-wado").rstrip("/"),
            cors_allow_origin=env.get("CORS_ALLOW_ORIGIN", "*"),
            inline_limit=limit,
            presign_ttl=presign_ttl,
            anonymization_secret_id=env.get("ANONYMIZATION_SECRET_ID", ""),
            storage=storage,
            data_dir=env.get("DICOMWEB_DATA_DIR", ".local-data") or ".local-data",
            local_url=env.get("DICOMWEB_LOCAL_URL", ""),
            metrics=env.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() != "true",
            legacy_usage_key=env.get("LEGACY_USAGE_KEY", ""),
            default_calling_aet=env.get("DEFAULT_CALLING_AET", "") or "DICOMWEB",
            deleted_retention_days=retention,
            event_bus_name=env.get("EVENT_BUS_NAME", "") or "default",
            study_stable_seconds=stable,
        )


@cache
def settings() -> Settings:
    """Return the process-wide settings, read from ``os.environ`` on first use."""
    return Settings.from_mapping(os.environ)
