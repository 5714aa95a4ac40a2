"""Substring keys of study-level text attributes, for n-gram (trigram) indexes (issue 13).

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


def text_runs(query: Query) -> dict[str, tuple[str, ...]]:
    """Index column -> required runs, for every text condition that has some."""
    found = {column: required_runs(query, keyword) for keyword, column in TEXT_KEYS.items()}
    return {column: runs for column, runs in found.items() if runs}


def literal_prefix(query: Query, keyword: str) -> str:
    """The literal start of a case-sensitive wildcard condition (``MRN12*``: ``MRN12``);
    '' when the value starts with a wildcard or the attribute is a person name."""
    condition = query.condition(keyword)
    if condition is None or condition.kind != "wildcard" or condition.vr == "PN":
        return ""
    return _WILDCARDS.split(condition.value, maxsplit=1)[0]
