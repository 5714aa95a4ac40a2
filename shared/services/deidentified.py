"""The read-deidentified view: what a key with ``read-deidentified`` and not ``read`` sees
(docs/anonymization.md, "The de-identified view").

* UIDs in paths and in StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID matching keys
  are de-identified UIDs, resolved to the stored ones through the index's lookup written at
  store time (:class:`~shared.ports.DeidentifiedLookup`). A UID the lookup does not know,
  an original UID among them, finds nothing: 404 on WADO, no result on QIDO.
* QIDO-RS matches only on UIDs and on attributes the profile returns unchanged
  (:data:`MATCHABLE`): a key that identifies (a name, an ID, a date...) would be an oracle
  on the original values, so it is refused (400), unless it asks for nothing (universal
  matching: a return key, whose value is de-identified like any other). The patients
  resource, which lists patients by name and ID, is refused (403).
* Every QIDO-RS result is de-identified with the profile WADO applies (``anonymize_json``),
  its RetrieveURL rebuilt with the de-identified UIDs; every WADO answer is the one
  ``anonymize=true`` (WADO-URI ``anonymize=yes``) gives; asking explicitly for the
  original (``anonymize=false``/``no``) is refused (403).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.dicom.levels import Level
from shared.dicomweb import paths
from shared.dicomweb.query import Condition, Kind, Query
from shared.errors import BadRequest, DicomWebError, Forbidden, NotFound
from shared.ports import Catalog, DeidentifiedLookup, InstanceRow
from shared.services import retrieve, search

Dataset = dict[str, Any]

#: The UID matching keys, and the level of the lookup that resolves them.
UID_LEVELS: dict[str, Level] = {
    "StudyInstanceUID": "STUDY",
    "SeriesInstanceUID": "SERIES",
    "SOPInstanceUID": "INSTANCE",
}
#: Matching keys the view accepts besides the UIDs: attributes the profile keeps as stored
#: (Table E.1-1 lists none of them, and none is a person name: tests check both) and
#: counters the archive computes. Matching on them reveals nothing the answers do not show.
MATCHABLE = frozenset(
    {
        "Modality",
        "ModalitiesInStudy",
        "SOPClassUID",
        "SOPClassesInStudy",
        "SeriesNumber",
        "InstanceNumber",
        "BodyPartExamined",
        "Laterality",
        "Manufacturer",
        "ManufacturerModelName",
        "ImageType",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "PhotometricInterpretation",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
        "InstanceAvailability",
    }
)
_RETRIEVE_URL = "00081190"


class Deidentifier(Protocol):
    """The profile with the deployment key, as the view applies it to index data."""

    def uid(self, uid: str) -> str:
        """The UID that replaces ``uid`` in de-identified objects."""

    def attributes(self, document: Dataset) -> Dataset:
        """DICOM JSON attributes de-identified; ``ValueError`` when they cannot be."""


class CannotDeidentify(DicomWebError):
    """A result that the profile cannot be applied to: nothing is answered rather than it."""

    status = 500


@dataclass(frozen=True)
class Found:
    """A page of de-identified results, and the original UIDs they hold (for the audit
    record only: never answered)."""

    result: search.SearchResult
    originals: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """The catalog as a read-deidentified key sees it."""

    catalog: Catalog
    lookup: DeidentifiedLookup
    deidentifier: Deidentifier

    # ------------------------------------------------------------- UIDs

    def original(self, level: Level, uid: str | None) -> str | None:
        """The stored UID of a de-identified one; None when the index knows no such UID."""
        if uid is None:
            return None
        return self.lookup.original_uids(level, [uid]).get(uid)

    def locate(
        self, study: str | None, series: str | None = None, instance: str | None = None
    ) -> list[InstanceRow]:
        """The stored instances the de-identified UIDs name; 404 when any is unknown."""
        wanted: tuple[tuple[Level, str | None], ...] = (
            ("STUDY", study),
            ("SERIES", series),
            ("INSTANCE", instance),
        )
        originals: list[str | None] = []
        for level, uid in wanted:
            original = self.original(level, uid)
            if uid is not None and original is None:
                raise NotFound("no such study, series or instance")
            originals.append(original)
        study_uid, series_uid, sop_uid = originals
        return retrieve.locate(self.catalog, study_uid or "", series_uid, sop_uid)

    # ------------------------------------------------------------- QIDO-RS

    def search(
        self, query: Query, base_url: str, budget: search.SearchBudget | None = None
    ) -> Found:
        """A QIDO-RS search by de-identified UIDs within ``budget``, every result
        de-identified.

        The search service runs the query with stored UIDs in place of de-identified ones,
        under the budget of any search: a page cut by it keeps ``next_offset``, which
        continues this view at the same place (the view answers one result per result
        found, in the catalog's order).
        """
        if query.level == "PATIENT":
            raise Forbidden(
                "the patients resource lists patients by name and ID: a read-deidentified key "
                "searches studies, series and instances"
            )
        for condition in query.conditions:
            _check_matchable(condition)
        resolved = self._resolved(query)
        if resolved is None:
            return Found(search.SearchResult([], more=False))
        found = search.search(resolved, self.catalog, base_url, budget)
        originals = search.answered_uids(found.datasets)
        page = [self._deidentified(d, base_url) for d in found.datasets]
        return Found(dataclasses.replace(found, datasets=page), originals)

    def _resolved(self, query: Query) -> Query | None:
        """The query with stored UIDs in place of de-identified ones; None when a UID it
        needs is unknown (nothing can match)."""
        study_uid = self.original("STUDY", query.study_uid)
        series_uid = self.original("SERIES", query.series_uid)
        if (query.study_uid is not None and study_uid is None) or (
            query.series_uid is not None and series_uid is None
        ):
            return None
        conditions: list[Condition] = []
        for condition in query.conditions:
            level = UID_LEVELS.get(condition.keyword)
            if level is None or condition.kind == "universal" or condition.item_keyword:
                conditions.append(condition)
                continue
            known = self.lookup.original_uids(level, condition.values)
            values = tuple(known[v] for v in condition.values if v in known)
            if not values:
                return None
            kind: Kind = "single" if len(values) == 1 else "list"
            conditions.append(dataclasses.replace(condition, values=values, kind=kind))
        return dataclasses.replace(
            query,
            conditions=tuple(conditions),
            study_uid=study_uid,
            series_uid=series_uid,
            condition_by_keyword={c.keyword: c for c in conditions if not c.item_keyword},
        )

    def _deidentified(self, dataset: Dataset, base_url: str) -> Dataset:
        try:
            cleaned = self.deidentifier.attributes(dataset)
        except ValueError:
            raise CannotDeidentify("a result cannot be de-identified") from None
        url = cleaned.get(_RETRIEVE_URL, {}).get("Value") or []
        if url:
            replaced = _url_with(url[0], base_url, self.deidentifier.uid)
            if replaced:
                cleaned[_RETRIEVE_URL] = {"vr": "UR", "Value": [replaced]}
            else:
                del cleaned[_RETRIEVE_URL]
        return cleaned


def _check_matchable(condition: Condition) -> None:
    """400 for a matching key that would test an identifying value."""
    if condition.kind == "universal" and not condition.item_keyword:
        return  # a return key: it selects nothing
    if condition.item_keyword or not (
        condition.keyword in MATCHABLE or condition.keyword in UID_LEVELS
    ):
        raise BadRequest(
            f"this API key sees de-identified data: matching on {condition.keyword} is not "
            "offered (match on UIDs, Modality, SOPClassUID, numbers; return keys are allowed)"
        )


def _url_with(url: str, base_url: str, replace: Callable[[str], str]) -> str:
    """A RetrieveURL with each UID segment replaced ('' when the URL is not one of ours)."""
    prefix = paths.study_url(base_url, "")
    if not url.startswith(prefix):
        return ""
    parts = url[len(prefix) :].split("/")
    names = parts[1::2]
    if any(n not in ("series", "instances") for n in names):
        return ""
    parts[0::2] = [replace(uid) for uid in parts[0::2]]
    return prefix + "/".join(parts)


def forced_anonymize(values: Sequence[str] | None, no: str) -> None:
    """403 when a read-deidentified request asks for the original (``anonymize=false``/``no``):
    its answers are always de-identified."""
    if values and any(v.strip().lower() == no for v in values):
        raise Forbidden("this API key receives de-identified data only: anonymize cannot be off")
