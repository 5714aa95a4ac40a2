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

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment-like mapping, validating numbers."""
        try:
            ttl = float(env.get("KEY_CACHE_TTL", "60"))
            limit = int(env.get("INLINE_PAYLOAD_LIMIT", str(DEFAULT_INLINE_LIMIT)))
            presign_ttl = int(env.get("PRESIGN_TTL", "300"))
        except ValueError as exc:
            raise ValueError(
                "KEY_CACHE_TTL, INLINE_PAYLOAD_LIMIT and PRESIGN_TTL must be numbers"
            ) from exc
        if ttl < 0 or limit <= 0 or not 1 <= presign_ttl <= 3600:
            raise ValueError(
                "KEY_CACHE_TTL must be >= 0, INLINE_PAYLOAD_LIMIT > 0, PRESIGN_TTL 1..3600"
            )
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
        )


@cache
def settings() -> Settings:
    """Return the process-wide settings, read from ``os.environ`` on first use."""
    return Settings.from_mapping(os.environ)
