"""The search budget in the read-deidentified view: a de-identified QIDO search runs under the
budget of every search (items and time), a cut page answers ``Warning: 299`` with the offset
that continues it, and following those offsets gives the whole de-identified answer once.

Fourteen series (one study each) are indexed on the embedded backend (SQLite) and on
DynamoDB (moto); a quarter of them have SeriesNumber 7, a key no index narrows, so the
search examines every series it reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import bootstrap, config
from shared.dicom.uid_map import map_uid
from shared.dicom.validate import validate
from shared.dicomweb.query import Query, parse
from shared.ports import AddOutcome, Candidates, Catalog
from shared.services import search
from shared.services.deidentified import View
from shared.services.store import _record
from tests.support import dicom_files
from tests.unit.test_deidentified_view import backend, body_of, call, serving

BASE = "https://h/o3-dpacs-wado"
SERIES = 14
MATCHING = (1, 5, 9, 12)  # the series with SeriesNumber 7
SERIES_UID = "0020000E"
SERIES_RESOURCE = "/o3-dpacs-wado/qido/{AET}/series"


@dataclasses.dataclass(frozen=True)
class Indexed:
    """The original Series Instance UIDs stored with SeriesNumber 7, the key, and the
    archive the functions answer from."""

    matching: frozenset[str]
    key: bytes
    archive: bootstrap.Archive

    def view(self) -> View:
        """The read-deidentified view of the archive."""
        return View(self.archive.catalog, self.archive.deidentified, self.archive.anonymizer)


@pytest.fixture(scope="module", params=["local", "moto"])
def indexed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Indexed]:
    patch = pytest.MonkeyPatch()
    try:
        with backend(request.param, tmp_path_factory.mktemp("deid-budget"), patch) as chosen:
            patch.setattr(config, "settings", lambda: chosen)
            with serving(bootstrap.build(chosen)) as built:
                matching = set()
                for number in range(SERIES):
                    series_number = 7 if number in MATCHING else 8
                    data = dicom_files.with_new_uids(SeriesNumber=series_number)
                    record = _record(validate(data), "AE", datetime.now(UTC))
                    assert built.index.add(record) is AddOutcome.STORED
                    if series_number == 7:
                        matching.add(record.series_uid)
                yield Indexed(frozenset(matching), built.anonymizer.key(), built)
    finally:
        patch.undo()


class CountingCatalog:
    """A catalog that counts the candidate rows searches read from it."""

    def __init__(self, inner: Catalog) -> None:
        self.inner = inner
        self.read = 0

    def search(self, query: Query) -> Candidates:
        found = self.inner.search(query)
        return dataclasses.replace(found, rows=self._counted(found.rows))

    def _counted(self, rows: Iterator[Any]) -> Iterator[Any]:
        for row in rows:
            self.read += 1
            yield row

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def ticking(deadline_after: int) -> search.SearchBudget:
    """A budget on a fake clock that advances one unit each time it is read."""
    ticks = itertools.count()
    return search.SearchBudget(deadline=float(deadline_after), clock=lambda: float(next(ticks)))


def _series(datasets: list[dict[str, Any]]) -> list[str]:
    return [d[SERIES_UID]["Value"][0] for d in datasets]


def _page(limit: int, offset: int) -> Query:
    params = {"SeriesNumber": ["7"], "limit": [str(limit)], "offset": [str(offset)]}
    return parse(params, "SERIES")


# ------------------------------------------------------------------ the handler


def test_a_cut_deidentified_search_answers_warning_299_and_the_offset(
    indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # limit + 1 candidates once one matched: 6 of 14, while the answer is at most 4 results
    monkeypatch.setattr(search, "EXTRA_ITEMS", 0)
    params = {"SeriesNumber": ["7"], "limit": ["5"]}
    response = call("qido", SERIES_RESOURCE, {"AET": "AET"}, params)
    assert response["statusCode"] == 200
    (warning,) = response["multiValueHeaders"]["Warning"]
    found = _series(_json(response))
    assert warning.startswith('299 o3-dpacs: "The search stopped after examining')
    assert f"offset={len(found)}" in warning
    assert 0 < len(found) <= len(MATCHING)
    deidentified = {map_uid(uid, indexed.key) for uid in indexed.matching}
    assert set(found) <= deidentified


def test_a_never_matching_deidentified_search_stops_at_the_budget(
    indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingCatalog(indexed.archive.catalog)
    budgets: list[search.SearchBudget] = []

    def on_a_fake_clock(cls: type, context: object, **kw: Any) -> search.SearchBudget:
        budgets.append(ticking(deadline_after=3))
        return budgets[-1]

    monkeypatch.setattr(search.SearchBudget, "from_lambda_context", classmethod(on_a_fake_clock))
    with serving(bootstrap.build(config.settings(), catalog=counting)):
        params = {"SeriesNumber": ["999"]}
        response = call("qido", SERIES_RESOURCE, {"AET": "AET"}, params)
    assert response["statusCode"] == 200
    assert _json(response) == []
    assert budgets  # the handler made the budget the view searched under
    # The clock passes 3 at the fifth candidate; one more read tells whether any remains.
    assert counting.read == 6 < SERIES
    (warning,) = response["multiValueHeaders"]["Warning"]
    assert "offset=0" in warning


def _json(response: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(body_of(response) or b"[]")
    return found


# ------------------------------------------------------------------ the view's pages


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_following_the_offsets_gives_the_plain_answer_deidentified_once(
    indexed: Indexed, limit: int
) -> None:
    view = indexed.view()
    plain = search.search(_page(100, 0), indexed.archive.catalog, BASE)
    assert plain.next_offset is None and not plain.more
    assert set(_series(plain.datasets)) == indexed.matching
    whole = view.search(_page(100, 0), BASE).result.datasets  # no cut: the uncut answer
    assert _series(whole) == [map_uid(uid, indexed.key) for uid in _series(plain.datasets)]

    pages: list[dict[str, Any]] = []
    offset, cut = 0, 0
    for _ in range(3 * SERIES):
        page = view.search(_page(limit, offset), BASE, search.SearchBudget(extra_items=0)).result
        pages += page.datasets
        if page.next_offset is not None:
            cut += 1
            assert page.next_offset == offset + len(page.datasets)
            offset = page.next_offset
        elif page.more:
            assert len(page.datasets) == limit
            offset += limit
        else:
            break
    else:
        pytest.fail("the offsets did not reach the end of the answer")
    assert pages == whole  # same results, same order: none lost, none repeated
    assert cut  # the budget did cut pages


def test_a_deidentified_search_past_its_deadline_is_cut_with_the_offset(indexed: Indexed) -> None:
    view = indexed.view()
    found = view.search(_page(100, 2), BASE, ticking(deadline_after=6)).result
    assert found.exhausted and not found.more
    assert found.next_offset == 2 + len(found.datasets)
    assert found.examined < SERIES


def test_unknown_deidentified_uids_read_nothing(indexed: Indexed) -> None:
    counting = CountingCatalog(indexed.archive.catalog)
    view = dataclasses.replace(indexed.view(), catalog=counting)
    query = parse({"SeriesInstanceUID": ["2.25.1"]}, "SERIES")
    found = view.search(query, BASE, ticking(deadline_after=100)).result
    assert found.datasets == [] and not found.exhausted and counting.read == 0
