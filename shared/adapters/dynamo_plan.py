"""How the DynamoDB catalog answers a QIDO query: which index to Query, which items to get.

Each level starts from the most selective key the query gives and the table can serve
(docs/access-patterns.md lists them): StudyInstanceUID items; the ByAccession and
ByPatientId indexes for exact values; the substring index's postings for text runs of a
trigram or more (``*abc*``, ``abc*def``, fuzzy words); ByPatientName for a name prefix;
ByList between date-time bounds; ByModality; else every study, newest first. Series and
instances under those studies are read from the study's partition. Never a Scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from shared.dicomweb.query import Query
from shared.dicomweb.substring import TEXT_KEYS, holds, lookup_runs, run_ngrams, value_pattern
from shared.index.order import study_date_bounds
from shared.ports import Candidates, InstanceRow, PatientRow, SeriesRow

if TYPE_CHECKING:
    from shared.adapters.dynamo_search import DynamoSearch

#: A trigram held by more studies than this is not preferred to a name prefix's range.
MANY_POSTINGS = 2_000
_KEYWORDS = {column: keyword for keyword, column in TEXT_KEYS.items()}


def plan(query: Query, catalog: DynamoSearch) -> Candidates:
    """Candidate rows of the query's level, sized to the page the search needs."""
    wanted = query.offset + query.limit + 1
    skipped = query.offset if query.level == "STUDY" and query.unconditioned else 0
    catalog.expect(wanted, wanted - skipped)
    if query.level == "STUDY":
        uids = itertools.islice(study_uids(query, catalog), skipped, None)
        return Candidates(catalog.studies_by_uid(uids), skipped)
    if query.level == "SERIES":
        return Candidates(_series(query, catalog))
    if query.level == "INSTANCE":
        return Candidates(_instances(query, catalog))
    return Candidates(_patients(query, catalog))


def study_uids(query: Query, catalog: DynamoSearch) -> Iterator[str]:
    """Study UIDs to examine, from the most selective study-level key in the query."""
    uids = query.uids("StudyInstanceUID")
    if uids:
        return iter(uids)
    for keyword, key in (("AccessionNumber", "acc"), ("PatientID", "pid")):
        value = query.exact(keyword)
        if value:
            return catalog.study_uids(key, value)
    return _substring(query, catalog) or _ranged_study_uids(query, catalog)


def _ranged_study_uids(query: Query, catalog: DynamoSearch) -> Iterator[str]:
    """Study UIDs from a name prefix, date bounds, a modality, or else every study."""
    prefix = query.name_prefix()
    if prefix:
        return catalog.study_uids("name", "", prefix=prefix)
    bounds = study_date_bounds(query)
    if bounds is not None:
        return catalog.study_uids("all", "", low=bounds[0], high=bounds[1])
    modalities = query.uids("ModalitiesInStudy")
    if len(modalities) == 1:
        return catalog.study_uids("mod", modalities[0])
    return catalog.study_uids("all", "")


def _substring(query: Query, catalog: DynamoSearch) -> Iterator[str] | None:
    """Study UIDs from the substring index: the postings of the rarest trigram among the
    query's runs (by the counts kept beside them), within its date bounds, those whose
    indexed text can match kept; None when no run is a trigram long, or when a name prefix
    is given and the rarest trigram is common (the name index is then likely smaller)."""
    runs = lookup_runs(query)
    grams = [(c, g) for c, column_runs in runs.items() for r in column_runs for g in run_ngrams(r)]
    if not grams:
        return None
    counts = catalog.gram_counts(grams)
    column, gram = min(counts, key=lambda key: (counts[key], key))
    if counts[column, gram] > MANY_POSTINGS and query.name_prefix():
        return None
    pattern = value_pattern(query, _KEYWORDS[column])
    column_runs = runs[column]
    low, high = study_date_bounds(query) or ("", "")
    return catalog.study_uids_by_gram(
        column, gram, lambda text: holds(text, column_runs, pattern), low=low, high=high
    )


def _has_study_key(query: Query) -> bool:
    """Whether a study-level index can serve the query (then it is preferred): a UID, an
    exact AccessionNumber or PatientID, or a text run the substring index can look up."""
    return bool(
        query.uids("StudyInstanceUID")
        or query.exact("AccessionNumber")
        or query.exact("PatientID")
        or any(run_ngrams(r) for runs in lookup_runs(query).values() for r in runs)
    )


def _series_of(catalog: DynamoSearch, uids: Iterable[str]) -> Iterator[SeriesRow]:
    for uid in uids:
        yield from sorted(catalog.series_of_study(uid), key=SeriesRow.order)


def _series(query: Query, catalog: DynamoSearch) -> Iterator[SeriesRow]:
    series_uids = query.uids("SeriesInstanceUID")
    modalities = query.uids("Modality")
    if query.study_uid is not None:
        return _series_of(catalog, [query.study_uid])
    if series_uids:
        return itertools.chain.from_iterable(catalog.series_by_uid(u) for u in series_uids)
    if modalities and not _has_study_key(query):
        return itertools.chain.from_iterable(catalog.series_by_modality(m) for m in modalities)
    return _series_of(catalog, study_uids(query, catalog))


def _instances(query: Query, catalog: DynamoSearch) -> Iterator[InstanceRow]:
    sop_uids = query.uids("SOPInstanceUID")
    series_uids = query.uids("SeriesInstanceUID")
    if query.study_uid is not None:
        one_series = series_uids[0] if len(series_uids) == 1 else None
        return catalog.instances(query.study_uid, query.series_uid or one_series)
    if sop_uids:
        return catalog.instances_by_uid(sop_uids)
    if series_uids:
        return itertools.chain.from_iterable(
            catalog.instances(series.study_uid, series.series_uid)
            for uid in series_uids
            for series in catalog.series_by_uid(uid)
        )
    return itertools.chain.from_iterable(
        catalog.instances(uid) for uid in study_uids(query, catalog)
    )


def _patients(query: Query, catalog: DynamoSearch) -> Iterator[PatientRow]:
    patient_id = query.exact("PatientID")
    if patient_id:
        return iter(catalog.patients_by_id(patient_id))
    return catalog.patients(query.name_prefix())
