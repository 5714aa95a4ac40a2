"""What a request's key reads: the catalog as stored, or the de-identified view of it.

:func:`reader` returns one or the other (``read-deidentified`` without ``read`` gets the
view, ``shared.services.deidentified``); both locate instances for WADO, search for QIDO
and say whether an answer is anonymized, and both add the stored UIDs they read to the
request's audit record (``touched``). Plain reads leave that to the record itself, which
names the UIDs of the path and of the query; a search adds the UIDs of its results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.dicomweb.query import Query
from shared.ports import Catalog, DeidentifiedLookup, InstanceRow
from shared.services import deidentified, retrieve, search


class Touched(Protocol):
    """The UIDs a request's audit record names (``shared.audit.Touched``)."""

    def add(self, level: str, values: Iterable[str]) -> None:
        """Add UIDs of a level: ``studies``, ``series`` or ``instances``."""


@dataclass(frozen=True)
class Plain:
    """The catalog as stored (a key with ``read``)."""

    catalog: Catalog
    touched: Touched

    def locate(
        self, study: str | None, series: str | None = None, instance: str | None = None
    ) -> list[InstanceRow]:
        """The stored instances the UIDs name; 404 when there are none."""
        return retrieve.locate(self.catalog, study or "", series, instance)

    def search(
        self, query: Query, base_url: str, budget: search.SearchBudget | None = None
    ) -> search.SearchResult:
        """A QIDO-RS search; the audit names the UIDs of its results."""
        result = search.search(query, self.catalog, base_url, budget)
        _add(self.touched, search.answered_uids(result.datasets))
        return result

    def anonymize(self, asked: bool, values: Sequence[str] | None, no: str) -> bool:
        """Whether the answer is anonymized: as the request asked."""
        return asked


@dataclass(frozen=True)
class Deidentified:
    """The de-identified view (a key with ``read-deidentified`` and not ``read``)."""

    view: deidentified.View
    touched: Touched

    def locate(
        self, study: str | None, series: str | None = None, instance: str | None = None
    ) -> list[InstanceRow]:
        """The stored instances the de-identified UIDs name (404 for any other UID); the
        audit names the stored UIDs read too."""
        rows = self.view.locate(study, series, instance)
        _add(
            self.touched,
            {
                "studies": [r.study_uid for r in rows],
                "series": [r.series_uid for r in rows],
                "instances": [r.sop_instance_uid for r in rows],
            },
        )
        return rows

    def search(
        self, query: Query, base_url: str, budget: search.SearchBudget | None = None
    ) -> search.SearchResult:
        """A QIDO-RS search by de-identified UIDs, every result de-identified; the audit
        names the stored UIDs of the results."""
        found = self.view.search(query, base_url, budget)
        _add(self.touched, found.originals)
        return found.result

    def anonymize(self, asked: bool, values: Sequence[str] | None, no: str) -> bool:
        """Always: a request that asks for the original (``no``) is refused (403)."""
        deidentified.forced_anonymize(values, no)
        return True


Reader = Plain | Deidentified


def reader(
    *,
    catalog: Catalog,
    lookup: DeidentifiedLookup,
    deidentifier: deidentified.Deidentifier,
    deidentified_view: bool,
    touched: Touched,
) -> Reader:
    """The plain reader, or the de-identified one when ``deidentified_view``."""
    if deidentified_view:
        return Deidentified(deidentified.View(catalog, lookup, deidentifier), touched)
    return Plain(catalog, touched)


def _add(touched: Touched, uids: dict[str, list[str]]) -> None:
    for level, values in uids.items():
        touched.add(level, values)
