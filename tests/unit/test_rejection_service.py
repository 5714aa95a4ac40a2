"""IOCM rejection notes on the in-memory fakes (and the upload path on files + SQLite): a
note hides what it names, keeps what it names before it arrives, 113039 deletes once, an
admin lists and restores; notes built by highdicom and checked by dciodvfy."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.multipart import Part
from shared.dicomweb.stow_result import StoreResult
from shared.services import ingest, lifecycle, rejection
from shared.services.lifecycle import Target
from shared.services.store import StoreRequest, blob_key, store
from tests.fakes import FakeIndex, FakeObjectStore
from tests.support import dicom_files, notes
from tests.support.debian_tools import dciodvfy_errors, require_debian_tool

STUDY = "1.2.826.0.1.3680043.8.498.7700"
SERIES = f"{STUDY}.1"


def _instances(n: int = 2, study: str = STUDY, series: str = SERIES) -> list[bytes]:
    return [
        dicom_files.with_new_uids(study=study, series=series, patient_id="IOCM-1") for _ in range(n)
    ]


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _stow(objects: FakeObjectStore, index: FakeIndex, *datas: bytes, days: int = 30) -> StoreResult:
    request = StoreRequest(
        [Part(d, {"content-type": "application/dicom"}) for d in datas],
        "AE",
        "https://h",
        retention_days=days,
    )
    return store(request, objects=objects, index=index)


@pytest.fixture
def archive() -> tuple[FakeObjectStore, FakeIndex]:
    return FakeObjectStore(), FakeIndex()


def test_a_note_built_by_highdicom_is_a_valid_key_object_selection_document(
    tmp_path: Path,
) -> None:
    dciodvfy = require_debian_tool("dciodvfy", "dicom3tools")
    for code in rejection.CODES:
        path = tmp_path / f"{code}.dcm"
        path.write_bytes(notes.rejection_note(_instances(1), code))
        assert dciodvfy_errors(dciodvfy, path) == set(), code


@pytest.mark.parametrize("code", sorted(rejection.CODES))
def test_the_rejection_codes_are_recognised(code: str) -> None:
    named = _instances(1)
    ds = pydicom.dcmread(io.BytesIO(notes.rejection_note(named, code)))
    assert rejection.rejection_code(ds) == code
    (found,) = rejection.rejections_of(ds, datetime.now(UTC))
    assert (found.study_uid, found.series_uid, found.sop_instance_uid) == (
        STUDY,
        SERIES,
        _sop(named[0]),
    )


def test_other_instances_and_other_titles_are_not_notes() -> None:
    assert rejection.rejection_code(pydicom.dcmread(io.BytesIO(_instances(1)[0]))) is None
    ds = pydicom.dcmread(io.BytesIO(notes.rejection_note(_instances(1))))
    ds.ConceptNameCodeSequence[0].CodeValue = "113000"  # Of Interest: a KOS, not a rejection
    assert rejection.rejection_code(ds) is None
    ds.ConceptNameCodeSequence[0].CodeValue = "113001"
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
    assert rejection.rejection_code(ds) is None


def test_a_note_hides_what_it_names_and_is_itself_stored(archive) -> None:
    objects, index = archive
    kept, rejected = _instances(2)
    assert _stow(objects, index, kept, rejected).status == 200
    note = notes.rejection_note([rejected])
    result = _stow(objects, index, note)
    assert result.status == 200
    assert result.stored[0].rejected == (_sop(rejected),)
    assert _sop(rejected) not in index.instances
    assert {_sop(kept), _sop(note)} <= set(index.instances)
    assert index.studies[STUDY]["instances"] == 2  # the kept one and the note
    assert [v for k, v in objects.objects.items() if k.startswith("deleted/")] == [rejected]
    (record,) = rejection.listing(objects)[0]
    assert (record.code, record.note_uid, record.applied) == ("113001", _sop(note), True)
    # the change feed says reject for the hidden instance
    assert [(c.kind, c.sop_instance_uid) for c in index.log][-2:] == [
        ("add", _sop(note)),
        ("reject", _sop(rejected)),
    ]


def test_a_rejected_instance_sent_again_is_stored_and_hidden_at_once(archive) -> None:
    objects, index = archive
    (rejected,) = _instances(1)
    _stow(objects, index, rejected)
    _stow(objects, index, notes.rejection_note([rejected], "113037"))
    result = _stow(objects, index, rejected)
    assert result.status == 200
    assert result.stored[0].hidden
    assert _sop(rejected) not in index.instances


def test_a_note_of_instances_not_yet_stored_is_applied_when_they_arrive(archive) -> None:
    objects, index = archive
    early, other = _instances(2)
    _stow(objects, index, notes.rejection_note([early], "113038"))
    (pending,) = rejection.listing(objects)[0]
    assert not pending.applied
    assert pending.as_json()["state"] == "pending"
    result = _stow(objects, index, early, other)
    assert [s.hidden for s in result.stored] == [True, False]
    assert _sop(early) not in index.instances
    assert _sop(other) in index.instances
    assert rejection.listing(objects)[0][0].applied


def test_a_note_and_what_it_names_in_one_request_either_order(archive) -> None:
    objects, index = archive
    first, second = _instances(2)
    _stow(objects, index, notes.rejection_note([first]), first)
    _stow(objects, index, second, notes.rejection_note([second]))
    assert _sop(first) not in index.instances
    assert _sop(second) not in index.instances


def test_retention_expired_deletes_once_and_the_instance_may_come_back(archive) -> None:
    objects, index = archive
    (expired,) = _instances(1)
    _stow(objects, index, expired)
    _stow(objects, index, notes.rejection_note([expired], "113039"), days=0)
    assert _sop(expired) not in index.instances
    assert index.log[-1].kind == "remove"  # 113039 deletes, as DELETE does: the feed says delete
    assert not [k for k in objects.objects if k.startswith("deleted/")], "purged: 0 days"
    again = _stow(objects, index, expired)
    assert not again.stored[0].hidden
    assert _sop(expired) in index.instances


def test_retention_expired_before_arrival_deletes_on_arrival_then_no_more(archive) -> None:
    objects, index = archive
    (expired,) = _instances(1)
    _stow(objects, index, notes.rejection_note([expired], "113039"))
    assert _stow(objects, index, expired).stored[0].hidden
    assert not _stow(objects, index, expired).stored[0].hidden
    assert _sop(expired) in index.instances


def test_an_admin_restore_brings_a_rejected_instance_back_byte_identical(archive) -> None:
    objects, index = archive
    (rejected,) = _instances(1)
    _stow(objects, index, rejected)
    _stow(objects, index, notes.rejection_note([rejected]))
    restored = lifecycle.restore(
        Target(STUDY, SERIES, _sop(rejected)),
        objects=objects,
        index=index,
        calling_aet="AE",
        base_url="h",
    )
    assert restored.restored == [_sop(rejected)]
    assert objects.get(index.instances[_sop(rejected)].blob_key) == rejected
    assert rejection.listing(objects)[0] == [], "no longer rejected"
    again = _stow(objects, index, rejected).stored[0]
    assert again.already_stored and not again.hidden


def test_a_note_of_unknown_instances_hides_nothing_else_and_answers_stored(archive) -> None:
    objects, index = archive
    (kept,) = _instances(1)
    _stow(objects, index, kept)
    stranger = _instances(1, study=f"{STUDY}9", series=f"{STUDY}9.1")[0]
    result = _stow(objects, index, notes.rejection_note([stranger]))
    assert result.status == 200
    assert _sop(kept) in index.instances


def test_the_listing_pages_in_key_order_and_by_study(archive) -> None:
    objects, index = archive
    named = _instances(3)
    other = _instances(1, study=f"{STUDY}8", series=f"{STUDY}8.1")
    _stow(objects, index, notes.rejection_note(named), notes.rejection_note(other))
    first, cursor = rejection.listing(objects, limit=2)
    rest, end = rejection.listing(objects, after=cursor, limit=2)
    assert len(first) == 2 and len(rest) == 2 and end == ""
    assert [r.key for r in first + rest] == sorted(r.key for r in first + rest)
    studies, _ = rejection.listing(objects, study_uid=f"{STUDY}8")
    assert [r.sop_instance_uid for r in studies] == [_sop(other[0])]


def test_the_upload_path_applies_a_note_as_stow_does(tmp_path: Path) -> None:
    objects, index = FileBlobStore(tmp_path / "objects"), SqliteIndex(tmp_path / "i.sqlite3")
    (rejected,) = _instances(1)
    for name, data in (("a.dcm", rejected), ("note.dcm", notes.rejection_note([rejected]))):
        objects.put(f"incoming/site/{name}", data)
        outcome = ingest.ingest(
            f"incoming/site/{name}", store=objects, index=index, inflate_limit=256 << 20
        )
        assert outcome is not None and outcome.status == "stored"
    assert not index.references(_sop(rejected), blob_key(validate(rejected)))
    assert list(objects.listing(f"dicom/{STUDY}/{SERIES}/{_sop(rejected)}")) == []
    (record,) = rejection.listing(objects)[0]
    assert record.applied


def test_a_note_sent_again_leaves_its_rejections_applied(archive) -> None:
    objects, index = archive
    (rejected,) = _instances(1)
    _stow(objects, index, rejected)
    note = notes.rejection_note([rejected])
    _stow(objects, index, note)
    again = _stow(objects, index, note)
    assert again.stored[0].already_stored
    (record,) = rejection.listing(objects)[0]
    assert record.applied, "hidden, not pending"


class _Ticks:
    """A deadline that expires after ``n`` questions."""

    def __init__(self, n: int) -> None:
        self.left = n

    def expired(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_a_note_cut_off_by_its_deadline_is_finished_by_the_schedule(archive) -> None:
    objects, index = archive
    named = _instances(3)
    _stow(objects, index, *named)
    ds = pydicom.dcmread(io.BytesIO(notes.rejection_note(named)))
    rejections = rejection.rejections_of(ds, datetime.now(UTC))
    cut = rejection.apply_note(
        rejections, objects=objects, index=index, retention_days=30, deadline=_Ticks(1)
    )  # type: ignore[arg-type]
    assert not cut.done and len(cut.hidden) == 2
    left = json.loads(objects.objects[rejection.job_key(str(ds.SOPInstanceUID))])
    assert [r["sop_instance_uid"] for r in left] == [rejections[2].sop_instance_uid]
    assert sum(_sop(d) in index.instances for d in named) == 1
    counts = rejection.finish_pending(objects=objects, index=index, retention_days=30)
    assert counts == {"finished": 1, "pending": 0}
    assert not any(_sop(d) in index.instances for d in named)
    assert not [k for k in objects.objects if k.startswith(rejection.JOBS_PREFIX)]
    assert all(r.applied for r in rejection.listing(objects)[0])
