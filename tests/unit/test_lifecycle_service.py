"""Delete and restore on the in-memory fakes: what leaves the index, where the bytes go."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from shared import bootstrap, config
from shared.deadline import Deadline
from shared.dicomweb.multipart import Part
from shared.errors import NotFound, StorageUnavailable
from shared.services import lifecycle
from shared.services.lifecycle import Target
from shared.services.store import StoreRequest, store
from tests.fakes import FakeIndex, FakeObjectStore, FakeSearchCatalog
from tests.support import handlers

STUDY = "1.2.826.0.1.3680043.8.498.700"
SERIES = (f"{STUDY}.1", f"{STUDY}.2")
EVENTS = Path(__file__).resolve().parents[2] / "events"


def _instance(series: str, number: int, description: str = "") -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = f"{series}.{number}"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.PatientID = "LIFE1"
    ds.PatientName = "Life^Cycle"
    ds.Modality = "OT"
    ds.SeriesDescription = description
    ds.file_meta = Dataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def archive() -> tuple[FakeObjectStore, FakeIndex, dict[str, bytes]]:
    objects, index = FakeObjectStore(), FakeIndex()
    sent = {f"{s}.{n}": _instance(s, n) for s in SERIES for n in (1, 2)}
    request = StoreRequest(
        [Part(data, {"content-type": "application/dicom"}) for data in sent.values()], "AE", "h"
    )
    assert store(request, objects=objects, index=index).status == 200
    return objects, index, sent


def _delete(objects: FakeObjectStore, index: FakeIndex, target: Target, days: int = 30) -> Any:
    return lifecycle.delete(target, objects=objects, index=index, retention_days=days)


def _restore(objects: FakeObjectStore, index: FakeIndex, target: Target) -> Any:
    return lifecycle.restore(target, objects=objects, index=index, calling_aet="AE", base_url="h")


def test_a_deleted_study_leaves_the_index_and_its_bytes_wait_under_deleted(archive) -> None:
    objects, index, sent = archive
    deletion = _delete(objects, index, Target(STUDY))
    assert sorted(deletion.instances) == sorted(sent)
    assert deletion.done and deletion.swept == 4
    assert index.instances == {}
    assert STUDY not in index.studies
    assert not [k for k in objects.objects if k.startswith("jobs/")]
    assert not [k for k in objects.objects if k.startswith("dicom/")]
    kept = {k: v for k, v in objects.objects.items() if k.startswith("deleted/")}
    assert sorted(kept.values()) == sorted(sent.values())


def test_a_series_or_an_instance_deletes_alone(archive) -> None:
    objects, index, _ = archive
    _delete(objects, index, Target(STUDY, SERIES[0]))
    assert sorted(index.instances) == [f"{SERIES[1]}.1", f"{SERIES[1]}.2"]
    _delete(objects, index, Target(STUDY, SERIES[1], f"{SERIES[1]}.1"))
    assert sorted(index.instances) == [f"{SERIES[1]}.2"]
    assert index.studies[STUDY]["instances"] == 1


def test_nothing_to_delete_is_404_and_a_repeat_is_harmless(archive) -> None:
    objects, index, _ = archive
    with pytest.raises(NotFound):
        _delete(objects, index, Target("1.2.3"))
    _delete(objects, index, Target(STUDY, SERIES[0]))
    before = dict(objects.objects)
    with pytest.raises(NotFound):
        _delete(objects, index, Target(STUDY, SERIES[0]))
    assert objects.objects == before


def test_an_instance_uid_that_prefixes_another_deletes_only_itself(archive) -> None:
    objects, index, _ = archive
    # SERIES[0].1 is a prefix of SERIES[0].1x: store such an instance too.
    longer = _instance(SERIES[0], 11)
    request = StoreRequest([Part(longer, {"content-type": "application/dicom"})], "AE", "h")
    store(request, objects=objects, index=index)
    _delete(objects, index, Target(STUDY, SERIES[0], f"{SERIES[0]}.1"))
    assert f"{SERIES[0]}.11" in index.instances
    assert any(k.startswith(f"dicom/{STUDY}/{SERIES[0]}/{SERIES[0]}.11.") for k in objects.objects)


def test_zero_days_purges_at_once_and_nothing_can_be_restored(archive) -> None:
    objects, index, _ = archive
    deletion = _delete(objects, index, Target(STUDY), days=0)
    assert deletion.swept == 4
    assert objects.objects == {}
    with pytest.raises(NotFound):
        _restore(objects, index, Target(STUDY))


def test_a_restore_brings_back_the_same_bytes_and_counts(archive) -> None:
    objects, index, sent = archive
    before = {sop: objects.objects[r.blob_key] for sop, r in index.instances.items()}
    counts = dict(index.studies[STUDY])
    _delete(objects, index, Target(STUDY))
    result = _restore(objects, index, Target(STUDY))
    assert sorted(result.restored) == sorted(sent)
    after = {sop: objects.objects[r.blob_key] for sop, r in index.instances.items()}
    assert after == before
    assert index.studies[STUDY]["instances"] == counts["instances"]
    assert not [k for k in objects.objects if k.startswith("deleted/")]
    restores = [c.sop_instance_uid for c in index.log if c.kind == "restore"]
    assert sorted(restores) == sorted(sent)  # the change feed says restore


def test_a_restore_of_one_instance_leaves_the_others_deleted(archive) -> None:
    objects, index, _ = archive
    _delete(objects, index, Target(STUDY))
    sop = f"{SERIES[0]}.2"
    result = _restore(objects, index, Target(STUDY, SERIES[0], sop))
    assert result.restored == [sop]
    assert list(index.instances) == [sop]


def test_a_restore_of_an_instance_stored_again_with_other_bytes_is_a_conflict(archive) -> None:
    objects, index, _ = archive
    sop = f"{SERIES[0]}.1"
    _delete(objects, index, Target(STUDY, SERIES[0], sop))
    other = _instance(SERIES[0], 1, description="sent again, other content")
    request = StoreRequest([Part(other, {"content-type": "application/dicom"})], "AE", "h")
    assert store(request, objects=objects, index=index).status == 200
    result = _restore(objects, index, Target(STUDY, SERIES[0], sop))
    assert result.conflicts == [sop]
    assert objects.objects[index.instances[sop].blob_key] == other
    assert any(k.startswith("deleted/") for k in objects.objects), "the deleted copy is kept"


def test_a_stow_after_a_delete_stores_the_instance_again(archive) -> None:
    objects, index, sent = archive
    sop = f"{SERIES[1]}.2"
    _delete(objects, index, Target(STUDY, SERIES[1], sop))
    request = StoreRequest([Part(sent[sop], {"content-type": "application/dicom"})], "AE", "h")
    result = store(request, objects=objects, index=index)
    assert result.status == 200 and not result.stored[0].already_stored
    assert objects.objects[index.instances[sop].blob_key] == sent[sop]


class _CopyFails(FakeObjectStore):
    """Object storage that fails on the first copy (a delete cut off in its sweep)."""

    failed: bool = False

    def copy(self, source: str, target: str) -> None:
        if not self.failed:
            self.failed = True
            raise StorageUnavailable("injected")
        super().copy(source, target)


def test_a_delete_cut_off_in_its_sweep_is_finished_by_the_next(archive) -> None:
    objects, index, _ = archive
    faulty = _CopyFails(objects=objects.objects, modified=objects.modified)
    with pytest.raises(StorageUnavailable):
        _delete(faulty, index, Target(STUDY))
    assert index.instances == {}, "the index changed whole"
    assert len([k for k in faulty.objects if k.startswith("dicom/")]) == 4
    assert lifecycle.job_key(Target(STUDY)) in faulty.objects
    deletion = _delete(faulty, index, Target(STUDY))
    assert deletion.removed == () and deletion.swept == 4 and deletion.done
    assert not [k for k in faulty.objects if k.startswith(("dicom/", "jobs/"))]


def test_a_restore_takes_the_objects_a_cut_off_delete_left_behind(archive) -> None:
    objects, index, sent = archive
    index.remove(STUDY)
    result = _restore(objects, index, Target(STUDY))
    assert sorted(result.restored) == sorted(sent)
    assert not [k for k in objects.objects if k.startswith("deleted/")]


def test_the_sweep_never_takes_the_object_of_a_stow_in_flight(archive) -> None:
    objects, index, sent = archive
    sop = f"{SERIES[0]}.1"
    _delete(objects, index, Target(STUDY, SERIES[0]))
    key = f"dicom/{STUDY}/{SERIES[0]}/{sop}.x.dcm"
    objects.put(key, sent[sop])  # written, its index entry not yet
    with pytest.raises(NotFound):
        _delete(objects, index, Target(STUDY, SERIES[0]))
    assert key in objects.objects


def test_out_of_time_the_delete_stops_between_instances_and_the_next_goes_on(archive) -> None:
    objects, index, _ = archive
    deletion = lifecycle.delete(
        Target(STUDY), objects=objects, index=index, retention_days=30, deadline=Deadline(0.0)
    )
    assert not deletion.done
    assert len(deletion.removed) == 1 and len(index.instances) == 3, "one removal, each whole"
    assert index.studies[STUDY]["instances"] == 3
    deletion = _delete(objects, index, Target(STUDY))
    assert deletion.done and len(deletion.removed) == 3
    assert not [k for k in objects.objects if k.startswith(("dicom/", "jobs/"))]
    assert len([k for k in objects.objects if k.startswith("deleted/")]) == 4


@pytest.mark.parametrize(
    ("key", "uids"),
    [
        ("dicom/1.2/3.4/5.6.abc.dcm", ("1.2", "3.4", "5.6")),
        ("dicom/1.2/3.4/5.6/abc.dcm", ("1.2", "3.4", "5.6")),
        ("dicom/1.2/3.4/oops", None),
        ("retrieve/1.2/3.4/5.6.abc.dcm", None),
    ],
)
def test_object_keys_name_their_uids(key: str, uids: tuple[str, str, str] | None) -> None:
    assert lifecycle.object_uids(key) == uids


@pytest.mark.parametrize(
    "target", [Target(STUDY), Target(STUDY, SERIES[0]), Target(STUDY, SERIES[0], f"{SERIES[0]}.1")]
)
def test_a_job_record_names_its_target(target: Target) -> None:
    assert lifecycle.target_of_job(lifecycle.job_key(target)) == target


def test_pending_deletions_are_listed_until_done(archive) -> None:
    objects, index, _ = archive
    lifecycle.delete(
        Target(STUDY, SERIES[1]),
        objects=objects,
        index=index,
        retention_days=30,
        deadline=Deadline(0.0),
    )
    assert list(lifecycle.pending(objects)) == [Target(STUDY, SERIES[1])]
    _delete(objects, index, Target(STUDY, SERIES[1]))
    assert list(lifecycle.pending(objects)) == []


def test_the_schedule_finishes_a_deletion_no_client_sent_again(archive) -> None:
    objects, index, _ = archive
    lifecycle.delete(
        Target(STUDY), objects=objects, index=index, retention_days=30, deadline=Deadline(0.0)
    )
    assert len(index.instances) == 3
    counts = lifecycle.finish_pending(objects=objects, index=index, retention_days=30)
    assert counts == {"finished": 1, "pending": 0}
    assert index.instances == {}
    assert not [k for k in objects.objects if k.startswith(("dicom/", "jobs/"))]
    assert lifecycle.finish_pending(objects=objects, index=index, retention_days=30) == {
        "finished": 0,
        "pending": 0,
    }


def test_the_lifecycle_function_runs_the_schedule(archive) -> None:
    objects, index, _ = archive
    lifecycle.delete(
        Target(STUDY), objects=objects, index=index, retention_days=30, deadline=Deadline(0.0)
    )
    module = handlers.load("lifecycle")
    event = json.loads((EVENTS / "lifecycle-finish.json").read_text())
    fakes = bootstrap.build(
        config.Settings(), objects=objects, index=index, catalog=FakeSearchCatalog(index)
    )
    with module.archive.using(fakes):
        assert module.lambda_handler(event, handlers.Context()) == {
            "finished": 1,
            "pending": 0,
            "notes_finished": 0,  # rejection notes cut off (shared.services.rejection)
            "notes_pending": 0,
        }
    assert index.instances == {}


class _LittleTime(handlers.Context):
    def get_remaining_time_in_millis(self) -> int:
        return 1_000  # less than the 3 s a handler keeps to answer: out of time at once


def test_a_delete_out_of_time_answers_202_with_retry_after_and_goes_on(archive) -> None:
    objects, index, _ = archive
    module = handlers.load("lifecycle")
    fakes = bootstrap.build(
        config.Settings(), objects=objects, index=index, catalog=FakeSearchCatalog(index)
    )
    event = json.loads((EVENTS / "delete-study.json").read_text())
    event["pathParameters"]["STUDY"] = STUDY
    event["path"] = event["requestContext"]["path"] = f"/o3-dpacs-wado/rs/studies/{STUDY}"
    with module.archive.using(fakes):
        first = module.lambda_handler(event, _LittleTime())
        assert first["statusCode"] == 202
        assert first["multiValueHeaders"]["Retry-After"] == ["1"]
        assert json.loads(first["body"])["status"] == "pending"
        assert len(index.instances) == 3
        again = module.lambda_handler(event, handlers.Context())
        assert again["statusCode"] == 204
    assert index.instances == {}
