"""URLs of our resources, as the seed names them (WADO-RS under ``{base}/rs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def base_url(event: Mapping[str, Any], base_path: str) -> str:
    """Absolute URL of the API base (``.../o3-dpacs-wado``) as the client reached it.

    API Gateway puts the resource path in ``path`` and the path the client used (with the
    stage, or a custom domain's base path mapping) in ``requestContext.path``; the
    difference is the prefix to keep.
    """
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items() if v is not None}
    host = headers.get("host", "localhost")
    proto = headers.get("x-forwarded-proto", "https").split(",")[0].strip()
    resource_path = str(event.get("path") or "")
    client_path = str((event.get("requestContext") or {}).get("path") or resource_path)
    prefix = client_path[: -len(resource_path)] if client_path.endswith(resource_path) else ""
    return f"{proto}://{host}{prefix.rstrip('/')}{base_path}"


def study_url(base: str, study_uid: str) -> str:
    """WADO-RS URL of a study."""
    return f"{base}/rs/studies/{study_uid}"


def instance_url(base: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """WADO-RS URL of an instance."""
    return f"{study_url(base, study_uid)}/series/{series_uid}/instances/{sop_instance_uid}"
