"""The read side of the SQLite index (``local``): QIDO queries planned as SQL.

``search`` turns every study-level key the query gives into one WHERE clause on the
``studies`` table (StudyInstanceUID, AccessionNumber, PatientID, PatientName prefix,
StudyDate/StudyTime range, ModalitiesInStudy, substrings) and lets SQLite pick the index;
series keys (Modality, SeriesInstanceUID) narrow the studies with EXISTS on ``series``.
Series and instances of those studies come from one statement that joins the next
studies' keys to their rows (the keys never leave SQLite); when only series keys narrow
a search, the series' own indexes serve it (modality: newest study first). Reads are
lazy: rows come a page at a time (keyset paging on the index order), so a search stops
reading once it has its page of results. The matcher in the search service still checks
every row (wildcards, fuzzy names, other attributes); a study search's offset is skipped
in SQL, with the matcher run there, when the indexes narrow every condition.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.adapters.sqlite_connections import Connections
from shared.adapters.sqlite_schema import TEXT_EDGE, prepare
from shared.dicom.uid_map import UidMap
from shared.dicomweb.matching import matches
from shared.dicomweb.query import Query
from shared.dicomweb.substring import (
    NGRAM,
    TEXT_KEYS,
    literal_prefix,
    lookup_runs,
    text_patterns,
    text_runs,
)
from shared.index.order import study_date_bounds
from shared.ports import Candidates, InstanceRow, PatientRow, SeriesRow, StudyRow

_STUDY_COLUMNS = (
    "s.study, s.attrs, s.n_instances,"
    " (SELECT COUNT(*) FROM series WHERE series.study = s.study) AS n_series,"
    " (SELECT group_concat(modality, char(31)) FROM (SELECT modality FROM study_modalities"
    "  WHERE study = s.study ORDER BY modality)) AS modalities,"
    " (SELECT group_concat(sop_class, char(31)) FROM (SELECT sop_class FROM study_sop_classes"
    "  WHERE study = s.study ORDER BY sop_class)) AS sop_classes"
)
_PATIENT_COLUMNS = (
    "p.attrs, p.n_instances,"
    " (SELECT COUNT(*) FROM patient_studies ps WHERE ps.patient_id = p.patient_id"
    "  AND ps.issuer = p.issuer) AS n_studies,"
    " (SELECT COUNT(*) FROM patient_series pe WHERE pe.patient_id = p.patient_id"
    "  AND pe.issuer = p.issuer) AS n_series"
)
_SERIES_COLUMNS = "e.study, e.series, e.attrs, e.study_attrs, e.n_instances"
_INSTANCE_COLUMNS = "study, series, sop, attrs, series_attrs, study_attrs, ts, key, size, aet, meta"
#: A search's instance rows: no ``meta`` (the packed metadata WADO-RS answers; QIDO builds
#: its answers from the attributes, and the blob is most of an instance row's bytes).
_JOINED_INSTANCE_COLUMNS = ", ".join(
    f"i.{c}" if c != "meta" else "NULL AS meta"
    for c in map(str.strip, _INSTANCE_COLUMNS.split(","))
)
_PAGE = 200  # rows fetched per statement when a read is consumed lazily
#: A search gathers at most this many substring candidates (sorted by date); with more,
#: it walks the text's date index (:func:`_text_where`).
MANY_CANDIDATES = 2000
#: What a search on text costs per row, in microseconds (measured at 10,000 and 100,000
#: studies): a study walked in the text's date index, a candidate gathered (its trigram
#: posting, its row by id, its place in the date order), a wildcard test of its text.
WALK_US, GATHER_US, MATCH_US = 0.2, 2.0, 1.2
#: Only a page of up to this many rows past its offset walks; deeper pages gather.
WALK_PAGE = 1000
_FIRST_PAGE_MAX = 1001  # a first page sized to what the search needs: up to a full QIDO page
_WILDCARDS = re.compile(r"[*?]+")


def _doc(text: str | None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(text) if text else {}
    return document


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(text.split("\x1f")) if text else ()


def _study_row(row: sqlite3.Row) -> StudyRow:
    return StudyRow(
        study_uid=row["study"],
        attrs=_doc(row["attrs"]),
        n_instances=row["n_instances"],
        n_series=row["n_series"],
        modalities=_split(row["modalities"]),
        sop_classes=_split(row["sop_classes"]),
    )


class _Parents:
    """Decodes the parent attributes of one statement's rows, each distinct text once (the
    rows of a study, or of a series, repeat it): they share the decoded dictionary, which
    nobody changes (the search service copies what it builds on)."""

    def __init__(self) -> None:
        self._decoded: dict[str | None, dict[str, Any]] = {}

    def __call__(self, text: str | None) -> dict[str, Any]:
        found = self._decoded.get(text)
        if found is None:
            found = self._decoded[text] = _doc(text)
        return found


def _series_row(
    row: sqlite3.Row, parents: Callable[[str | None], dict[str, Any]] = _doc
) -> SeriesRow:
    return SeriesRow(
        study_uid=row["study"],
        series_uid=row["series"],
        attrs=_doc(row["attrs"]),
        study_attrs=parents(row["study_attrs"]),
        n_instances=row["n_instances"],
    )


def _instance_row(
    row: sqlite3.Row, parents: Callable[[str | None], dict[str, Any]] = _doc
) -> InstanceRow:
    return InstanceRow(
        study_uid=row["study"],
        series_uid=row["series"],
        sop_instance_uid=row["sop"],
        attrs=_doc(row["attrs"]),
        series_attrs=parents(row["series_attrs"]),
        study_attrs=parents(row["study_attrs"]),
        transfer_syntax=row["ts"],
        blob_key=row["key"],
        size=row["size"],
        calling_aet=row["aet"],
        metadata=row["meta"] or b"",
    )


def _patient_row(row: sqlite3.Row) -> PatientRow:
    return PatientRow(
        attrs=_doc(row["attrs"]),
        n_instances=row["n_instances"],
        n_studies=row["n_studies"],
        n_series=row["n_series"],
    )


def _batches(values: Iterable[str], first: int = 8, largest: int = 128) -> Iterator[list[str]]:
    """``values`` in lists of growing size (duplicates kept: the caller's order counts)."""
    size, batch = first, []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            size, batch = min(size * 2, largest), []
    if batch:
        yield batch


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))


