"""QIDO-RS use case: pick the most selective access path, match, page (PS3.18 §10.6).

Each level has a planner that turns the query into a lazy stream of candidate datasets
read through the :class:`~shared.ports.Catalog` port (Query on the table or an index, never
a scan). Candidates are matched with :mod:`shared.dicomweb.matching` and paged with
``offset``/``limit``; reading stops once the page is full and one more match shows that
more results exist.

Result order (stable, so offsets page deterministically):
* studies: newest first (StudyDate, StudyTime, then UID, descending); when the search is
  answered from the PatientName index, by normalised name; with StudyInstanceUID, in the
  order the UIDs were given;
* series: by study as above, then SeriesNumber (unnumbered last), then UID;
* instances: by study, then series UID, then InstanceNumber (unnumbered last);
* patients: by normalised name.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from shared._generated.dictionary import ATTRIBUTES
from shared.dicom.levels import COMPUTED_KEYWORDS, DEFAULT_RETURN, STORED, Level
from shared.dicom.normalize import person_name_key
from shared.dicomweb import paths
from shared.dicomweb.matching import matches
from shared.dicomweb.query import Condition, Query, normalise
from shared.ports import Catalog, InstanceRow, PatientRow, SeriesRow, StudyRow

Dataset = dict[str, Any]

_SPECIFIC_CHARACTER_SET = "00080005"
_ALWAYS = {
    "SERIES": ("StudyInstanceUID",),
    "INSTANCE": ("StudyInstanceUID", "SeriesInstanceUID"),
}


@dataclass(frozen=True)
class SearchResult:
    """One page of matches; ``more`` when further matches exist (Warning 299)."""

    datasets: list[Dataset]
    more: bool


def search(query: Query, catalog: Catalog, base_url: str) -> SearchResult:
    """Run a validated query against the catalog."""
    wanted = query.offset + query.limit + 1
    catalog.expect(wanted, wanted - _offset_on_keys(query))
    candidates = _PLANNERS[query.level](query, catalog, base_url)
    returned = _returned_tags(query)
    parents = _Parents(query, catalog, returned)
    page: list[Dataset] = []
    skipped = _offset_on_keys(query)  # skipped already by the planner
    more = False
    early = parents.needed_for_matching
    for candidate, study_uid, series_uid in candidates:
        dataset = parents.complete(candidate, study_uid, series_uid) if early else candidate
        if not matches(query, dataset):
            continue
        if skipped < query.offset:
            skipped += 1
            continue
        if len(page) == query.limit:
            more = True
            break
        if not early:
            dataset = parents.complete(dataset, study_uid, series_uid)
        page.append(_project(dataset, returned))
    return SearchResult(page, more)


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


def _project(dataset: Dataset, tags: frozenset[str]) -> Dataset:
    result = {tag: dataset[tag] for tag in sorted(tags) if tag in dataset}
    if not json.dumps(result, ensure_ascii=False).isascii():
        result[_SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        result = dict(sorted(result.items()))
    return result


# ---------------------------------------------------------------- planners


def _exact(query: Query, keyword: str) -> str | None:
    condition = query.condition(keyword)
    if condition is not None and condition.kind == "single":
        return condition.value
    return None


def _uids(condition: Condition | None) -> tuple[str, ...]:
    if condition is not None and condition.kind in ("single", "list"):
        return tuple(dict.fromkeys(condition.values))  # a UID listed twice is one result
    return ()


def _name_prefix(query: Query) -> str:
    """Normalised literal prefix of a PatientName query the name index can serve."""
    condition = query.condition("PatientName")
    if condition is None or query.fuzzy or condition.kind not in ("single", "wildcard"):
        return ""
    literal = condition.value
    for index, char in enumerate(literal):
        if char in "*?":
            literal = literal[:index]
            break
    prefix = person_name_key(literal) if literal.strip() == literal else ""
    # Latin names only: the index holds the alphabetic component group.
    return prefix if prefix.isascii() and prefix[:1].isalpha() else ""


def _date_bounds(query: Query) -> tuple[str, str] | None:
    date = query.condition("StudyDate")
    if date is None or date.kind not in ("single", "range"):
        return None
    time = query.condition("StudyTime") if query.combined_datetime else None
    if date.kind == "single":
        day = normalise("DA", date.value)
        return f"{day}000000.000000", f"{day}235959.999999#~"
    low = f"{date.low}{time.low if time and time.low else '000000.000000'}" if date.low else ""
    high = (
        f"{date.high}{time.high if time and time.high else '235959.999999'}#~" if date.high else ""
    )
    return low, high


def study_uids(query: Query, catalog: Catalog) -> Iterator[str]:
    """Study UIDs to examine, from the most selective study-level key in the query."""
    uids = _uids(query.condition("StudyInstanceUID"))
    if uids:
        return iter(uids)
    for keyword, key in (("AccessionNumber", "acc"), ("PatientID", "pid")):
        value = _exact(query, keyword)
        if value:
            return catalog.study_uids(key, value)
    prefix = _name_prefix(query)
    if prefix:
        return catalog.study_uids("name", "", prefix=prefix)
    bounds = _date_bounds(query)
    if bounds is not None:
        return catalog.study_uids("all", "", low=bounds[0], high=bounds[1])
    modalities = _uids(query.condition("ModalitiesInStudy"))
    if len(modalities) == 1:
        return catalog.study_uids("mod", modalities[0])
    return catalog.study_uids("all", "")


Candidate = tuple[Dataset, str, str]  # dataset, its study UID, its series UID ("" if none)


def _offset_on_keys(query: Query) -> int:
    """With nothing to match, a study search skips ``offset`` index keys without reading
    the study items (DynamoDB has no offset: the keys themselves must still be read)."""
    unconditioned = all(c.kind == "universal" for c in query.conditions)
    return query.offset if query.level == "STUDY" and unconditioned else 0


def _studies(query: Query, catalog: Catalog, base_url: str) -> Iterator[Candidate]:
    uids = itertools.islice(study_uids(query, catalog), _offset_on_keys(query), None)
    for row in catalog.studies_by_uid(uids):
        yield study_dataset(row, base_url), row.study_uid, ""


def _series_order(row: SeriesRow) -> tuple[int, float, str]:
    values = (row.attrs.get(ATTRIBUTES["SeriesNumber"][0]) or {}).get("Value") or []
    number = values[0] if values and isinstance(values[0], (int, float)) else None
    return (0, float(number), row.series_uid) if number is not None else (1, 0.0, row.series_uid)


def _series_of(catalog: Catalog, uids: Iterable[str]) -> Iterator[SeriesRow]:
    for uid in uids:
        yield from sorted(catalog.series_of_study(uid), key=_series_order)


def _series(query: Query, catalog: Catalog, base_url: str) -> Iterator[Candidate]:
    rows: Iterable[SeriesRow]
    series_uids = _uids(query.condition("SeriesInstanceUID"))
    modalities = _uids(query.condition("Modality"))
    if query.study_uid is not None:
        rows = _series_of(catalog, [query.study_uid])
    elif series_uids:
        rows = itertools.chain.from_iterable(catalog.series_by_uid(u) for u in series_uids)
    elif modalities and not _has_study_key(query):
        rows = itertools.chain.from_iterable(catalog.series_by_modality(m) for m in modalities)
    else:
        rows = _series_of(catalog, study_uids(query, catalog))
    for row in rows:
        yield series_dataset(row, base_url), row.study_uid, row.series_uid


def _has_study_key(query: Query) -> bool:
    """Whether a study-level index can serve the query (then it is preferred)."""
    return bool(
        _uids(query.condition("StudyInstanceUID"))
        or _exact(query, "AccessionNumber")
        or _exact(query, "PatientID")
    )


def _instances(query: Query, catalog: Catalog, base_url: str) -> Iterator[Candidate]:
    rows: Iterable[InstanceRow]
    sop_uids = _uids(query.condition("SOPInstanceUID"))
    series_uids = _uids(query.condition("SeriesInstanceUID"))
    if query.study_uid is not None:
        one_series = series_uids[0] if len(series_uids) == 1 else None
        rows = catalog.instances(query.study_uid, query.series_uid or one_series)
    elif sop_uids:
        rows = catalog.instances_by_uid(sop_uids)
    elif series_uids:
        rows = itertools.chain.from_iterable(
            catalog.instances(series.study_uid, series.series_uid)
            for uid in series_uids
            for series in catalog.series_by_uid(uid)
        )
    else:
        rows = itertools.chain.from_iterable(
            catalog.instances(uid) for uid in study_uids(query, catalog)
        )
    for row in rows:
        yield instance_dataset(row, base_url), row.study_uid, row.series_uid


def _patients(query: Query, catalog: Catalog, base_url: str) -> Iterator[Candidate]:
    patient_id = _exact(query, "PatientID")
    rows: Iterable[PatientRow]
    if patient_id:
        rows = catalog.patients_by_id(patient_id)
    else:
        rows = catalog.patients(_name_prefix(query))
    for row in rows:
        yield patient_dataset(row), "", ""


_PLANNERS = {
    "PATIENT": _patients,
    "STUDY": _studies,
    "SERIES": _series,
    "INSTANCE": _instances,
}
