"""Substring search: the trigram index of the SQLite backend, its migration, the
runs a query requires, and the per-search budget with its Warning 299."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import bootstrap, config
from shared.adapters import sqlite_catalog, sqlite_index, sqlite_schema
from shared.adapters.sqlite_catalog import SqliteCatalog, text_match
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.query import parse
from shared.dicomweb.substring import part_matches, required_runs, study_terms
from shared.ports import AddOutcome, InstanceRecord
from shared.services import search as search_service
from shared.services.store import _record
from tests.support import dicom_files
from tests.support.handlers import Context, json_body, load, rest_event

BASE = "https://h/o3-dpacs-wado"
NAMES = ("Smith^John", "Johnson^Mary", "Müller^Jürgen", "Yamada^Tarou=山田^太郎", "Ng^Al")


def _store(index: Any, n: int, **changes: object) -> list[InstanceRecord]:
    records = []
    for number in range(n):
        fields: dict[str, object] = {
            "PatientName": NAMES[number % len(NAMES)],
            "StudyDescription": f"CT HEAD {number}",
            "AccessionNumber": f"ACC{number:04d}",
            "PatientSex": "F" if number % len(NAMES) == len(NAMES) - 1 else "M",
            "SpecificCharacterSet": "ISO_IR 192",
            **changes,
        }
        data = dicom_files.with_new_uids(patient_id=f"PID{number:03d}", **fields)
        record = _record(validate(data), "AE", datetime.now(UTC))
        assert index.add(record) is AddOutcome.STORED
        records.append(record)
    return records


def _uids(catalog: Any, params: dict[str, list[str]], level: str = "STUDY") -> list[str]:
    query = parse(params, level)  # type: ignore[arg-type]
    result = search_service.search(query, catalog, BASE)
    tag = {"STUDY": "0020000D", "SERIES": "0020000E", "INSTANCE": "00080018"}[level]
    return sorted(d[tag]["Value"][0] for d in result.datasets)


# ------------------------------------------------------------------ runs


@pytest.mark.parametrize(
    ("params", "keyword", "runs"),
    [
        ({"PatientName": ["*abc*"]}, "PatientName", ("abc",)),
        ({"PatientName": ["ABC*DEFG"]}, "PatientName", ("defg", "abc")),
        ({"PatientName": ["*ab?c*"]}, "PatientName", ("ab", "c")),
        ({"PatientName": ["*ab*"]}, "PatientName", ("ab",)),
        ({"PatientName": ["*?*"]}, "PatientName", ()),
        ({"PatientName": ["Smith^John"]}, "PatientName", ("smith^john",)),
        ({"PatientName": ["jürg smi", "x"][:1], "fuzzymatching": ["true"]}, "PatientName",
         ("jurg", "smi")),
        ({"PatientID": ["*MRN12*"]}, "PatientID", ("MRN12",)),
        ({"AccessionNumber": ["A1?23*456"]}, "AccessionNumber", ("456", "23", "A1")),
        ({"StudyDescription": ["*Head*"]}, "StudyDescription", ("Head",)),
        ({"ReferringPhysicianName": ["*HOUSE*"]}, "ReferringPhysicianName", ("house",)),
        ({"PatientID": ['""']}, "PatientID", ()),
        ({"PatientID": ["P1\\P2"]}, "PatientID", ("P1\\P2",)),  # LO: one value
    ],
)  # fmt: skip
def test_required_runs(params: dict[str, list[str]], keyword: str, runs: tuple[str, ...]) -> None:
    assert required_runs(parse(params, "STUDY"), keyword) == runs


def test_study_terms_keep_every_group_case_folded_and_accent_folded() -> None:
    attrs = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen", "Ideographic": "山田"}]},
        "00100020": {"vr": "LO", "Value": ["MRN1"]},
    }
    name, pid, acc, descr, ref = study_terms(attrs)
    assert name.split("\x1f") == ["müller^jürgen", "muller^jurgen", "山田"]
    assert (pid, acc, descr, ref) == ("MRN1", "", "", "")


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("smith^john\x1fsmith^john", "smi*", True),
        ("smith^john", "*ith", False),
        ("smith^john\x1f山田^太郎", "山田*", True),
        ("MRN123", "*12?", True),
        ("MRN123", "*12", False),
        ("", "*", False),
    ],
)
def test_part_matches_any_kept_value_whole(text: str, pattern: str, expected: bool) -> None:
    assert part_matches(text, pattern) is expected


def test_the_match_expression_quotes_runs() -> None:
    query = parse({"PatientName": ['*a"bc*'], "StudyDescription": ["*HEAD*"]}, "STUDY")
    assert text_match(query) == 'name : ("a""bc") AND descr : ("HEAD")'


# ------------------------------------------------------------------ SQLite index


def test_substring_searches_read_candidates_from_the_trigram_index(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    records = _store(SqliteIndex(path), 30)
    catalog = SqliteCatalog(path)
    by_name = {
        name: [r.study_uid for r in records[i :: len(NAMES)]] for i, name in enumerate(NAMES)
    }
    catalog.rows_read = 0
    assert _uids(catalog, {"PatientName": ["*ohns*"]}) == sorted(by_name["Johnson^Mary"])
    # Keys of the 6 candidates, then the 6 studies: nothing else read.
    assert catalog.rows_read == 12
    assert _uids(catalog, {"PatientName": ["*LLER*"]}) == sorted(by_name["Müller^Jürgen"])
    yamada = sorted(by_name["Yamada^Tarou=山田^太郎"])
    assert _uids(catalog, {"PatientName": ["*田^太*"]}) == yamada  # a trigram
    assert _uids(catalog, {"PatientName": ["*山田*"]}) == yamada  # two characters: a walk
    fuzzy = {"PatientName": ["jurg mul"], "fuzzymatching": ["true"]}
    assert _uids(catalog, fuzzy) == sorted(by_name["Müller^Jürgen"])
    assert _uids(catalog, {"AccessionNumber": ["*C001*"]}) == sorted(
        r.study_uid for r in records if "C001" in r.accession_number
    )
    assert _uids(catalog, {"StudyDescription": ["CT*D 1?"]}) == sorted(
        r.study_uid for r in records[10:20]
    )
    # Start and end: the name index and the trigram index together, whole values in SQL.
    catalog.rows_read = 0
    assert _uids(catalog, {"PatientName": ["JOH*ARY"]}) == sorted(by_name["Johnson^Mary"])
    assert catalog.rows_read == 12
    catalog.rows_read = 0
    assert _uids(catalog, {"PatientName": ["*OHN*N^M?RY"]}) == sorted(by_name["Johnson^Mary"])
    assert catalog.rows_read == 12
    assert _uids(catalog, {"PatientName": ["SMI*ITH"]}) == []  # the given name ends it
    # Shorter than a trigram: answered by walking, still right.
    assert _uids(catalog, {"PatientName": ["*g^A*"]}) == sorted(by_name["Ng^Al"])
    # Series and instances start from the same studies.
    johnson = {r.series_uid for r in records if r.patient_name == "Johnson^Mary"}
    assert set(_uids(catalog, {"PatientName": ["*ohns*"]}, "SERIES")) == johnson
    sops = {r.sop_instance_uid for r in records if r.patient_name == "Johnson^Mary"}
    assert set(_uids(catalog, {"PatientName": ["*ohns*"]}, "INSTANCE")) == sops


def test_a_changed_value_is_reindexed_and_an_unchanged_one_is_not_rewritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteIndex(path)
    (first,) = _store(index, 1, StudyDescription="CT HEAD")
    catalog = SqliteCatalog(path)
    assert _uids(catalog, {"StudyDescription": ["*HEA*"]}) == [first.study_uid]
    with sqlite3.connect(path) as connection:
        (row_id,) = connection.execute("SELECT id FROM study_terms").fetchone()
    same = dicom_files.with_new_uids(
        study=first.study_uid,
        patient_id=first.patient_id,
        PatientName=first.patient_name,
        StudyDescription="CT HEAD",
        AccessionNumber=first.accession_number,
        SpecificCharacterSet="ISO_IR 192",
    )
    assert index.add(_record(validate(same), "AE", datetime.now(UTC))) is AddOutcome.STORED
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT id FROM study_terms").fetchall() == [(row_id,)]
        # One FTS document, not rewritten (its rowid is the same, no second version).
        assert connection.execute("SELECT count(*) FROM study_text_docsize").fetchone() == (1,)
    changed = dicom_files.with_new_uids(
        study=first.study_uid,
        patient_id=first.patient_id,
        PatientName=first.patient_name,
        StudyDescription="MR KNEE",
        SpecificCharacterSet="ISO_IR 192",
    )
    assert index.add(_record(validate(changed), "AE", datetime.now(UTC))) is AddOutcome.STORED
    assert _uids(catalog, {"StudyDescription": ["*HEA*"]}) == []  # the study says MR KNEE
    assert _uids(catalog, {"StudyDescription": ["*KNE*"]}) == [first.study_uid]
    # Its first instances still carry CT HEAD: the index keeps both values.
    assert len(_uids(catalog, {"StudyDescription": ["*HEA*"]}, "INSTANCE")) == 2
    assert len(_uids(catalog, {"StudyDescription": ["*KNE*"]}, "INSTANCE")) == 1
    with sqlite3.connect(path) as connection:
        (descr,) = connection.execute("SELECT descr FROM study_terms").fetchone()
    assert descr.split("\x1f") == ["CT HEAD", "MR KNEE"]
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM study_text_docsize").fetchone() == (1,)
        assert connection.execute(
            "INSERT INTO study_text (study_text) VALUES ('integrity-check')"
        ).rowcount in (-1, 0, 1)


def test_a_version_2_file_holding_studies_gains_the_substring_index(  # and deid_uids (3)
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite3"
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_schema, "SCHEMA_VERSION", 2)
        patched.setattr(sqlite_index, "_filed_text", lambda *_: (None, None))  # version 2's add
        patched.setattr(sqlite_index, "_write_terms", lambda *_: None)
        patched.setattr(sqlite_index, "_add_deidentified", lambda *_: None)
        patched.setattr(sqlite_index, "_log", lambda *_: None)
        records = _store(SqliteIndex(path), 6)
    assert sqlite_schema.schema_version(path) == 2
    with sqlite3.connect(path) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert "study_terms" not in tables
    catalog = SqliteCatalog(path)  # opens, migrates and backfills
    assert sqlite_schema.schema_version(path) == sqlite_schema.SCHEMA_VERSION
    expected = sorted(r.study_uid for r in records if "mit" in r.patient_name)
    assert expected
    assert _uids(catalog, {"PatientName": ["*MIT*"]}) == expected
    more = _store(SqliteIndex(path), 1, PatientName="Goldsmith^Ann")
    assert _uids(catalog, {"PatientName": ["*MIT*"]}) == sorted([*expected, more[0].study_uid])


# ------------------------------------------------------------------ budget


def test_a_search_over_budget_returns_what_it_found_and_the_offset_to_continue(
    tmp_path: Path,
) -> None:
    path = tmp_path / "index.sqlite3"
    records = _store(SqliteIndex(path), 25)
    catalog = SqliteCatalog(path)
    # No index for PatientSex: every study is a candidate; 1 in 5 matches.
    query = parse({"PatientSex": ["F"], "limit": ["3"]}, "STUDY")
    expected = [r.study_uid for r in records if r.patient_name.startswith("Ng")]
    full = search_service.search(query, catalog, BASE)
    assert full.next_offset is None and full.more
    budget = search_service.SearchBudget(extra_items=2)
    found: list[str] = []
    offset, rounds = 0, 0
    while True:
        rounds += 1
        page_query = parse({"PatientSex": ["F"], "limit": ["3"], "offset": [str(offset)]}, "STUDY")
        page = search_service.search(page_query, catalog, BASE, budget)
        found += [d["0020000D"]["Value"][0] for d in page.datasets]
        if page.next_offset is None:
            assert not page.more or len(page.datasets) == 3
            if not page.more:
                break
            offset += 3
            continue
        assert page.next_offset == offset + len(page.datasets)
        offset = page.next_offset
        assert rounds < 40
    assert sorted(found) == sorted(expected)
    assert rounds > 2  # the budget did cut the pages


def test_a_search_past_its_deadline_stops_after_one_candidate(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    _store(SqliteIndex(path), 10)
    now = [100.0]
    budget = search_service.SearchBudget(deadline=99.0, clock=lambda: now[0])
    query = parse({"PatientSex": ["O"]}, "STUDY")
    result = search_service.search(query, SqliteCatalog(path), BASE, budget)
    assert result.datasets == [] and result.examined == 1 and result.next_offset == 0


def test_a_budget_reached_exactly_at_the_end_is_a_complete_answer(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    _store(SqliteIndex(path), 4)
    budget = search_service.SearchBudget(extra_items=0)
    query = parse({"PatientSex": ["O"], "limit": ["3"]}, "STUDY")
    result = search_service.search(query, SqliteCatalog(path), BASE, budget)
    assert result.examined == 4 and result.next_offset is None and not result.more


def test_the_budget_follows_the_lambda_context() -> None:
    class Short:
        def get_remaining_time_in_millis(self) -> int:
            return 2000

    budget = search_service.SearchBudget.from_lambda_context(Short())
    assert budget.deadline is not None
    assert 0.5 < budget.deadline - budget.clock() <= 1.0  # half of what is left
    long = search_service.SearchBudget.from_lambda_context(Context())
    assert long.deadline is not None
    assert long.deadline - long.clock() <= search_service.MAX_SECONDS
    assert search_service.SearchBudget.from_lambda_context(object()).deadline is not None


def test_the_handler_answers_a_cut_search_with_warning_299_and_the_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite3"
    _store(SqliteIndex(path), 12)
    monkeypatch.setattr(search_service, "EXTRA_ITEMS", 3)
    module = load("qido")
    event = rest_event(
        "GET",
        "/o3-dpacs-wado/qido/{AET}/studies",
        "/o3-dpacs-wado/qido/AE/studies",
        headers={"Accept": "application/dicom+json"},
        path_parameters={"AET": "AE"},
    )
    event["multiValueQueryStringParameters"] = {"PatientSex": ["F"], "limit": ["5"]}
    with module.archive.using(bootstrap.build(config.settings(), catalog=SqliteCatalog(path))):
        response = module.lambda_handler(event, Context())
    assert response["statusCode"] == 200
    (warning,) = response["multiValueHeaders"]["Warning"]
    body = json_body(response)
    assert warning.startswith('299 o3-dpacs: "The search stopped after examining')
    assert f"offset={len(body)}" in warning


def test_many_candidates_walk_the_date_index_with_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite3"
    _store(SqliteIndex(path), 20)
    catalog = SqliteCatalog(path)
    queries = [
        {"PatientName": ["*ohns*"]},
        {"StudyDescription": ["*HEAD 1*"]},
        {"PatientName": ["*ll*"], "AccessionNumber": ["*C00*"]},
    ]
    sorted_by_date = [_uids(catalog, q) for q in queries]

    def pages(limit: int) -> list[list[str]]:  # in the order answered, page after page
        out = []
        for q in queries:
            uids: list[str] = []
            for offset in range(0, 24, limit):
                query = parse({**q, "limit": [str(limit)], "offset": [str(offset)]}, "STUDY")
                result = search_service.search(query, catalog, BASE)
                uids += [d["0020000D"]["Value"][0] for d in result.datasets]
            out.append(uids)
        return out

    in_order = pages(1000)
    monkeypatch.setattr(sqlite_catalog, "MANY_CANDIDATES", 1)
    assert [_uids(catalog, q) for q in queries] == sorted_by_date
    assert all(sorted_by_date[:2])
    # Small pages test each study's text in place; large ones gather candidates first.
    monkeypatch.setattr(sqlite_catalog, "WALK_PAGE", 10)
    assert pages(4) == pages(1000) == in_order


def test_a_removed_study_leaves_the_substring_index(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteIndex(path)
    records = _store(index, 6)
    gone = records[0]
    catalog = SqliteCatalog(path)
    index.remove(gone.study_uid)
    with sqlite3.connect(path) as connection:
        studies = [r[0] for r in connection.execute("SELECT study FROM study_terms")]
        connection.execute("INSERT INTO study_text (study_text) VALUES ('integrity-check')")
    assert gone.study_uid not in studies
    assert len(studies) == len({r.study_uid for r in records}) - 1
    assert _uids(catalog, {"PatientName": ["*mit*"]}) == [records[5].study_uid]  # Smith, again