class _Where:
    """AND-ed SQL conditions with their parameters, on the rows of ``source``: the studies
    (``studies s``) or, when the substring index's text selects them, its rows in date
    order (``study_terms t``, joined to ``studies s`` when a condition is on them);
    ``keys`` is the alias that gives each row's ``study`` and ``sdt``."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.parameters: list[Any] = []
        self.source = "studies s"
        self.keys = "s"

    def add(self, clause: str, *parameters: Any) -> None:
        self.clauses.append(clause)
        self.parameters.extend(parameters)

    def extend(self, other: _Where) -> None:
        self.clauses += other.clauses
        self.parameters += other.parameters

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1 = 1"

    @property
    def selected(self) -> str:
        """The rows' keys, as ``study`` and ``sdt``, from ``source``."""
        return f"{self.keys}.study AS study, {self.keys}.sdt AS sdt FROM {self.source}"


def _series_where(query: Query, alias: str, *, probe: bool = False) -> _Where:
    """Series-level keys an index can serve: SeriesInstanceUID and Modality lists.

    ``probe``: the conditions test the series of given studies, which the primary key
    finds; the modality index must not be used there (it would read every series of that
    modality for each study).
    """
    where = _Where()
    series_uids = query.uids("SeriesInstanceUID")
    if series_uids:
        where.add(f"{alias}.series IN ({_marks(series_uids)})", *series_uids)
    modalities = query.uids("Modality")
    if modalities:
        plus = "+" if probe else ""
        where.add(f"{plus}{alias}.modality IN ({_marks(modalities)})", *modalities)
    return where


def _first_page(query: Query) -> int:
    """Rows (study keys, series or instances) to read first: one per result the search
    needs, at least a few."""
    return max(8, min(query.offset + query.limit + 1, _FIRST_PAGE_MAX))


def _phrase(run: str) -> str:
    return '"' + run.replace('"', '""') + '"'


