"""Attribute matching of QIDO-RS (PS3.4 C.2.2.2 as applied by PS3.18 §8.3.4).

Works on DICOM JSON datasets (what the index stores), so the same code is the reference
matcher in tests and the filter applied to keyed DynamoDB results.

Choices where the standard leaves room (documented in the conformance statement):
* person names match case-insensitively. A value written in ASCII is compared with the
  alphabetic component group (where Latin names are, and what the name index holds); a
  value in another script with every group (alphabetic, ideographic, phonetic). With
  ``fuzzymatching=true`` every group is compared accent-insensitively, every word of the
  query being a prefix of some name component;
* other string values match case-sensitively; a multi-valued attribute matches when any
  of its values does;
* an empty or absent attribute matches only universal and ``""`` (empty-value) queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from shared.dicom.normalize import fold_name
from shared.dicomweb.query import Condition, Query, normalise
from shared.errors import BadRequest

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NAME_SPLIT = re.compile(r"[\^=\s,.\-]+")


def matches(query: Query, dataset: Mapping[str, Any]) -> bool:
    """Whether a DICOM JSON dataset satisfies every condition of the query."""
    for condition in query.conditions:
        if query.combined_datetime and condition.keyword in ("StudyDate", "StudyTime"):
            continue
        if not _matches(condition, dataset, query.fuzzy):
            return False
    return not query.combined_datetime or _combined(query, dataset)


def _matches(condition: Condition, dataset: Mapping[str, Any], fuzzy: bool) -> bool:
    if condition.kind == "universal":
        return True
    element = dataset.get(condition.tag) or {}
    if condition.item_tag:
        items = element.get("Value") or []
        inner = [i for i in items if isinstance(i, Mapping)]
        return any(_value_matches(condition, i.get(condition.item_tag) or {}, fuzzy) for i in inner)
    return _value_matches(condition, element, fuzzy)


def _value_matches(condition: Condition, element: Mapping[str, Any], fuzzy: bool) -> bool:
    values = [v for v in element.get("Value") or [] if v is not None and v != ""]
    if condition.kind == "empty":
        return not values
    if not values:
        return False
    if condition.vr == "PN":
        return any(_pn_matches(condition, v, fuzzy) for v in values)
    return any(_scalar_matches(condition, v) for v in values)


def _scalar_matches(condition: Condition, value: Any) -> bool:  # noqa: PLR0911 - one exit per matching type
    kind, vr = condition.kind, condition.vr
    if kind == "list":
        return str(value) in condition.values
    if kind == "wildcard":
        return _wildcard(condition.value, casefold=False).fullmatch(str(value)) is not None
    if vr in ("DA", "TM", "DT"):
        try:
            stored = normalise(vr, str(value))
        except BadRequest:  # a stored value we cannot read never matches
            return False
        if kind == "range":
            high_stored = normalise(vr, str(value), end="high") if vr == "DT" else stored
            return (not condition.low or high_stored >= condition.low) and (
                not condition.high or stored <= condition.high
            )
        return stored == normalise(vr, condition.value)
    if isinstance(value, (int, float)):
        try:
            return float(value) == float(condition.value)
        except ValueError:
            return False
    return str(value).rstrip() == condition.value


def _pn_matches(condition: Condition, value: Any, fuzzy: bool) -> bool:
    groups = [value.get(g, "") for g in _PN_GROUPS] if isinstance(value, Mapping) else [value]
    if not fuzzy and all(v.isascii() for v in condition.values):
        groups = groups[:1]  # Latin values: the alphabetic group only
    groups = [g for g in groups if g]
    if fuzzy:
        return any(_fuzzy(condition.value, g) for g in groups)
    if condition.kind == "wildcard":
        pattern = _wildcard(condition.value, casefold=True)
        return any(pattern.fullmatch(g.casefold()) for g in groups)
    if condition.kind == "list":
        wanted = {v.casefold() for v in condition.values}
        return any(g.casefold() in wanted for g in groups)
    return any(g.casefold() == condition.value.casefold() for g in groups)


def _fuzzy(query_value: str, name: str) -> bool:
    cleaned = fold_name(query_value.replace("*", " ").replace("?", " "))
    words = [w for w in _NAME_SPLIT.split(cleaned) if w]
    components = [c for c in _NAME_SPLIT.split(fold_name(name)) if c]
    return all(any(c.startswith(w) for c in components) for w in words)


@lru_cache(maxsize=256)
def _wildcard(pattern: str, *, casefold: bool) -> re.Pattern[str]:
    text = pattern.casefold() if casefold else pattern
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile("".join(parts), re.DOTALL)


def _combined(query: Query, dataset: Mapping[str, Any]) -> bool:
    """StudyDate + StudyTime ranges as one date-time range (PS3.4 C.2.2.2.5.1)."""
    date_c, time_c = query.condition("StudyDate"), query.condition("StudyTime")
    assert date_c is not None and time_c is not None  # noqa: S101 - guarded by the caller
    date = _first(dataset, date_c.tag)
    if not date:
        return False
    time = _first(dataset, time_c.tag) or "000000"
    try:
        stored = normalise("DA", date) + normalise("TM", time)
    except BadRequest:
        return False
    low = (date_c.low + (time_c.low or "000000.000000")) if date_c.low else ""
    high = (date_c.high + (time_c.high or "235959.999999")) if date_c.high else ""
    return (not low or stored >= low) and (not high or stored <= high)


def _first(dataset: Mapping[str, Any], tag: str) -> str:
    values: Iterable[Any] = (dataset.get(tag) or {}).get("Value") or []
    for value in values:
        return str(value)
    return ""
