"""Settings: only shared/config.py reads the environment; values are validated."""

from __future__ import annotations

import re

import pytest

from shared.config import DEFAULT_INLINE_LIMIT, LAMBDA_EVENT_LIMIT, Settings
from tests.support.handlers import ROOT


def test_only_config_reads_the_environment() -> None:
    pattern = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("shared", "functions")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "config.py"
    ]
    assert offenders == []


def test_defaults_and_overrides() -> None:
    settings = Settings.from_mapping(
        {"DICOM_BUCKET": "b", "INDEX_TABLE": "t", "KEY_CACHE_TTL": "5"}
    )
    assert (settings.bucket, settings.table, settings.key_cache_ttl) == ("b", "t", 5.0)
    assert settings.inline_limit == DEFAULT_INLINE_LIMIT
    assert settings.base_path == "/o3-dpacs-wado"


def test_inline_limit_fits_a_base64_body_in_the_lambda_event() -> None:
    assert DEFAULT_INLINE_LIMIT * 4 / 3 + 64 * 1024 < LAMBDA_EVENT_LIMIT


@pytest.mark.parametrize("env", [{"KEY_CACHE_TTL": "x"}, {"INLINE_PAYLOAD_LIMIT": "0"}])
def test_invalid_numbers_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_mapping(env)
