"""QIDO-RS query parameters (PS3.18 §8.3.4, §10.6.1) parsed and validated.

Matching keys are keywords (``PatientID``) or 8-hex tags (``00100020``), and for the one
stored sequence a dotted path (``RequestAttributesSequence.RequestedProcedureID``).
API Gateway has already percent-decoded the values (``%2A`` arrives as ``*``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared._generated.dictionary import ATTRIBUTES
from shared.dicom.levels import (
    COMPUTED_KEYWORDS,
    REQUEST_ATTRIBUTE_KEYWORDS,
    STORED,
    Level,
)
from shared.dicom.normalize import InvalidValue, comparable, person_name_key
from shared.dicomweb.uids import valid_uid
from shared.errors import BadRequest

#: Far past any archive's result list; larger values are refused rather than read past.
MAX_OFFSET = 10_000_000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000

Kind = Literal["universal", "single", "list", "wildcard", "range", "empty"]

_CONTROL = ("includefield", "fuzzymatching", "limit", "offset")
_BY_TAG = {tag: keyword for keyword, (tag, _) in ATTRIBUTES.items()}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_NUMERIC_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_DATE_VRS = {"DA", "TM", "DT"}
_LIST_SEPARATORS = re.compile(r"[\\,]")


@dataclass(frozen=True)
class Condition:
    """One matching key with its value, classified by PS3.4 C.2.2.2 matching type."""

    keyword: str
    tag: str
    vr: str
    kind: Kind
    values: tuple[str, ...] = ()
    low: str = ""  # normalised range ends ("" = open)
    high: str = ""
    item_keyword: str = ""  # dotted path into a sequence: the item attribute
    item_tag: str = ""

    @property
    def value(self) -> str:
        """The single value (single and wildcard matching)."""
        return self.values[0] if self.values else ""


@dataclass(frozen=True)
class Query:
    """A validated QIDO-RS request."""

    level: Level
    conditions: tuple[Condition, ...] = ()
    includefields: frozenset[str] = frozenset()  # tags
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    limit_capped: bool = False
    study_uid: str | None = None  # from the path
    series_uid: str | None = None
    combined_datetime: bool = False  # StudyDate + StudyTime as one range
    condition_by_keyword: dict[str, Condition] = field(default_factory=dict, compare=False)

    def condition(self, keyword: str) -> Condition | None:
        """The condition on a keyword, if the query has one."""
        return self.condition_by_keyword.get(keyword)

    # What an index can use (the adapters plan their reads from these).

    @property
    def unconditioned(self) -> bool:
        """Whether every condition matches anything (no matching key narrows the search)."""
        return all(c.kind == "universal" for c in self.conditions)

    def exact(self, keyword: str) -> str | None:
        """The value of a single-value (exact) condition on ``keyword``, if any."""
        condition = self.condition(keyword)
        if condition is not None and condition.kind == "single" and condition.value:
            return condition.value
        return None

    def uids(self, keyword: str) -> tuple[str, ...]:
        """The values of a single-value or list condition, each once, in the order given."""
        condition = self.condition(keyword)
        if condition is not None and condition.kind in ("single", "list"):
            return tuple(dict.fromkeys(condition.values))
        return ()

    def name_prefix(self) -> str:
        """The normalised literal start of a PatientName condition that a name index keyed
        by :func:`~shared.dicom.normalize.person_name_key` can serve ('' when none can:
        fuzzy matching, a leading wildcard, a non-Latin start)."""
        condition = self.condition("PatientName")
        if condition is None or self.fuzzy or condition.kind not in ("single", "wildcard"):
            return ""
        literal = condition.value
        for index, char in enumerate(literal):
            if char in "*?":
                literal = literal[:index]
                break
        prefix = person_name_key(literal) if literal.strip() == literal else ""
        # Latin names only: the index holds the alphabetic component group.
        return prefix if prefix.isascii() and prefix[:1].isalpha() else ""


def matching_keywords(level: Level, study_uid: str | None, series_uid: str | None) -> set[str]:
    """Attributes usable as matching keys at a level, given the resource path.

    Searches not scoped by a study accept study (and patient) keys too; instance searches
    not scoped by a series accept series keys (PS3.18 §10.6.1.2).
    """
    keys = set(STORED[level]) | set(COMPUTED_KEYWORDS[level]) - {"RetrieveURL"}
    if level == "SERIES" and study_uid is None:
        keys |= set(STORED["STUDY"]) | set(COMPUTED_KEYWORDS["STUDY"]) - {"RetrieveURL"}
    if level == "INSTANCE":
        if series_uid is None:
            keys |= set(STORED["SERIES"])
        if study_uid is None:
            keys |= set(STORED["STUDY"])
        keys |= {"StudyInstanceUID", "SeriesInstanceUID"}
    if level == "SERIES":
        keys.add("StudyInstanceUID")
    return keys


@functools.cache
def _matching_keywords(level: Level, any_study: bool, any_series: bool) -> frozenset[str]:
    """:func:`matching_keywords` of a resource path (which UIDs it names, not their
    values), made once."""
    return frozenset(
        matching_keywords(level, None if any_study else "", None if any_series else "")
    )


def parse(
    params: Mapping[str, Sequence[str]] | None,
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Query:
    """Validate QIDO parameters; raise :class:`BadRequest` with the reason."""
    params = params or {}
    allowed = _matching_keywords(level, study_uid is None, series_uid is None)
    conditions: list[Condition] = []
    seen: set[str] = set()
    for name, values in params.items():
        if name in _CONTROL:
            continue
        condition = _condition(name, values, level, allowed)
        if condition.tag + condition.item_tag in seen:
            raise BadRequest(f"{condition.keyword} is given more than once")
        seen.add(condition.tag + condition.item_tag)
        conditions.append(condition)
    by_keyword = {c.keyword: c for c in conditions if not c.item_keyword}
    _check_path_consistency(by_keyword, study_uid, series_uid)
    include_all, includefields = _includefields(params.get("includefield", []))
    limit, capped = _limit(params.get("limit", []))
    date, time = by_keyword.get("StudyDate"), by_keyword.get("StudyTime")
    combined = bool(date and time and date.kind == "range" and time.kind == "range")
    _check_ranges(conditions, date if combined else None)
    return Query(
        level=level,
        conditions=tuple(conditions),
        includefields=frozenset(includefields),
        include_all=include_all,
        fuzzy=_fuzzy(params.get("fuzzymatching", [])),
        limit=limit,
        offset=_non_negative("offset", params.get("offset", []), 0),
        limit_capped=capped,
        study_uid=study_uid,
        series_uid=series_uid,
        combined_datetime=combined,
        condition_by_keyword=by_keyword,
    )


def _condition(
    name: str, values: Sequence[str], level: Level, allowed: frozenset[str]
) -> Condition:
    keyword, _, item = name.partition(".")
    keyword = _keyword(keyword)
    if len(values) != 1:
        raise BadRequest(f"{keyword} is given more than once")
    if keyword not in allowed:
        raise BadRequest(f"{keyword} is not a supported matching key at the {level.lower()} level")
    tag, vr = ATTRIBUTES[keyword]
    if item:
        item_keyword = _keyword(item)
        if keyword != "RequestAttributesSequence" or item_keyword not in REQUEST_ATTRIBUTE_KEYWORDS:
            raise BadRequest(f"{name} is not a supported sequence matching key")
        item_tag, item_vr = ATTRIBUTES[item_keyword]
        base = _classify(item_keyword, item_vr, values[0])
        return Condition(
            keyword, tag, item_vr, base.kind, base.values, base.low, base.high,
            item_keyword, item_tag,
        )  # fmt: skip
    if vr == "SQ":
        raise BadRequest(f"{keyword} is a sequence: match one of its attributes with a dotted path")
    return _classify(keyword, vr, values[0])


def _keyword(name: str) -> str:
    if _HEX_TAG.match(name):
        keyword = _BY_TAG.get(name.upper())
        if keyword is None:
            raise BadRequest(f"attribute {name.upper()} is not supported in queries")
        return keyword
    if name not in ATTRIBUTES:
        raise BadRequest(f"unknown or unsupported attribute {name!r}")
    return name


def _classify(keyword: str, vr: str, raw: str) -> Condition:  # noqa: PLR0911 - one branch per matching type
    tag = ATTRIBUTES[keyword][0]
    value = raw.strip() if vr not in ("LT", "ST", "UT") else raw.rstrip()
    if value in ("", "*"):
        return Condition(keyword, tag, vr, "universal")
    if value == '""':
        return Condition(keyword, tag, vr, "empty")
    if vr == "UI":
        uids = tuple(u.strip() for u in _LIST_SEPARATORS.split(value) if u.strip())
        bad = [u for u in uids if not valid_uid(u)]
        if bad or not uids:
            raise BadRequest(f"{keyword} must be one or more valid UIDs")
        return Condition(keyword, tag, vr, "list" if len(uids) > 1 else "single", uids)
    if vr in _DATE_VRS:
        return _date_condition(keyword, tag, vr, value)
    if vr in _NUMERIC_VRS:
        try:
            float(value)
        except ValueError:
            raise BadRequest(f"{keyword} must be a number") from None
        return Condition(keyword, tag, vr, "single", (value,))
    if vr == "CS" and _LIST_SEPARATORS.search(value):
        items = tuple(v.strip() for v in _LIST_SEPARATORS.split(value) if v.strip())
        return Condition(keyword, tag, vr, "list", items)
    if vr in _WILDCARD_VRS and ("*" in value or "?" in value):
        return Condition(keyword, tag, vr, "wildcard", (value,))
    return Condition(keyword, tag, vr, "single", (value,))


def _date_condition(keyword: str, tag: str, vr: str, value: str) -> Condition:
    if "*" in value or "?" in value:
        raise BadRequest(f"{keyword} does not take wildcards; use a range such as a-b")
    if "-" in value:
        low_raw, _, high_raw = value.partition("-")
        if vr == "DT" and value.count("-") > 1:
            raise BadRequest(f"{keyword} range is malformed")
        low = normalise(vr, low_raw, keyword, end="low") if low_raw else ""
        high = normalise(vr, high_raw, keyword, end="high") if high_raw else ""
        if low and high and low > high and vr != "TM":  # TM: see _check_ranges
            raise BadRequest(f"{keyword} range starts after it ends")
        if not low and not high:
            return Condition(keyword, tag, vr, "universal")
        return Condition(keyword, tag, vr, "range", (value,), low, high)
    normalise(vr, value, keyword, end="low")
    return Condition(keyword, tag, vr, "single", (value,))


def normalise(vr: str, value: str, keyword: str = "value", *, end: str = "low") -> str:
    """Comparable form of a DA/TM/DT query value (:func:`shared.dicom.normalize.comparable`);
    400 naming the parameter when it is not one."""
    try:
        return comparable(vr, value, end=end)
    except InvalidValue as exc:
        raise BadRequest(f"{keyword} value {value.strip()!r} is not {exc.expected}") from exc


def _includefields(values: Sequence[str]) -> tuple[bool, set[str]]:
    tags: set[str] = set()
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if item == "all":
                return True, set()
            if _HEX_TAG.match(item):
                keyword = _BY_TAG.get(item.upper())
                if keyword is not None:
                    tags.add(item.upper())
                continue  # a valid tag the index does not keep: nothing to return
            if not item.isidentifier():
                raise BadRequest(f"includefield {item!r} is neither a keyword nor a tag")
            if item in ATTRIBUTES:
                tags.add(ATTRIBUTES[item][0])
    return False, tags


def _fuzzy(values: Sequence[str]) -> bool:
    if not values:
        return False
    if len(values) > 1 or values[0].lower() not in ("true", "false"):
        raise BadRequest("fuzzymatching must be true or false")
    return values[0].lower() == "true"


def _non_negative(name: str, values: Sequence[str], default: int) -> int:
    if not values:
        return default
    text = values[0].strip()
    if len(values) > 1 or not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{name} must be a non-negative integer")
    value = int(text)
    if value > MAX_OFFSET:
        raise BadRequest(f"{name} must be at most {MAX_OFFSET:,}")
    return value


def _limit(values: Sequence[str]) -> tuple[int, bool]:
    limit = _non_negative("limit", values, DEFAULT_LIMIT)
    if limit == 0:
        raise BadRequest("limit must be at least 1")
    return min(limit, MAX_LIMIT), limit > MAX_LIMIT


def _check_ranges(conditions: Sequence[Condition], combined_date: Condition | None) -> None:
    """A TM range may wrap past midnight only as part of a combined StudyDate range."""
    for condition in conditions:
        if (
            condition.vr != "TM"
            or condition.kind != "range"
            or not (condition.low and condition.high)
        ):
            continue
        if combined_date is not None and condition.keyword == "StudyTime":
            if combined_date.low == combined_date.high and condition.low > condition.high:
                raise BadRequest("StudyDate/StudyTime range starts after it ends")
            continue
        if condition.low > condition.high:
            raise BadRequest(f"{condition.keyword} range starts after it ends")


def _check_path_consistency(
    by_keyword: Mapping[str, Condition], study_uid: str | None, series_uid: str | None
) -> None:
    for keyword, path_uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        condition = by_keyword.get(keyword)
        if path_uid is None or condition is None or condition.kind == "universal":
            continue
        if path_uid not in condition.values:
            raise BadRequest(f"{keyword} in the query contradicts the one in the path")
