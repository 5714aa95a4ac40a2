"""Plans of the SQLite catalog: series from the series' own indexes, series and
instances of the selected studies in one joined read, a study offset skipped in SQL; their
page boundaries, the rows they read, and the answers (always those of the matcher)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import sqlite_catalog, sqlite_index, sqlite_schema
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.matching import matches
from shared.dicomweb.query import parse
from shared.dicomweb.substring import TEXT_KEYS
from shared.index.writes import TextWrite
from shared.ports import AddOutcome, InstanceRecord, SeriesRow
from shared.services import search as search_service
from shared.services.store import _record
from tests.support import dicom_files

BASE = "https://h/o3-dpacs-wado"
NAMES = ("Smith^John", "Müller^Jürgen", "Muller^Hans", "Yamada^Tarou=山田^太郎", "Mullins^Ann")
MODALITIES = ("CT", "MR", "CT", "US")
TAGS = {"STUDY": "0020000D", "SERIES": "0020000E", "INSTANCE": "00080018"}


def _archive(index: Any, n: int = 24) -> list[InstanceRecord]:
    """``n`` studies of 1 to 3 series of 1 to 3 instances (numbered backwards, so that
    InstanceNumber and UID orders differ), SeriesNumber against the UID order too."""
    records = []
    for number in range(n):
        study = f"1.2.826.0.1.3680043.8.498.77.{number}"
        for s in range(1 + number % 3):
            count = 1 + (number + s) % 3
            for i in range(count):
                data = dicom_files.with_new_uids(
                    study=study,
                    series=f"{study}.{s}",
                    patient_id=f"PID{number % 7}",
                    PatientName=NAMES[number % 7 % len(NAMES)],
                    SpecificCharacterSet="ISO_IR 192",
                    StudyDate=f"2020{1 + number % 12:02d}{1 + number % 5:02d}",
                    StudyTime=f"{number % 24:02d}0000",
                    Modality=MODALITIES[(number + s) % len(MODALITIES)],
                    SeriesNumber=3 - s,
                    InstanceNumber=count - i,
                    AccessionNumber=f"A{number}",
                )
                record = _record(validate(data), "AE", datetime.now(UTC))
                assert index.add(record) is AddOutcome.STORED
                records.append(record)
    return records


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[InstanceRecord]]:
    path = tmp_path_factory.mktemp("catalog") / "index.sqlite3"
    return path, _archive(SqliteIndex(path))


def _search(catalog: Any, level: str, params: dict[str, str]) -> list[str]:
    query = parse({k: [v] for k, v in params.items()}, level)  # type: ignore[arg-type]
    result = search_service.search(query, catalog, BASE)
    return [d[TAGS[level]]["Value"][0] for d in result.datasets]


def _expected(records: list[InstanceRecord], level: str, params: dict[str, str]) -> set[str]:
    """What the matcher accepts of the stored values (a set: the order is checked apart)."""
    query = parse({k: [v] for k, v in params.items()}, level)  # type: ignore[arg-type]
    found = set()
    for r in records:
        dataset = {**json.loads(r.study_json), **json.loads(r.series_json)}
        if level == "INSTANCE":
            dataset.update(json.loads(r.instance_json))
        if matches(query, dataset):
            found.add(r.sop_instance_uid if level == "INSTANCE" else r.series_uid)
    return found


SEARCHES = [
    ("SERIES", {"Modality": "CT"}),
    ("SERIES", {"Modality": "CT\\US"}),
    ("SERIES", {"PatientName": "MUL*"}),
    ("SERIES", {"PatientName": "*ull*", "Modality": "MR"}),
    ("SERIES", {}),
    ("INSTANCE", {"Modality": "MR"}),
    ("INSTANCE", {"PatientName": "MUL*"}),
    ("INSTANCE", {"PatientName": "*ull*", "Modality": "CT"}),
    ("INSTANCE", {}),
]


@pytest.mark.parametrize(("level", "params"), SEARCHES)
def test_pages_cut_in_the_middle_of_studies_give_the_same_answer(
    archive: tuple[Path, list[InstanceRecord]],
    monkeypatch: pytest.MonkeyPatch,
    level: str,
    params: dict[str, str],
) -> None:
    path, records = archive
    params = {**params, "limit": "1000"}
    whole = _search(SqliteCatalog(path), level, params)
    assert len(whole) == len(set(whole))
    assert set(whole) == _expected(records, level, params)
    monkeypatch.setattr(sqlite_catalog, "_PAGE", 2)  # every study is cut somewhere
    monkeypatch.setattr(sqlite_catalog, "_first_page", lambda query: 3)
    assert _search(SqliteCatalog(path), level, params) == whole


@pytest.mark.parametrize(("level", "params"), SEARCHES)
def test_results_come_study_by_study_newest_first_in_the_catalog_order(
    archive: tuple[Path, list[InstanceRecord]], level: str, params: dict[str, str]
) -> None:
    path, records = archive
    catalog = SqliteCatalog(path)
    got = _search(catalog, level, {**params, "limit": "1000"})
    by_uid = {(r.sop_instance_uid if level == "INSTANCE" else r.series_uid): r for r in records}
    studies = [by_uid[uid].study_uid for uid in got]
    order = [s.study_uid for s in catalog.studies_by_uid(dict.fromkeys(studies))]
    assert studies == sorted(studies, key=order.index)  # each study's results together
    dates = [by_uid[uid].study_date + by_uid[uid].study_time for uid in got]
    assert dates == sorted(dates, reverse=True)
    for study in dict.fromkeys(studies):
        mine = [uid for uid in got if by_uid[uid].study_uid == study]
        if level == "SERIES":
            rows = {row.series_uid: row for row in catalog.series_of_study(study)}
            assert mine == sorted(mine, key=lambda uid: SeriesRow.order(rows[uid]))
        else:
            keys = [(by_uid[u].series_uid, int(by_uid[u].instance_number)) for u in mine]
            assert keys == sorted(keys)


def test_series_of_a_modality_read_one_row_per_series(
    archive: tuple[Path, list[InstanceRecord]],
) -> None:
    path, records = archive
    catalog = SqliteCatalog(path)
    params = {"Modality": "CT", "limit": "7"}
    catalog.rows_read = 0
    got = _search(catalog, "SERIES", params)
    assert len(got) == 7
    studies = {r.study_uid for r in records if r.series_uid in got}
    # A page of 8 series (the eighth says there are more), at most one more to complete
    # the eighth's study (two CT series at most), and each result's study once for its
    # computed attributes (ModalitiesInStudy...).
    assert 8 <= catalog.rows_read - len(studies) <= 8 + 1


def test_series_and_instances_of_studies_read_no_study_keys(
    archive: tuple[Path, list[InstanceRecord]],
) -> None:
    path, records = archive
    catalog = SqliteCatalog(path)
    include = {"includefield": "00080060", "limit": "1000"}
    for level in ("SERIES", "INSTANCE"):
        params = {"PatientName": "SMI*", **include}  # no study but Smith's starts so
        studies = {r.study_uid for r in records if r.patient_name == "Smith^John"}
        # Each result's study is read once for its computed attributes (ModalitiesInStudy...)
        # and, at the instance level, its series for NumberOfSeriesRelatedInstances.
        parents = len(studies)
        if level == "INSTANCE":
            parents += sum(len(catalog.series_of_study(s)) for s in studies)
        catalog.rows_read = 0
        got = _search(catalog, level, params)
        assert len(got) > 8
        # Besides: one statement read every row (a page holds them all), nothing else.
        assert catalog.rows_read == len(got) + parents


def test_an_offset_past_matches_is_skipped_in_sql_and_stays_exact(
    archive: tuple[Path, list[InstanceRecord]],
) -> None:
    path, _ = archive
    catalog = SqliteCatalog(path)
    # "*mull*": the substring index also holds the accent-free "muller" of Müller, which
    # the matcher rejects (case-insensitive, not accent-insensitive): SQL must still agree.
    for params in ({"PatientName": "*mull*"}, {"PatientName": "MUL*"}, {"StudyDate": "20200101-"}):
        whole = _search(catalog, "STUDY", {**params, "limit": "1000"})
        assert len(whole) >= 4
        for offset in range(len(whole) + 2):
            catalog.rows_read = 0
            page = _search(catalog, "STUDY", {**params, "offset": str(offset), "limit": "2"})
            assert page == whole[offset : offset + 2]
            # The keys of the page and the next match, then their rows: nothing skipped
            # is read out (without an offset: a first page of 8 keys).
            assert catalog.rows_read <= (2 * 3 if offset else 2 * 8)


def test_a_condition_no_index_serves_is_not_walked_in_sql(
    archive: tuple[Path, list[InstanceRecord]],
) -> None:
    path, _ = archive
    catalog = SqliteCatalog(path)
    assert not sqlite_catalog._narrowed_in_sql(parse({"PatientSex": ["M"]}, "STUDY"))
    assert not sqlite_catalog._narrowed_in_sql(
        parse({"PatientName": ["mul"], "fuzzymatching": ["true"]}, "STUDY")
    )
    assert sqlite_catalog._narrowed_in_sql(
        parse({"PatientName": ["*ull*"], "StudyDate": ["20200101-"]}, "STUDY")
    )
    whole = _search(catalog, "STUDY", {"PatientSex": "M", "limit": "1000"})
    assert (
        _search(catalog, "STUDY", {"PatientSex": "M", "offset": "3", "limit": "2"}) == (whole[3:5])
    )


def _statements(catalog: SqliteCatalog, level: str, params: dict[str, str]) -> list[str]:
    """The SQL a search sends (FTS5's own statements on its shadow tables left out)."""
    sent: list[str] = []
    with catalog._db.lease() as connection:  # the one the search takes next
        connection.set_trace_callback(sent.append)
    try:
        _search(catalog, level, params)
    finally:
        connection.set_trace_callback(None)
    return [s for s in sent if not s.startswith("--")]


@pytest.mark.parametrize(
    ("level", "params"),
    [
        ("STUDY", {"PatientID": "PID3"}),
        ("STUDY", {"AccessionNumber": "A13"}),
        ("STUDY", {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77.3"}),
        ("STUDY", {"PatientID": "PID3", "PatientName": "*ull*"}),
        ("INSTANCE", {"PatientID": "PID3"}),
        ("SERIES", {"AccessionNumber": "A13", "Modality": "CT"}),
    ],
)
def test_a_lookup_by_identifier_never_reads_the_substring_index(
    archive: tuple[Path, list[InstanceRecord]], level: str, params: dict[str, str]
) -> None:
    # The postings of a PatientID's trigrams ("PID", "MRN"...) grow with the archive:
    # an exact identifier names one or a few studies, and its index serves them.
    path, _ = archive
    statements = _statements(SqliteCatalog(path), level, params)
    assert statements
    assert not [s for s in statements if "study_text" in s]


def test_a_substring_search_still_reads_the_substring_index(
    archive: tuple[Path, list[InstanceRecord]],
) -> None:
    path, _ = archive
    statements = _statements(SqliteCatalog(path), "STUDY", {"PatientName": "*ull*"})
    assert [s for s in statements if "study_text MATCH" in s]


def test_a_value_s_start_and_end_are_looked_up_as_trigrams_of_their_own() -> None:
    edge = sqlite_schema.TEXT_EDGE
    query = parse({"PatientName": ["MUL*ANN"]}, "STUDY")
    assert sqlite_catalog.text_match(query) == f'name : ("{edge}mul" AND "ann{edge}")'
    query = parse({"AccessionNumber": ["*13"]}, "STUDY")  # two letters: a trigram with the edge
    assert sqlite_catalog.text_match(query) == f'acc : ("13{edge}")'


@pytest.mark.parametrize("pattern", ["MUL*ANN", "*ANN", "*AN", "M*N", "*ULL*", "SMITH^JOHN*"])
def test_edged_lookups_find_what_the_matcher_accepts(
    archive: tuple[Path, list[InstanceRecord]], monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    path, records = archive
    params = {"PatientName": pattern, "limit": "1000"}
    expected = {r.study_uid for r in records if r.series_uid in _expected(records, "STUDY", params)}
    for many in (sqlite_catalog.MANY_CANDIDATES, 0):  # gathered, then walked
        monkeypatch.setattr(sqlite_catalog, "MANY_CANDIDATES", many)
        assert set(_search(SqliteCatalog(path), "STUDY", params)) == expected


def _plans(catalog: SqliteCatalog, statements: list[str]) -> str:
    with catalog._db.lease() as connection:
        return " ".join(
            str(row[3]) for s in statements for row in connection.execute(f"EXPLAIN QUERY PLAN {s}")
        )


def test_a_walk_through_common_text_scans_the_text_s_date_index(
    archive: tuple[Path, list[InstanceRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No lookup per study walked: the index holds each study's date and text.
    path, _ = archive
    monkeypatch.setattr(sqlite_catalog, "MANY_CANDIDATES", 0)
    catalog = SqliteCatalog(path)
    for level, params in (
        ("STUDY", {"PatientName": "*ull*", "limit": "5"}),
        ("SERIES", {"PatientName": "*ull*", "Modality": "CT", "limit": "5"}),
        ("INSTANCE", {"StudyDescription": "*a*", "limit": "5"}),
    ):
        statements = [s for s in _statements(catalog, level, params) if "study_terms t" in s]
        assert statements, level
        plans = _plans(catalog, statements)
        assert "SCAN t USING COVERING INDEX study_terms_by_date" in plans
        assert "TEMP B-TREE" not in plans.split("SCAN k")[0]  # the keys come in date order


# ------------------------------------------------------------------ series.sdt


def _series_dates(path: Path, study: str) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {
            r[0] for r in connection.execute("SELECT sdt FROM series WHERE study = ?", (study,))
        }


def test_a_study_that_changes_date_moves_its_series_with_it(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteIndex(path)
    study = "1.2.826.0.1.3680043.8.498.78"
    for s, day in ((1, "20200101"), (2, "20240101")):  # the second instance corrects it
        data = dicom_files.with_new_uids(study=study, series=f"{study}.{s}", StudyDate=day)
        assert index.add(_record(validate(data), "AE", datetime.now(UTC))) is AddOutcome.STORED
    (sdt,) = _series_dates(path, study)
    assert sdt.startswith("20240101")
    with sqlite3.connect(path) as connection:  # and the substring index's date
        terms = connection.execute("SELECT sdt FROM study_terms WHERE study = ?", (study,))
        assert terms.fetchall() == [(sdt,)]
    # The modality index lists its two series together, newest study first.
    got = _search(SqliteCatalog(path), "SERIES", {"Modality": "CT"})
    assert sorted(got) == [f"{study}.1", f"{study}.2"]


def test_a_version_4_file_gets_its_series_dates_realigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite3"
    study = "1.2.826.0.1.3680043.8.498.79"
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_schema, "SCHEMA_VERSION", 4)
        patched.setattr(sqlite_index, "_filed_text", lambda *_: (None, None))  # version 4's
        patched.setattr(sqlite_index, "_write_terms", lambda *_: None)  # text
        patched.setattr(sqlite_index, "_log", lambda *_: None)
        index = SqliteIndex(path)
        for s, day in ((1, "20200101"), (2, "20240101")):
            data = dicom_files.with_new_uids(study=study, series=f"{study}.{s}", StudyDate=day)
            record = _record(validate(data), "AE", datetime.now(UTC))
            assert index.add(record) is AddOutcome.STORED
        with sqlite3.connect(path) as connection:  # what version 4 left: the old date
            connection.execute(
                "UPDATE series SET sdt = '20200101' || substr(sdt, 9) WHERE series = ?",
                (f"{study}.1",),
            )
        assert len(_series_dates(path, study)) == 2
    SqliteCatalog(path)  # opens and migrates
    assert sqlite_schema.schema_version(path) == sqlite_schema.SCHEMA_VERSION
    (sdt,) = _series_dates(path, study)
    assert sdt.startswith("20240101")


# ------------------------------------------------------------------ version 6


def _terms_version_5(c: sqlite3.Connection, study: str, text: TextWrite) -> None:
    """What versions 4 and 5 wrote to the substring index: the text bare, no date."""
    if c.execute("SELECT 1 FROM study_terms WHERE study = ?", (study,)).fetchone():
        return
    terms = text.texts
    assert tuple(TEXT_KEYS.values()) == ("name", "pid", "acc", "descr", "ref")
    cursor = c.execute(
        "INSERT INTO study_terms (study, name, pid, acc, descr, ref) VALUES (?, ?, ?, ?, ?, ?)",
        (study, *terms),
    )
    c.execute(
        "INSERT INTO study_text (rowid, name, pid, acc, descr, ref) VALUES (?, ?, ?, ?, ?, ?)",
        (cursor.lastrowid, *terms),
    )


def test_a_version_5_file_gets_rowid_tables_and_the_text_s_date_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite3"
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_schema, "SCHEMA_VERSION", 5)
        patched.setattr(sqlite_index, "_filed_text", lambda *_: (None, None))
        patched.setattr(sqlite_index, "_write_terms", _terms_version_5)
        patched.setattr(sqlite_index, "_log", lambda *_: None)
        records = _archive(SqliteIndex(path), 12)
    with sqlite3.connect(path) as connection:
        ddl = dict(connection.execute("SELECT name, sql FROM sqlite_master"))
    assert "WITHOUT ROWID" in ddl["studies"]
    catalog = SqliteCatalog(path)  # opens and migrates
    assert sqlite_schema.schema_version(path) == sqlite_schema.SCHEMA_VERSION
    with sqlite3.connect(path) as connection:
        ddl = dict(connection.execute("SELECT name, sql FROM sqlite_master"))
        assert not connection.execute(
            "SELECT study FROM study_terms t WHERE sdt IS NOT"
            " (SELECT sdt FROM studies s WHERE s.study = t.study)"
        ).fetchall()
        connection.execute("INSERT INTO study_text (study_text) VALUES ('integrity-check')")
    for table in ("studies", "series", "patients"):
        assert "WITHOUT ROWID" not in ddl[table]
    assert "study_terms_by_date" in ddl
    for level, params in (
        ("STUDY", {"PatientName": "*ull*"}),
        ("STUDY", {"PatientName": "MUL*ANN"}),
        ("SERIES", {"PatientName": "*ull*", "Modality": "CT"}),
        ("SERIES", {"Modality": "MR"}),
    ):
        expected = _expected(records, level, {**params, "limit": "1000"})
        if level == "STUDY":
            expected = {r.study_uid for r in records if r.series_uid in expected}
        got = _search(catalog, level, {**params, "limit": "1000"})
        assert len(got) == len(expected)
        assert set(got) == expected, (level, params)


def test_text_walks_once_its_candidates_outnumber_what_a_walk_reads() -> None:
    # Gathering a candidate costs about 16 studies walked: a page walks when its
    # candidates are many for the archive, so a walk's length stays about page / share.
    assert 250 < sqlite_catalog.walk_threshold(102, 10_000) < 300
    assert 750 < sqlite_catalog.walk_threshold(102, 100_000) < 900
    assert sqlite_catalog.walk_threshold(1001, 10_000) > sqlite_catalog.walk_threshold(102, 10_000)