def _edged_runs(query: Query) -> dict[str, tuple[str, ...]]:
    """:func:`lookup_runs`, the literal start of a whole-value pattern preceded by the
    separator and its literal end followed by it, as the trigram index reads each value
    (``sqlite_schema.TEXT_EDGE``): ``abc*def`` needs "\x1fabc" and "def\x1f", which only
    the values that start and end so hold, and ``*ab`` gets a trigram, "ab\x1f"."""
    runs = lookup_runs(query)
    patterns = text_patterns(query)
    for column in runs:
        pattern = patterns.get(column, "")
        if not pattern:
            continue
        parts = _WILDCARDS.split(pattern)
        if len(parts) == 1:
            runs[column] = (f"{TEXT_EDGE}{pattern}{TEXT_EDGE}",)
            continue
        head, middle, tail = parts[0], parts[1:-1], parts[-1]
        edged = [f"{TEXT_EDGE}{head}"] if head else []
        edged += [f"{tail}{TEXT_EDGE}"] if tail else []
        runs[column] = tuple(sorted({*edged, *filter(None, middle)}, key=lambda r: (-len(r), r)))
    return runs


def text_match(query: Query) -> str:
    """The FTS5 expression of the runs of at least a trigram that every match contains,
    value edges included (:func:`_edged_runs`; '' when there are none)."""
    expressions = []
    for column, runs in _edged_runs(query).items():
        long_runs = [r for r in runs if len(r) >= NGRAM]
        if long_runs:
            expressions.append(f"{column} : ({' AND '.join(_phrase(r) for r in long_runs)})")
    return " AND ".join(expressions)


def _text_where(query: Query, candidates: tuple[int, ...] | None) -> _Where:
    """Conditions on ``study_terms t`` that the text of every match meets: it is one of
    the trigram index's ``candidates`` (their ids; None: too many, or no run is long
    enough), its text holds the query's shorter runs (all of them without candidates) and
    a kept value matches each whole pattern; no row leaves SQLite.

    Without candidates, the search walks ``study_terms_by_date`` newest first and tests
    each study's text in place (the index holds it): a page costs what it walks, about
    ``page / share of matches`` rows, whatever the archive's size. With candidates, it
    reads their rows and sorts them by date.
    """
    where = _Where()
    if candidates is not None:
        where.add(f"t.id IN ({','.join(map(str, candidates))})")
    for column, runs in lookup_runs(query).items():
        for run in runs:
            if candidates is None or len(run) < NGRAM:
                where.add(f"instr(t.{column}, ?) > 0", run)
    if where.clauses:  # then the whole values, as the matcher will (any kept value)
        for column, pattern in text_patterns(query).items():
            where.add(f"qido_match(t.{column}, ?)", pattern)
    return where


def walk_threshold(page: int, studies: int) -> int:
    """The number of candidates above which walking the text's date index for ``page``
    matches costs less than gathering them: a walk tests about ``page * studies / c``
    studies' text and matches ``page`` of them, gathering handles all ``c``
    (:data:`WALK_US`, :data:`GATHER_US`, :data:`MATCH_US`)."""
    a, b, c = GATHER_US + MATCH_US, MATCH_US * page, WALK_US * page * studies
    return math.ceil((b + math.sqrt(b * b + 4 * a * c)) / (2 * a))


def _identifier_where(query: Query, where: _Where) -> None:
    """AccessionNumber and PatientID: exact values, or the literal start of a wildcard
    value as a range of their index."""
    for keyword, column in (("AccessionNumber", "accession"), ("PatientID", "pid")):
        value = query.exact(keyword)
        if value:
            where.add(f"s.{column} = ?", value)
        start = literal_prefix(query, keyword)
        if start:
            where.add(f"s.{column} >= ? AND s.{column} < ?", start, _prefix_end(start))


def _uses_text_index(query: Query) -> bool:
    """Whether :func:`_study_where` consults the substring index: not when an exact
    AccessionNumber or PatientID or a Study Instance UID names the studies (one or a few:
    the postings of a common trigram, ``MRN`` in every PatientID, cost more than they are
    worth, and grow with the archive)."""
    if query.exact("AccessionNumber") or query.exact("PatientID"):
        return False
    return not query.uids("StudyInstanceUID") and query.study_uid is None


def _narrowed_in_sql(query: Query) -> bool:
    """Whether the SQL conditions of :func:`_study_where` hold few studies besides those
    that match the query: every condition is universal, or served by an index or tested
    whole on the substring index's text (a date range, an exact identifier, a name prefix,
    a wildcard value with a literal run). Then a walk through the candidates to the
    query's offset is as long as the offset, give or take a few."""
    patterns, runs = text_patterns(query), text_runs(query)
    for condition in query.conditions:
        keyword = condition.kind != "universal" and condition.keyword
        if not keyword:
            continue
        dated = keyword == "StudyDate" or (keyword == "StudyTime" and query.combined_datetime)
        if dated and study_date_bounds(query) is not None:
            continue
        if keyword in ("PatientID", "AccessionNumber") and query.exact(keyword):
            continue
        column = TEXT_KEYS.get(keyword, "")
        if column in patterns and column in runs:
            continue
        if keyword == "PatientName" and query.name_prefix():
            continue
        return False
    return True


