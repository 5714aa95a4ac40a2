"""Substring keys of study-level text attributes, for n-gram (trigram) indexes.

An index that can find every stored value containing a given string turns wildcard and
fuzzy queries into reads of candidates: ``*abc*``, ``abc*def``, ``*ab?c*`` and fuzzy name
words each require the value to contain certain literal runs. This module says, for a
study's attributes, which text an index keeps (:func:`study_terms`), and, for a query,
which runs every matching value must contain (:func:`required_runs`), both in the same
normalised form, so that a value the matcher accepts always contains the runs: the index
returns a superset of the matches and the matcher (:mod:`shared.dicomweb.matching`) keeps
the right ones.

Forms, per attribute kind (the matcher's rules, PS3.4 C.2.2.2):

* PN: each group of each value, case-folded (literal and wildcard matching are
  case-insensitive) and, when different, also case- and accent-folded (fuzzy matching);
* LO/SH (PatientID, AccessionNumber, StudyDescription): the values as stored (matching is
  case-sensitive).

A run shorter than :data:`NGRAM` characters cannot be looked up; a query none of whose
conditions has a long enough run is served another way (a prefix range, or a bounded walk).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from shared._generated.dictionary import ATTRIBUTES
from shared.dicom.normalize import fold_name
from shared.dicomweb.query import Query

NGRAM = 3
#: Attribute keyword -> column name of the index, in index column order.
TEXT_KEYS: dict[str, str] = {
    "PatientName": "name",
    "PatientID": "pid",
    "AccessionNumber": "acc",
    "StudyDescription": "descr",
    "ReferringPhysicianName": "ref",
}
_SEPARATOR = "\x1f"  # between values and groups: no query run contains it
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_WILDCARDS = re.compile(r"[*?]+")
_NAME_SPLIT = re.compile(r"[\^=\s,.\-]+")  # the matcher's fuzzy word separators


def study_terms(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """The indexed text of each :data:`TEXT_KEYS` attribute of a study (DICOM JSON)."""
    out = []
    for keyword in TEXT_KEYS:
        tag, vr = ATTRIBUTES[keyword]
        values = [v for v in (attrs.get(tag) or {}).get("Value") or [] if v not in (None, "")]
        parts: list[str] = []
        for value in values:
            if vr == "PN":
                groups = (
                    [value.get(g, "") for g in _PN_GROUPS]
                    if isinstance(value, Mapping)
                    else [str(value)]
                )
                for group in filter(None, groups):
                    folded, plain = fold_name(group), group.casefold()
                    parts += [plain] if folded == plain else [plain, folded]
            else:
                parts.append(str(value))
        out.append(_SEPARATOR.join(parts))
    return tuple(out)


def ngrams(text: str) -> set[str]:
    """The :data:`NGRAM`-character substrings of each value kept in an index ``text``
    (never across two values): the keys an n-gram index files the text under."""
    return {
        part[i : i + NGRAM] for part in text.split(_SEPARATOR) for i in range(len(part) - NGRAM + 1)
    }


def run_ngrams(run: str) -> set[str]:
    """The n-grams a run of a query (:func:`required_runs`) is made of: every value holding
    the run is filed under each of them."""
    return {run[i : i + NGRAM] for i in range(len(run) - NGRAM + 1)}


def holds(text: str | None, runs: tuple[str, ...], pattern: str) -> bool:
    """Whether an index ``text`` can belong to a match: it contains every run and, when
    the condition has a ``pattern`` (:func:`value_pattern`), a value matches it whole."""
    if not text:
        return False
    return all(run in text for run in runs) and (not pattern or part_matches(text, pattern))


def merge_terms(old: str, new: str) -> str:
    """An index text holding the values of ``old`` and then those of ``new`` not in it."""
    if not old or old == new:
        return new or old
    parts = old.split(_SEPARATOR)
    parts += [p for p in new.split(_SEPARATOR) if p and p not in parts]
    return _SEPARATOR.join(parts)


def required_runs(query: Query, keyword: str) -> tuple[str, ...]:
    """Literal runs that every value matching the query's condition on ``keyword``
    contains, in :func:`study_terms` form, longest first; those of at least :data:`NGRAM`
    characters can be looked up in an n-gram index, the others only filter."""
    condition = query.condition(keyword)
    if condition is None or condition.kind not in ("single", "wildcard"):
        return ()
    value = condition.value
    if condition.vr == "PN":
        if query.fuzzy:  # every word is the start of some name component
            cleaned = fold_name(value.replace("*", " ").replace("?", " "))
            runs = [w for w in _NAME_SPLIT.split(cleaned) if w]
        else:
            runs = _WILDCARDS.split(value.casefold())
    elif condition.kind == "wildcard":
        runs = _WILDCARDS.split(value)
    else:
        runs = [value]
    return tuple(sorted({r for r in runs if r}, key=lambda r: (-len(r), r)))


def value_pattern(query: Query, keyword: str) -> str:
    """The condition on ``keyword`` as a wildcard pattern over :func:`study_terms` text
    (PN: case-folded), for :func:`part_matches`; '' when none applies (fuzzy matching,
    lists, empty values)."""
    condition = query.condition(keyword)
    if condition is None or condition.kind not in ("single", "wildcard"):
        return ""
    if condition.vr == "PN":
        return "" if query.fuzzy else condition.value.casefold()
    return condition.value if condition.kind == "wildcard" else ""


def text_patterns(query: Query) -> dict[str, str]:
    """Index column -> :func:`value_pattern`, for every text condition that has one."""
    found = {column: value_pattern(query, keyword) for keyword, column in TEXT_KEYS.items()}
    return {column: pattern for column, pattern in found.items() if pattern}


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def part_matches(text: str | None, pattern: str) -> bool:
    """Whether one of the values kept in an index ``text`` matches the whole wildcard
    ``pattern`` (a superset of the matcher's answer: every group, every folding)."""
    if not text:
        return False
    compiled = _compiled(pattern)
    return any(compiled.fullmatch(part) for part in text.split(_SEPARATOR))


def text_runs(query: Query) -> dict[str, tuple[str, ...]]:
    """Index column -> required runs, for every text condition that has some."""
    found = {column: required_runs(query, keyword) for keyword, column in TEXT_KEYS.items()}
    return {column: runs for column, runs in found.items() if runs}


def lookup_runs(query: Query) -> dict[str, tuple[str, ...]]:
    """The runs an n-gram index should look up: :func:`text_runs`, except a PatientName
    that is an exact value or a plain prefix (``Smi*``), which a name index serves
    (``Smi*th`` uses both)."""
    runs = text_runs(query)
    prefix = query.name_prefix()
    condition = query.condition("PatientName")
    literal = condition.value.rstrip("*") if condition is not None else ""
    if prefix and not any(c in "*?" for c in literal):
        runs.pop(TEXT_KEYS["PatientName"], None)
    return runs


def literal_prefix(query: Query, keyword: str) -> str:
    """The literal start of a case-sensitive wildcard condition (``MRN12*``: ``MRN12``);
    '' when the value starts with a wildcard or the attribute is a person name."""
    condition = query.condition(keyword)
    if condition is None or condition.kind != "wildcard" or condition.vr == "PN":
        return ""
    return _WILDCARDS.split(condition.value, maxsplit=1)[0]
