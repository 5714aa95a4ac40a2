"""Normalised forms of dates, times and names: index keys and matching (PS3.4 C.2.2.2).

The one place where DA/TM/DT values and person names are normalised: the index adapters
build their keys here, QIDO parses query values here, the matcher compares here.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime


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


def fold_name(text: str) -> str:
    """Case- and accent-free form of a name, for matching (PS3.4 C.2.2.2.1: PN may match
    regardless of case and accents)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


class InvalidValue(ValueError):
    """A DA, TM or DT value that is not one; ``expected`` names the form."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def comparable(vr: str, value: str, *, end: str = "low") -> str:
    """Comparable form of a DA/TM/DT value; ``end`` pads a partial value (PS3.4 C.2.2.2.5).

    DA -> YYYYMMDD; TM -> HHMMSS.ffffff; DT -> YYYYMMDDHHMMSS.ffffff (offsets ignored).
    Strict, for queries and matching: raises :class:`InvalidValue`. (Index keys use the
    lenient :func:`date_key` and :func:`time_key`, which give '' instead.)
    """
    text = value.strip()
    if vr == "DA":
        digits = text.replace(".", "") if len(text) == 10 else text
        if len(digits) != 8 or not digits.isdigit() or not _valid_date(digits):
            raise InvalidValue("a date (YYYYMMDD)")
        return digits
    if vr == "TM":
        return _time(text, end)
    return _datetime(text, end)


def _valid_date(digits: str) -> bool:
    try:
        datetime.strptime(digits, "%Y%m%d")  # noqa: DTZ007 - a calendar check, no zone
    except ValueError:
        return False
    return True


def _time(text: str, end: str) -> str:
    raw = text.replace(":", "")
    whole, _, fraction = raw.partition(".")
    ok = whole.isdigit() and len(whole) in (2, 4, 6) and (not fraction or fraction.isdigit())
    if ok:
        hh, mm, ss = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        ok = hh < 24 and mm < 60 and ss < 61 and len(fraction) <= 6
    if not ok:
        raise InvalidValue("a time (HHMMSS.FFFFFF)")
    pad = "9" if end == "high" else "0"
    whole = whole + ("59" * ((6 - len(whole)) // 2) if end == "high" else "0" * (6 - len(whole)))
    return f"{whole}.{fraction.ljust(6, pad) if fraction else pad * 6}"


def _datetime(text: str, end: str) -> str:
    core = re.split(r"[+-]", text, maxsplit=1)[0] if len(text) > 4 else text
    whole, _, fraction = core.partition(".")
    if (
        not whole.isdigit()
        or len(whole) not in (4, 6, 8, 10, 12, 14)
        or (fraction and not fraction.isdigit())
    ):
        raise InvalidValue("a date-time (YYYYMMDDHHMMSS)")
    high = end == "high"
    template = "99991231235959" if high else "00000101000000"
    filled = whole + template[len(whole) :]
    if high and len(whole) == 6:  # month given: last day is not 31 for every month
        filled = whole + "31235959"
    pad = "9" if high else "0"
    return f"{filled}.{fraction.ljust(6, pad) if fraction else pad * 6}"
