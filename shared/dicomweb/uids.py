"""UID syntax (PS3.5 §9.1) and UIDs taken from URL paths."""

from __future__ import annotations

import re
from urllib.parse import unquote

from shared.errors import BadRequest

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_LENGTH = 64


def valid_uid(value: str) -> bool:
    """Digits and dots, components without leading zeros, at most 64 characters."""
    return len(value) <= MAX_LENGTH and bool(_UID.match(value))


def path_uid(value: str | None) -> str | None:
    """A study, series or instance UID from the URL path; 400 when it is not a valid UID."""
    if value is None:
        return None
    uid = unquote(value).strip()
    if not valid_uid(uid):
        raise BadRequest("the UID in the URL is not a valid UID")
    return uid
