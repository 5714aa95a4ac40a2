"""QIDO-RS use case: match, complete, page and project what the catalog finds (PS3.18 §10.6).

The :class:`~shared.ports.Catalog` port takes the parsed query and plans its own reads
(DynamoDB: its indexes; SQLite: SQL on its indexes) and returns candidate rows lazily, in
the catalog's stable order (documented on the port). Each candidate is checked with
:mod:`shared.dicomweb.matching`, completed with computed parent attributes when needed,
paged with ``offset``/``limit`` and projected to the returned attributes; reading stops
once the page is full and one more match shows that more results exist.

Every search has a budget (:class:`SearchBudget`): candidates examined beyond the matches
it needs, and time. When it runs out the search answers with the matches found so far and
``next_offset``, the offset that continues it (the handler adds ``Warning: 299``): a search
no index narrows enough ends in bounded time instead of timing out at API Gateway.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from shared._generated.dictionary import ATTRIBUTES
from shared.dicom.levels import COMPUTED_KEYWORDS, DEFAULT_RETURN, STORED, Level
from shared.dicomweb import paths
from shared.dicomweb.matching import matches
from shared.dicomweb.query import Query
from shared.ports import (
    Catalog,
    InstanceRow,
    PatientRow,
    SearchTimeUp,
    SeriesRow,
    StudyRow,
)

Dataset = dict[str, Any]

_SPECIFIC_CHARACTER_SET = "00080005"
_ALWAYS = {
    "SERIES": ("StudyInstanceUID",),
    "INSTANCE": ("StudyInstanceUID", "SeriesInstanceUID"),
}


#: Candidates a search may examine past its ``offset`` beyond the ``limit + 1`` matches it
#: needs, once it has found one (the candidates it reads to reach the offset and its first
#: result are bounded by time only, so that each continuation makes progress).
EXTRA_ITEMS = 10_000
#: Time a search may take at most, and the share of the Lambda's remaining time it may use
#: (API Gateway gives up at 29 s; the function's timeout may be shorter).
MAX_SECONDS = 10.0
TIME_SHARE = 0.5


@dataclass(frozen=True)
class SearchBudget:
    """How much one search may read: past its offset, ``extra_items`` candidates beyond the
    ``limit + 1`` matches it needs; in all, until ``deadline`` (a ``clock`` value; None: no
    time limit)."""

    extra_items: int = EXTRA_ITEMS
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_lambda_context(
        cls, context: object, *, extra_items: int | None = None, max_seconds: float | None = None
    ) -> SearchBudget:
        """A budget ending after ``TIME_SHARE`` of the time the Lambda context has left, at
        most ``max_seconds`` (named apart from ``shared.budget``'s request helpers)."""
        seconds = MAX_SECONDS if max_seconds is None else max_seconds
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            with contextlib.suppress(TypeError, ValueError):
                seconds = min(seconds, float(remaining()) / 1000 * TIME_SHARE)
        items = EXTRA_ITEMS if extra_items is None else extra_items
        return cls(extra_items=items, deadline=time.monotonic() + max(seconds, 0.0))


#: The UIDs an audit record names of a search's results: (tag, level).
AUDITED = (("0020000D", "studies"), ("0020000E", "series"), ("00080018", "instances"))


def answered_uids(datasets: list[Dataset]) -> dict[str, list[str]]:
    """The study, series and instance UIDs the results hold, by level (``AUDITED``)."""
    return {
        level: [v for d in datasets for v in d.get(tag, {}).get("Value", [])]
        for tag, level in AUDITED
    }


@dataclass(frozen=True)
class SearchResult:
    """One page of matches; ``more`` when further matches exist (Warning 299).

    ``next_offset``: set when the budget ran out before the search could tell (the page
    may be short); the offset at which a new request continues. ``examined``: candidates
    the search looked at.
    """

    datasets: list[Dataset]
    more: bool
    next_offset: int | None = None
    examined: int = 0

    @property
    def exhausted(self) -> bool:
        """Whether the search stopped on its budget."""
        return self.next_offset is not None


def search(
    query: Query, catalog: Catalog, base_url: str, budget: SearchBudget | None = None
) -> SearchResult:
    """Run a validated query against the catalog, within ``budget`` (default: items only)."""
    budget = budget or SearchBudget()
    cut: list[SearchTimeUp] = []
    rows, skipped = _rows(query, catalog, base_url, budget, cut)  # skipped: matches passed
    returned = _returned_tags(query)
    order = tuple(sorted(returned))  # the order of a result's attributes
    parents = _Parents(query, catalog, returned)
    page: list[Dataset] = []
    more = False
    early = parents.needed_for_matching
    allowed = query.limit + 1 + budget.extra_items
    examined = examined_in_page = 0
    while (item := next(rows, None)) is not None:
        candidate, study_uid, series_uid = item
        examined += 1
        if skipped >= query.offset:
            examined_in_page += 1
        dataset = parents.complete(candidate, study_uid, series_uid) if early else candidate
        if matches(query, dataset):
            if skipped < query.offset:
                skipped += 1
            elif len(page) == query.limit:
                more = True
                break
            else:
                if not early:
                    dataset = parents.complete(dataset, study_uid, series_uid)
                page.append(_project(dataset, order))
        # Cut on items only once the page holds a result (each continuation makes
        # progress); on time, always.
        if (examined_in_page >= allowed and page) or (
            budget.deadline is not None and budget.clock() > budget.deadline
        ):
            if next(rows, None) is None and not cut:  # nothing left: the answer is complete
                break
            return SearchResult(page, False, query.offset + len(page), examined)
    if cut:  # the catalog read past the deadline between two candidates
        return SearchResult(page, False, query.offset + len(page), examined)
    return SearchResult(page, more, None, examined)


def _rows(
    query: Query, catalog: Catalog, base_url: str, budget: SearchBudget, cut: list[SearchTimeUp]
) -> tuple[Iterator[Any], int]:
    """The catalog's candidates for the query, ending early when its time is up (noted in
    ``cut``), and how many matches it passed over already."""
    # A TimeBounded catalog: the test ``isinstance`` makes of a runtime-checkable protocol
    # (the method is there and not None), without walking the protocol's members each time.
    stop_reading_at = getattr(catalog, "stop_reading_at", None)
    if stop_reading_at is not None:
        stop_reading_at(budget.deadline, budget.clock)
    found = catalog.search(query)
    return _until_time_up(_candidates(query, found.rows, base_url), cut), found.skipped


def _until_time_up(rows: Iterable[Any], cut: list[SearchTimeUp]) -> Iterator[Any]:
    """The rows, ending early (and noted in ``cut``) when the catalog's time is up."""
    try:
        yield from rows
    except SearchTimeUp as up:
        cut.append(up)


_STUDY_COMPUTED = frozenset(
    ATTRIBUTES[k][0]
    for k in ("ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances")
)  # fmt: skip
_SERIES_COMPUTED = frozenset({ATTRIBUTES["NumberOfSeriesRelatedInstances"][0]})


class _Parents:
    """Computed attributes of the parent study and series of all-series/all-instances
    results (PS3.18 §10.6.3.3), read once per parent and only for results returned."""

    def __init__(self, query: Query, catalog: Catalog, returned: frozenset[str]) -> None:
        self._catalog = catalog
        unscoped = query.study_uid is None and query.level in ("SERIES", "INSTANCE")
        conditions = {c.tag for c in query.conditions}
        wanted = returned | conditions
        self._study = unscoped and bool(wanted & _STUDY_COMPUTED)
        self._series = (
            query.level == "INSTANCE"
            and query.series_uid is None
            and bool(wanted & _SERIES_COMPUTED)
        )
        # A condition on a computed parent attribute: complete candidates before matching.
        self.needed_for_matching = bool(conditions & (_STUDY_COMPUTED | _SERIES_COMPUTED)) and (
            self._study or self._series
        )
        self._studies: dict[str, Dataset] = {}
        self._series_rows: dict[str, Dataset] = {}

    def complete(self, dataset: Dataset, study_uid: str, series_uid: str) -> Dataset:
        if not (self._study or self._series):
            return dataset
        completed = dict(dataset)
        if self._study:
            completed.update(self._study_computed(study_uid))
        if self._series:
            completed.update(self._series_computed(study_uid, series_uid))
        return completed

    def _study_computed(self, study_uid: str) -> Dataset:
        if study_uid not in self._studies:
            rows = list(self._catalog.studies_by_uid([study_uid]))
            full = study_dataset(rows[0], "") if rows else {}
            self._studies[study_uid] = {t: v for t, v in full.items() if t in _STUDY_COMPUTED}
        return self._studies[study_uid]

    def _series_computed(self, study_uid: str, series_uid: str) -> Dataset:
        if series_uid not in self._series_rows:
            for row in self._catalog.series_of_study(study_uid):
                computed = series_dataset(row, "")
                self._series_rows[row.series_uid] = {
                    t: v for t, v in computed.items() if t in _SERIES_COMPUTED
                }
        return self._series_rows.get(series_uid, {})


# ---------------------------------------------------------------- datasets


def _attr(keyword: str, vr: str, values: list[Any]) -> tuple[str, Dataset]:
    tag = ATTRIBUTES[keyword][0]
    return tag, ({"vr": vr, "Value": values} if values else {"vr": vr})


def study_dataset(row: StudyRow, base_url: str) -> Dataset:
    """A study's attributes plus the computed ones (PS3.18 §10.6.3.3.1)."""
    dataset = dict(row.attrs)
    dataset.update(
        [
            _attr("ModalitiesInStudy", "CS", list(row.modalities)),
            _attr("SOPClassesInStudy", "UI", list(row.sop_classes)),
            _attr("NumberOfStudyRelatedSeries", "IS", [row.n_series]),
            _attr("NumberOfStudyRelatedInstances", "IS", [row.n_instances]),
            _attr("InstanceAvailability", "CS", ["ONLINE"]),
            _attr("RetrieveURL", "UR", [paths.study_url(base_url, row.study_uid)]),
        ]
    )
    return dataset


def series_dataset(row: SeriesRow, base_url: str) -> Dataset:
    """A series' attributes, its study's, and the computed ones."""
    dataset = {**row.study_attrs, **row.attrs}
    url = f"{paths.study_url(base_url, row.study_uid)}/series/{row.series_uid}"
    dataset.update(
        [
            _attr("NumberOfSeriesRelatedInstances", "IS", [row.n_instances]),
            _attr("RetrieveURL", "UR", [url]),
        ]
    )
    return dataset


def instance_dataset(row: InstanceRow, base_url: str) -> Dataset:
    """An instance's attributes, its series' and study's, and the computed ones."""
    dataset = {**row.study_attrs, **row.series_attrs, **row.attrs}
    url = paths.instance_url(base_url, row.study_uid, row.series_uid, row.sop_instance_uid)
    dataset.update(
        [_attr("InstanceAvailability", "CS", ["ONLINE"]), _attr("RetrieveURL", "UR", [url])]
    )
    return dataset


def patient_dataset(row: PatientRow) -> Dataset:
    """A patient's demographics and counters."""
    dataset = dict(row.attrs)
    dataset.update(
        [
            _attr("NumberOfPatientRelatedStudies", "IS", [row.n_studies]),
            _attr("NumberOfPatientRelatedSeries", "IS", [row.n_series]),
            _attr("NumberOfPatientRelatedInstances", "IS", [row.n_instances]),
        ]
    )
    return dataset


# ---------------------------------------------------------------- projection


def _levels_returned(query: Query) -> list[Level]:
    if query.level == "SERIES" and query.study_uid is None:
        return ["STUDY", "SERIES"]
    if query.level == "INSTANCE":
        levels: list[Level] = []
        if query.study_uid is None:
            levels.append("STUDY")
        if query.series_uid is None:
            levels.append("SERIES")
        return [*levels, "INSTANCE"]
    return [query.level]


def _returned_tags(query: Query) -> frozenset[str]:
    """Tags a result may carry: defaults, matching keys and includefields of its levels."""
    levels = _levels_returned(query)
    available = {
        ATTRIBUTES[k][0] for level in levels for k in (*STORED[level], *COMPUTED_KEYWORDS[level])
    }
    available |= {ATTRIBUTES[k][0] for k in _ALWAYS.get(query.level, ())}
    if query.include_all:
        return frozenset(available)
    wanted = {ATTRIBUTES[k][0] for level in levels for k in DEFAULT_RETURN[level]}
    wanted |= {ATTRIBUTES[k][0] for k in _ALWAYS.get(query.level, ())}
    wanted |= {c.tag for c in query.conditions}
    wanted |= query.includefields
    return frozenset(wanted & available)


def _project(dataset: Dataset, order: tuple[str, ...]) -> Dataset:
    """The attributes of ``order`` (sorted tags) that ``dataset`` has, in that order."""
    result = {tag: dataset[tag] for tag in order if tag in dataset}
    if not _ascii(result):
        result[_SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        result = dict(sorted(result.items()))
    return result


def _ascii(value: Any) -> bool:
    """Whether every string value in DICOM JSON is ASCII (its keys are: tags and names).

    A dataset's attributes (``{"vr": ..., "Value": [...]}``) are read in place, their
    values in the same loop; person names and sequence items, deeper, by recursion.
    """
    if not isinstance(value, dict):
        return _ascii_value(value)
    for element in value.values():
        for part in element.values() if type(element) is dict else (element,):
            for item in part if type(part) is list else (part,):
                if type(item) is str:
                    if not item.isascii():
                        return False
                elif type(item) not in _PLAIN and not _ascii_value(item):
                    return False
    return True


#: Values that hold no string.
_PLAIN = (int, float, bool, type(None))


def _ascii_value(value: Any) -> bool:
    """:func:`_ascii` of any value: a string, a dataset, a list of values or anything else."""
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, dict):
        return _ascii(value)
    if isinstance(value, (list, tuple)):
        return all(_ascii_value(item) for item in value)
    return True


# ---------------------------------------------------------------- candidates

Candidate = tuple[Dataset, str, str]  # dataset, its study UID, its series UID ("" if none)


def _candidates(query: Query, rows: Iterator[Any], base_url: str) -> Iterator[Candidate]:
    """The catalog's rows as datasets of the query's level."""
    for row in rows:
        if query.level == "STUDY":
            yield study_dataset(row, base_url), row.study_uid, ""
        elif query.level == "SERIES":
            yield series_dataset(row, base_url), row.study_uid, row.series_uid
        elif query.level == "INSTANCE":
            yield instance_dataset(row, base_url), row.study_uid, row.series_uid
        else:
            yield patient_dataset(row), "", ""
