"""The change feed service (shared/services/changefeed.py) over the in-memory fakes:
Azure v1's bounds, actions, states, paging by Sequence, Metadata and the de-identified
view."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest, Forbidden, NotFound
from shared.ports import AddOutcome, ReplaceOutcome
from shared.services import changefeed
from shared.services.changefeed import FeedRequest
from tests.fakes import FakeIndex, FakeSearchCatalog
from tests.support import dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.2301"
SERIES = f"{STUDY}.1"


@pytest.fixture
def archive() -> tuple[FakeIndex, FakeSearchCatalog, list[bytes]]:
    """Three instances stored, the second replaced, the third removed."""
    index = FakeIndex()
    datas = [
        dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="P-23") for _ in range(3)
    ]
    for data in datas:
        assert index.add(dicom_files.record_of(data)) is AddOutcome.STORED
    update = dicom_files.record_of(dicom_files.changed(datas[1], StudyDescription="UPDATED"))
    assert index.replace(update).outcome is ReplaceOutcome.REPLACED
    index.remove(STUDY, SERIES, dicom_files.record_of(datas[2]).sop_instance_uid)
    return index, FakeSearchCatalog(index), datas


def _sops(datas: list[bytes]) -> list[str]:
    return [dicom_files.record_of(d).sop_instance_uid for d in datas]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, FeedRequest(0, 10, None)),
        ({"offset": "5", "limit": "100", "includeMetadata": "False"}, FeedRequest(5, 100, False)),
        ({"limit": "1", "includeMetadata": "true"}, FeedRequest(0, 1, True)),
        ({"Offset": "2", "includemetadata": "false"}, FeedRequest(2, 10, False)),
        (None, FeedRequest()),
    ],
)
def test_parse_defaults_and_bounds(params: dict[str, str] | None, expected: FeedRequest) -> None:
    assert changefeed.parse(params) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "101"},
        {"limit": "0"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"offset": "1.5"},
        {"includeMetadata": "yes"},
    ],
)
def test_parse_refuses_values_beyond_azure_bounds(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        changefeed.parse(params)


def test_entries_are_the_history_in_order_with_actions_and_states(archive) -> None:
    index, catalog, datas = archive
    first, second, third = _sops(datas)
    feed = changefeed.read(index, catalog, FeedRequest(0, 100, False))
    assert [
        (e["Sequence"], e["Action"], e["SOPInstanceUID"], e["State"]) for e in feed.entries
    ] == [
        (1, "create", first, "current"),
        (2, "create", second, "replaced"),
        (3, "create", third, "deleted"),
        (4, "update", second, "current"),
        (5, "delete", third, "deleted"),
    ]
    assert {(e["StudyInstanceUID"], e["SeriesInstanceUID"]) for e in feed.entries} == {
        (STUDY, SERIES)
    }
    assert all(e["Timestamp"] and "Metadata" not in e for e in feed.entries)
    assert feed.stored_uids["instances"] == [first, second, third, second, third]


def test_paging_by_the_last_sequence_reads_everything_once(archive) -> None:
    index, catalog, _ = archive
    everything = changefeed.read(index, catalog, FeedRequest(0, 100, False)).entries
    paged: list[dict[str, object]] = []
    offset = 0
    while entries := changefeed.read(index, catalog, FeedRequest(offset, 2, False)).entries:
        assert len(entries) <= 2
        paged += entries
        offset = int(str(entries[-1]["Sequence"]))
    assert paged == everything
    assert changefeed.read(index, catalog, FeedRequest(99, 10, False)).entries == []


def test_a_later_change_outside_the_page_still_replaces(archive) -> None:
    index, catalog, _ = archive
    (entry,) = changefeed.read(index, catalog, FeedRequest(1, 1, False)).entries
    assert (entry["Action"], entry["State"]) == ("create", "replaced")


def test_metadata_by_default_and_only_for_current_entries(archive) -> None:
    index, catalog, datas = archive
    first = _sops(datas)[0]
    entries = changefeed.read(index, catalog, FeedRequest(0, 100, None)).entries
    with_metadata = [e for e in entries if "Metadata" in e]
    assert [e["Sequence"] for e in with_metadata] == [1, 4]
    assert with_metadata[0]["Metadata"]["00080018"]["Value"] == [first]
    assert with_metadata[1]["Metadata"]["00081030"]["Value"] == ["UPDATED"]


def test_latest_is_the_last_entry(archive) -> None:
    index, catalog, _ = archive
    latest = changefeed.latest(index, catalog, include_metadata=False)
    assert latest.entries == changefeed.read(index, catalog, FeedRequest(4, 1, False)).entries
    assert latest.entries[0]["Action"] == "delete"


def test_latest_of_an_empty_feed_is_404() -> None:
    index = FakeIndex()
    with pytest.raises(NotFound):
        changefeed.latest(index, FakeSearchCatalog(index))
    assert changefeed.read(index, FakeSearchCatalog(index), FeedRequest()).entries == []


def test_the_deidentified_view_sees_its_uids_and_no_metadata(archive) -> None:
    index, catalog, datas = archive
    view = {uid: f"2.25.{n}" for n, uid in enumerate([STUDY, SERIES, *_sops(datas)], 1)}
    feed = changefeed.read(index, catalog, FeedRequest(0, 100, None), view.__getitem__)
    assert {e["StudyInstanceUID"] for e in feed.entries} == {view[STUDY]}
    assert [e["SOPInstanceUID"] for e in feed.entries][:3] == [view[u] for u in _sops(datas)]
    assert all("Metadata" not in e for e in feed.entries)
    assert feed.stored_uids["studies"][0] == STUDY  # the audit names what was read
    with pytest.raises(Forbidden):
        changefeed.read(index, catalog, FeedRequest(0, 10, True), view.__getitem__)
    with pytest.raises(Forbidden):
        changefeed.latest(index, catalog, True, view.__getitem__)


# ------------------------------------------------------------------ Azure v2's time window


def _timed_index(minutes: list[int]) -> FakeIndex:
    """Removals (no catalog rows needed) at 10:00 + each number of minutes."""
    from shared.ports import Change

    index = FakeIndex()
    for n, minute in enumerate(minutes, start=1):
        at = f"2026-12-07T10:{minute:02d}:00.000000Z"
        sop = f"{STUDY}.9.{n}"
        index.log.append(Change("remove", STUDY, SERIES, sop, "k", "", at, str(n), n))
    return index


def _window(index: FakeIndex, **params: str) -> list[int]:
    request = changefeed.parse(params)
    feed = changefeed.read(index, FakeSearchCatalog(index), request)
    return [e["Sequence"] for e in feed.entries]


def test_a_time_window_answers_the_entries_in_it() -> None:
    index = _timed_index(list(range(0, 60, 2)))  # Sequences 1..30 at 10:00, 10:02, ...
    window = {"startTime": "2026-12-07T10:10:00Z", "endTime": "2026-12-07T10:20:00Z"}
    assert _window(index, **window, limit="100") == [6, 7, 8, 9, 10]
    assert _window(index, **window, limit="2") == [6, 7]
    assert _window(index, **window, offset="2", limit="2") == [8, 9]  # offset: skipped
    assert _window(index, **window, offset="5") == []
    assert _window(index, startTime="2026-12-07T10:55:00Z", limit="100") == [29, 30]
    assert _window(index, endTime="2026-12-07T10:03:00Z", limit="100") == [1, 2]
    assert _window(index, startTime="2026-12-07T11:00:00+01:00", limit="3") == [1, 2, 3]
    assert _window(_timed_index([]), startTime="2026-12-07T10:00:00Z") == []


@pytest.mark.parametrize(
    "params",
    [
        {"startTime": "yesterday"},
        {"endTime": "2026-13-01T00:00:00Z"},
        {"startTime": "2026-12-07T10:00:00Z", "endTime": "2026-12-07T10:00:00Z"},
        {"startTime": "2026-12-07T11:00:00Z", "endTime": "2026-12-07T10:00:00Z"},
    ],
)
def test_a_bad_time_window_is_400(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        changefeed.parse(params)


def test_entries_carry_azure_s_spelling_of_the_uids_too(archive) -> None:
    index, catalog, _ = archive
    entry = changefeed.read(index, catalog, FeedRequest(0, 1, False)).entries[0]
    assert entry["StudyInstanceUid"] == entry["StudyInstanceUID"]
    assert entry["SeriesInstanceUid"] == entry["SeriesInstanceUID"]
    assert entry["SopInstanceUid"] == entry["SOPInstanceUID"]


def test_a_window_read_is_a_few_reads_whatever_the_offset() -> None:
    """Bounds found by bisection: no page-by-page walk to skip ``offset`` entries."""
    index = _timed_index([m % 60 for m in range(0, 60)] * 1)  # 60 entries, 10:00..10:59
    calls = {"n": 0}
    changes = index.changes

    def counted(after: str = "", limit: int = 100):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return changes(after, limit)

    index.changes = counted  # type: ignore[method-assign]
    window = {"startTime": "2026-12-07T10:05:00Z", "endTime": "2026-12-07T10:50:00Z"}
    assert _window(index, **window, offset="40", limit="100") == [46, 47, 48, 49, 50]
    assert calls["n"] <= 2 * 7 + 1
