"""Normalised forms used as index keys and for matching (PS3.4 C.2.2.2)."""

from __future__ import annotations

import unicodedata


def person_name_key(alphabetic: str) -> str:
    """Upper-case, accent-free form of a person name's alphabetic group.

    PS3.4 lets PN matching ignore case (and, at the implementer's option, accents); the
    index stores this form so prefix queries work on it.
    """
    decomposed = unicodedata.normalize("NFKD", alphabetic)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.upper().split())


def date_key(value: str) -> str:
    """YYYYMMDD from a DA value, '' when absent or unparseable (ACR-NEMA dots removed)."""
    digits = value.replace(".", "").strip()
    return digits if len(digits) == 8 and digits.isdigit() else ""


def time_key(value: str) -> str:
    """HHMMSS.ffffff, zero-padded, from a TM value; '' when absent or unparseable."""
    raw = value.replace(":", "").strip()
    whole, _, fraction = raw.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return ""
    return f"{whole.ljust(6, '0')}.{fraction[:6].ljust(6, '0')}"