def _study_where(
    query: Query, *, with_series: bool, candidates: tuple[int, ...] | None = None
) -> _Where:
    """Every study-level key an index can serve, as conditions on the studies; with
    ``with_series``, studies must also hold a series the series-level keys accept.

    SQLite picks the index among them: an exact AccessionNumber or PatientID, the name or
    the date index. When the text of the substring index narrows the search
    (:func:`_text_where`), its rows drive (``study_terms t``, in date order, joined to
    ``studies s`` for the conditions on them). It is left out when an exact key is given
    (:func:`_uses_text_index`).
    """
    where = _Where()
    if _uses_text_index(query):
        where.extend(_text_where(query, candidates))
    k = "t" if where.clauses else "s"
    studies = _Where()  # conditions on the studies' own columns
    _identifier_where(query, studies)
    prefix = query.name_prefix()
    if prefix:
        studies.add("s.name_key >= ? AND s.name_key < ?", prefix, _prefix_end(prefix))
    where.extend(studies)
    bounds = study_date_bounds(query)
    if bounds is not None:
        where.add(f"{k}.sdt BETWEEN ? AND ?", bounds[0] or "0", bounds[1] or "~")
    modalities = query.uids("ModalitiesInStudy")
    if modalities:
        where.add(
            f"EXISTS (SELECT 1 FROM study_modalities m WHERE m.study = {k}.study"
            f" AND m.modality IN ({_marks(modalities)}))",
            *modalities,
        )
    if with_series:
        series = _series_where(query, "e", probe=True)
        if series.clauses:
            where.add(
                f"EXISTS (SELECT 1 FROM series e WHERE e.study = {k}.study AND {series.sql})",
                *series.parameters,
            )
    if k == "t":
        where.keys = "t"
        join = " CROSS JOIN studies s ON s.study = t.study" if studies.clauses else ""
        where.source = f"study_terms t{join}"
    return where


class SqliteCatalog:
    """The read side of the index (port :class:`shared.ports.Catalog`) on SQLite.

    ``rows_read`` counts every row fetched, for benchmarks.
    """

    def __init__(self, path: Path, uid_map: UidMap | None = None) -> None:
        prepare(path, uid_map)  # with the key: de-identified UIDs backfilled
        self._db = Connections(path)
        self.rows_read = 0

    def _fetch(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        rows = self._db.query(sql, parameters)
        self.rows_read += len(rows)
        return rows

    def _pages(
        self,
        sql: str,
        parameters: Iterable[Any],
        order: str,
        after: Callable[..., Any],
        start: tuple[int, int] = (0, _PAGE),
    ) -> Iterator[sqlite3.Row]:
        """Keyset paging: ``sql`` has a ``{after}`` slot for the continuation condition.
        ``start``: rows to skip, and the size of the first page (the others hold _PAGE)."""
        offset, first = start
        condition, bound = "", ()
        skip = f" OFFSET {int(offset)}" if offset else ""
        size = max(1, min(int(first), _FIRST_PAGE_MAX))
        while True:
            rows = self._fetch(
                sql.format(after=condition) + f" ORDER BY {order} LIMIT {size}{skip}",
                (*parameters, *bound),
            )
            yield from rows
            if len(rows) < size:
                return
            condition, bound = after(rows[-1])
            skip, size = "", _PAGE

    # ----------------------------------------------------------------- search

    def search(self, query: Query) -> Candidates:
        """Candidate rows for a parsed QIDO query, selected with SQL on the indexes."""
        if query.level == "STUDY":
            return self._study_candidates(query)
        if query.level == "SERIES":
            return Candidates(self._series(query))
        if query.level == "INSTANCE":
            return self._instance_candidates(query)
        return Candidates(self._patients(query))

    def _study_candidates(self, query: Query) -> Candidates:
        uids = query.uids("StudyInstanceUID")
        if uids:  # in the order given
            return Candidates(self.studies_by_uid(uids))
        if query.unconditioned:  # every row matches: SQL skips the offset and stops
            return Candidates(self._all_studies(query.offset, query.limit + 1), query.offset)
        if query.offset and _narrowed_in_sql(query):
            return Candidates(self.studies_by_uid(self._matches_past_offset(query)), query.offset)
        # Keys first (a narrow sort however many match), whole rows as they are consumed.
        return Candidates(self._studies_of(self._study_uids(query), _first_page(query)))

    def _instance_candidates(self, query: Query) -> Candidates:
        if query.unconditioned and query.study_uid is None and query.offset:
            skipped, studies = self._skip_instances(query.offset)
            instances = (row for uid in studies for row in self.instances(uid))
            return Candidates(instances, skipped)
        return Candidates(self._instances(query))

    def _skip_instances(self, offset: int) -> tuple[int, Iterator[str]]:
        """For an unfiltered instance search: how many instances of the newest studies
        ``offset`` passes over whole (summed in SQL from ``n_instances``, not read), and the
        studies from the first one it does not pass over."""
        found = self._fetch(
            "SELECT study, sdt, upto - n_instances AS before FROM ("
            " SELECT s.study, s.sdt, s.n_instances, SUM(s.n_instances) OVER"
            " (ORDER BY s.sdt DESC ROWS UNBOUNDED PRECEDING) AS upto"
            " FROM studies s ORDER BY s.sdt DESC LIMIT ?) WHERE upto > ? LIMIT 1",
            (offset + 1, offset),
        )
        if not found:
            return offset, iter(())
        rows = self._pages(
            "SELECT s.study, s.sdt FROM studies s WHERE s.sdt <= ? {after}",
            (found[0]["sdt"],),
            "s.sdt DESC",
            lambda last: ("AND s.sdt < ?", (last["sdt"],)),
        )
        return found[0]["before"], (r["study"] for r in rows)

    def _all_studies(self, offset: int, first: int) -> Iterator[StudyRow]:
        """Every study, newest first, from ``offset`` on; the first page holds ``first``."""
        rows = self._pages(
            f"SELECT {_STUDY_COLUMNS}, s.sdt FROM studies s WHERE 1 = 1 {{after}}",
            (),
            "s.sdt DESC",
            lambda last: ("AND s.sdt < ?", (last["sdt"],)),
            (offset, first),
        )
        return (_study_row(r) for r in rows)

    def _studies_of(self, uids: Iterator[str], first: int) -> Iterator[StudyRow]:
        """The studies of ``uids`` read a key page at a time (``first``, then _PAGE keys), so
        that reading rows never pulls the next page of keys before it is needed."""
        size = first
        while batch := list(itertools.islice(uids, size)):
            yield from self.studies_by_uid(batch)
            size = _PAGE

    def _matches_past_offset(self, query: Query) -> list[str]:
        """UIDs of the ``limit + 1`` studies that match the query after its ``offset``
        first matches, newest first; the matcher runs in SQL on each candidate's attributes
        (the same answer as on the whole study: no condition is on a computed attribute),
        so the studies the offset passes over are not read out.

        The candidates are sorted in a subquery that SQLite runs as a co-routine (its LIMIT
        keeps it from being flattened): the matcher is called in date order and only until
        the page is found, however many candidates the indexes give.
        """
        where = self._study_keys(query) or _Where()

        def matched(attrs: str) -> bool:
            return matches(query, json.loads(attrs))

        rows = self._db.query_with(
            f"SELECT k.study FROM (SELECT {where.selected} WHERE {where.sql}"
            f" ORDER BY {where.keys}.sdt DESC LIMIT -1) k"
            " WHERE qido_study((SELECT a.attrs FROM studies a WHERE a.study = k.study))"
            f" LIMIT {int(query.limit) + 1} OFFSET {int(query.offset)}",
            where.parameters,
            "qido_study",
            matched,
        )
        self.rows_read += len(rows)
        return [r["study"] for r in rows]

    def _study_keys(self, query: Query) -> _Where | None:
        """Conditions on ``studies s`` selecting the studies the query's study- and
        series-level keys allow; None when only series-level keys narrow the search (the
        series' own indexes serve it then)."""
        if self._series_keys_only(query):
            return None
        uids = query.uids("StudyInstanceUID")
        if query.study_uid is not None:
            uids = (query.study_uid,)
        where = _study_where(query, with_series=True, candidates=self._candidates(query))
        if uids:
            where.add(f"s.study IN ({_marks(uids)})", *uids)
        return where

    def _study_uids(self, query: Query) -> Iterator[str]:
        """UIDs of the studies the query's keys allow, newest first (study searches: a
        study-level key or none narrows them)."""
        where = self._study_keys(query) or _Where()
        rows = self._pages(
            f"SELECT {where.selected} WHERE {where.sql} {{after}}",
            where.parameters,
            f"{where.keys}.sdt DESC",
            lambda last: (f"AND {where.keys}.sdt < ?", (last["sdt"],)),
            (0, _first_page(query)),
        )
        return (r["study"] for r in rows)

    def _candidates(self, query: Query) -> tuple[int, ...] | None:
        """The ids of the studies whose trigram index entry holds the query's runs, when
        gathering them costs less than walking the date index (:func:`walk_threshold`);
        None otherwise, or when the search reads no trigram."""
        match = text_match(query) if _uses_text_index(query) else ""
        if not match:
            return None
        limit = -1
        if query.offset + query.limit <= WALK_PAGE:
            top = self._db.query("SELECT max(id) AS n FROM study_terms")[0]["n"] or 0
            page = query.offset + query.limit + 1
            limit = min(MANY_CANDIDATES, walk_threshold(page, top)) + 1
        rows = self._db.query(
            "SELECT rowid FROM study_text WHERE study_text MATCH ? LIMIT ?", (match, limit)
        )
        if limit >= 0 and len(rows) >= limit:
            return None
        return tuple(r["rowid"] for r in rows)

    def _series(self, query: Query) -> Iterator[SeriesRow]:
        """Series of the studies the query's keys allow, in the studies' order, then
        :meth:`SeriesRow.order`."""
        where = self._study_keys(query)
        groups = (
            self._series_by_series_keys(query)
            if where is None
            else self._series_of_studies(query, where)
        )
        for study in groups:
            yield from sorted(study, key=SeriesRow.order)

    def _series_of_studies(self, query: Query, where: _Where) -> Iterator[list[SeriesRow]]:
        """The series of the studies ``where`` selects that the series-level keys accept,
        each study's together: one statement joins the next studies' keys (newest first,
        never read out) to their series.

        A statement reads up to a page of series (sized to the results the search needs
        first, then _PAGE) from at most one study more than that: every study yields a row
        (a LEFT JOIN: NULL when none of its series is accepted), so a short page is the
        last. A full page's last study is completed with the rest of its series.
        """
        series = _series_where(query, "e", probe=True)
        size, after = _first_page(query), ""
        bound: tuple[str, ...] = ()
        while True:
            rows = self._fetch(
                f"WITH k AS (SELECT {where.selected} WHERE {where.sql} {after}"
                f" ORDER BY {where.keys}.sdt DESC LIMIT {size + 1})"
                f" SELECT {_SERIES_COLUMNS}, k.study AS k_study, k.sdt AS k_sdt FROM k"
                f" LEFT JOIN series e ON e.study = k.study AND {series.sql}"
                f" ORDER BY k.sdt DESC, e.series LIMIT {size}",
                (*where.parameters, *bound, *series.parameters),
            )
            full = len(rows) == size
            if full and rows[-1]["series"] is not None:  # the rest of the last study's
                last = rows[-1]
                rows += self._fetch(
                    f"SELECT {_SERIES_COLUMNS}, e.study AS k_study, ? AS k_sdt FROM series e"
                    f" WHERE e.study = ? AND e.series > ? AND {series.sql} ORDER BY e.series",
                    (last["k_sdt"], last["study"], last["series"], *series.parameters),
                )
            parents = _Parents()
            for _, group in itertools.groupby(rows, key=lambda r: r["k_study"]):
                yield [_series_row(r, parents) for r in group if r["series"] is not None]
            if not full:
                return
            after, bound = f"AND {where.keys}.sdt < ?", (rows[-1]["k_sdt"],)
            size = _PAGE

    @staticmethod
    def _series_keys_only(query: Query) -> bool:
        """Whether only series-level keys (Modality, SeriesInstanceUID) narrow the search."""
        if query.study_uid is not None or query.uids("StudyInstanceUID"):
            return False
        if _study_where(query, with_series=False).clauses:
            return False
        return bool(_series_where(query, "e").clauses)

    def _series_by_series_keys(self, query: Query) -> Iterator[list[SeriesRow]]:
        """The series the series-level keys accept, read from the series' own indexes
        (modality: ``(modality, sdt)``, newest study first; UID: ``series``), each study's
        together (in no particular order within it).

        Keyset pages on (sdt, study, series), a page sized to the results the search needs;
        a full page's last study is completed with the rest of its series before it is
        handed out (its series are few), so a page never reads the next one ahead. Several
        modalities: one ordered read per modality, merged by SQLite (UNION ALL).
        """
        series_uids = query.uids("SeriesInstanceUID")
        arms = [_Where() for _ in query.uids("Modality") or ("",)]
        for arm, modality in zip(arms, query.uids("Modality") or (None,), strict=True):
            if series_uids:
                arm.add(f"e.series IN ({_marks(series_uids)})", *series_uids)
            if modality is not None:
                arm.add("e.modality = ?", modality)
        columns = f"{_SERIES_COLUMNS}, e.sdt"

        def read(after: str, bound: tuple[str, ...], tail: str) -> list[sqlite3.Row]:
            selects = [f"SELECT {columns} FROM series e WHERE {a.sql} {after}" for a in arms]
            parameters = [p for a in arms for p in (*a.parameters, *bound)]
            return self._fetch(" UNION ALL ".join(selects) + tail, parameters)

        order = " ORDER BY sdt DESC, study DESC, series DESC"
        size, after = _first_page(query), ""
        bound: tuple[str, ...] = ()
        while True:
            rows = read(after, bound, f"{order} LIMIT {size}")
            if not rows:
                return
            last = rows[-1]
            full = len(rows) == size
            if full:  # the rest of the last study's series
                rows += read(
                    "AND e.sdt = ? AND e.study = ? AND e.series < ?",
                    (last["sdt"], last["study"], last["series"]),
                    order,
                )
            parents = _Parents()
            yield from (
                [_series_row(r, parents) for r in group]
                for _, group in itertools.groupby(rows, key=lambda r: (r["sdt"], r["study"]))
            )
            if not full:
                return
            after, bound = "AND (e.sdt, e.study) < (?, ?)", (last["sdt"], last["study"])
            size = _PAGE

    def _instances(self, query: Query) -> Iterator[InstanceRow]:
        sop_uids = query.uids("SOPInstanceUID")
        if sop_uids and query.study_uid is None:
            yield from self.instances_by_uid(sop_uids)
            return
        where = self._study_keys(query)
        if where is not None:
            yield from self._instances_of_studies(query, where)
            return
        for study in self._series_by_series_keys(query):
            for series in sorted(study, key=lambda row: row.series_uid):
                yield from self.instances(series.study_uid, series.series_uid)

    def _instances_of_studies(self, query: Query, where: _Where) -> Iterator[InstanceRow]:
        """The instances of the studies ``where`` selects that the series- and
        instance-level keys accept, in the catalog's order: one statement joins the next
        studies' keys (newest first, never read out) to their instances.

        Keyset pages on (study, sk), the first sized to the results the search needs. The
        keys of a statement are those of one study more than the page holds rows: every
        study yields a row (a LEFT JOIN: NULL when none of its instances is accepted), so
        a short page is the last.
        """
        on = _Where()
        on.add("i.study = k.study")
        series_uids = query.uids("SeriesInstanceUID")
        one_series = query.series_uid or (series_uids[0] if len(series_uids) == 1 else None)
        if one_series is not None:
            prefix = f"INSTANCE#{one_series}#"
            on.add("i.sk >= ? AND i.sk < ?", prefix, _prefix_end(prefix))
        if series_uids:
            on.add(f"i.series IN ({_marks(series_uids)})", *series_uids)
        modalities = query.uids("Modality")
        if modalities:
            on.add(
                "EXISTS (SELECT 1 FROM series e WHERE e.study = i.study AND e.series = i.series"
                f" AND +e.modality IN ({_marks(modalities)}))",
                *modalities,
            )
        sop_uids = query.uids("SOPInstanceUID")
        if sop_uids:
            on.add(f"i.sop IN ({_marks(sop_uids)})", *sop_uids)
        size = _first_page(query)
        keys_after, rows_after = "", ""
        bound: tuple[str, ...] = ()
        while True:
            rows = self._fetch(
                f"WITH k AS (SELECT {where.selected} WHERE {where.sql} {keys_after}"
                f" ORDER BY {where.keys}.sdt DESC LIMIT {size + 1})"
                f" SELECT {_JOINED_INSTANCE_COLUMNS}, i.sk, k.sdt AS k_sdt FROM k"
                f" LEFT JOIN instances i ON {on.sql} {rows_after}"
                f" ORDER BY k.sdt DESC, i.sk LIMIT {size}",
                (*where.parameters, *bound[:1], *on.parameters, *bound),
            )
            parents = _Parents()
            yield from (_instance_row(r, parents) for r in rows if r["sop"] is not None)
            if len(rows) < size:
                return
            keys_after = f"AND {where.keys}.sdt <= ?"
            rows_after = "WHERE k.sdt < ? OR (k.sdt = ? AND i.sk > ?)"
            last = rows[-1]
            bound = (last["k_sdt"], last["k_sdt"], last["sk"])
            size = _PAGE

    def _patients(self, query: Query) -> Iterator[PatientRow]:
        patient_id = query.exact("PatientID")
        if patient_id:
            found = self._fetch(
                f"SELECT {_PATIENT_COLUMNS} FROM patients p WHERE p.patient_id = ?"
                " ORDER BY p.issuer",
                (patient_id,),
            )
            yield from (_patient_row(r) for r in found)
            return
        prefix = query.name_prefix()
        parameters: tuple[str, ...]
        if prefix:
            where, parameters, column = (
                "p.name_key >= ? AND p.name_key < ?",
                (prefix, _prefix_end(prefix)),
                "name_key",
            )
        else:
            where, parameters, column = "1 = 1", (), "list_key"
        rows = self._pages(
            f"SELECT {_PATIENT_COLUMNS}, p.{column} AS k FROM patients p WHERE {where} {{after}}",
            parameters,
            f"p.{column}",
            lambda last: (f"AND p.{column} > ?", (last["k"],)),
        )
        yield from (_patient_row(r) for r in rows)

    # ----------------------------------------------------------------- lookups by UID

    def studies_by_uid(self, uids: Iterable[str]) -> Iterator[StudyRow]:
        """Studies with these UIDs, in the order given (absent ones skipped); read in batches
        that grow from 8 to 128, so a short page reads little and a long one few times."""
        for batch in _batches(uids):
            rows = self._fetch(
                f"SELECT {_STUDY_COLUMNS} FROM studies s WHERE s.study IN ({_marks(tuple(batch))})",
                batch,
            )
            found = {row["study"]: row for row in rows}
            yield from (_study_row(found[uid]) for uid in batch if uid in found)

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        """Every series of a study, by Series Instance UID."""
        rows = self._fetch(
            f"SELECT {_SERIES_COLUMNS} FROM series e WHERE e.study = ? ORDER BY e.series",
            (study_uid,),
        )
        return [_series_row(r) for r in rows]

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRow]:
        """Instances of a study (or of one series), by series then InstanceNumber."""
        prefix = f"INSTANCE#{series_uid}#" if series_uid else "INSTANCE#"
        rows = self._pages(
            f"SELECT {_INSTANCE_COLUMNS}, sk FROM instances WHERE study = ?"
            " AND sk >= ? AND sk < ? {after}",
            (study_uid, prefix, _prefix_end(prefix)),
            "sk",
            lambda last: ("AND sk > ?", (last["sk"],)),
        )
        yield from (_instance_row(r) for r in rows)

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[InstanceRow]:
        """Instances with these SOP Instance UIDs, in the order given."""
        for uid in sop_uids:
            rows = self._fetch(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE sop = ?", (uid,))
            yield from (_instance_row(r) for r in rows)

    # ----------------------------------------------------------------- de-identified UIDs

    def original_uids(self, level: str, deidentified: Iterable[str]) -> dict[str, str]:
        """The original UIDs of de-identified UIDs of a level (port
        :class:`shared.ports.DeidentifiedLookup`); unknown ones are absent."""
        found: dict[str, str] = {}
        for batch in _batches(dict.fromkeys(deidentified)):
            rows = self._fetch(
                f"SELECT duid, uid FROM deid_uids WHERE level = ?"
                f" AND duid IN ({_marks(tuple(batch))})",
                (level, *batch),
            )
            found.update((r["duid"], r["uid"]) for r in rows)
        return found
