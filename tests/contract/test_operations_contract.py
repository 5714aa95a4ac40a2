"""Metadata updates and patient merges (``shared.services.operations``) on the fake, files +
SQLite and S3 + DynamoDB (moto): each instance gets a new version whose bytes hold the
change (pixel data byte for byte), QIDO follows at once, the replaced bytes are kept and
readable, a cut-off operation finishes when run again without doing anything twice, and a
DELETE takes the kept versions into the restore window and a restore brings them back."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest

from shared.deadline import Deadline
from shared.dicom.validate import validate
from shared.dicomweb.query import parse
from shared.errors import BadRequest, NotFound
from shared.services import lifecycle, operations, store
from shared.services import search as search_service
from shared.services.lifecycle import Target
from tests.fakes import FakeAuditSink, FakeObjectStore
from tests.support import backends, dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.7700"
OTHER = "1.2.826.0.1.3680043.8.498.7701"
BASE = "https://h/o3-dpacs-wado"
WRONG, RIGHT = "OPS-WRONG", "OPS-RIGHT"
MERGE = {
    "00100020": {"vr": "LO", "Value": [RIGHT]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Rightful^Patient"}]},
}


@pytest.fixture(params=backends.KINDS)
def archive(
    request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path
) -> tuple[Any, Any, Callable[[], Any]]:
    return backends.empty(request.param, tmp_path, "operations-contract")


def _store(archive: tuple[Any, Any, Callable[[], Any]], data: bytes) -> str:
    objects, index, _ = archive
    instance = validate(data)
    outcome = store.commit(
        instance,
        calling_aet="OPS",
        base_url=BASE,
        objects=objects,
        index=index,
        write=lambda key: objects.put(key, data),
        clock=lambda: datetime.now(UTC),
    )
    assert outcome.sop_instance_uid == instance.sop_instance_uid
    return instance.sop_instance_uid


def _two_patients(archive: tuple[Any, Any, Callable[[], Any]]) -> dict[str, bytes]:
    """STUDY: three instances sent under the wrong patient (two series); OTHER: one
    instance of the right patient."""
    sent = {}
    for number, series in enumerate((f"{STUDY}.1", f"{STUDY}.1", f"{STUDY}.2"), 1):
        data = dicom_files.with_new_uids(
            study=STUDY, series=series, patient_id=WRONG, PatientName="Wrong^Patient",
            StudyDescription="CHEST PA", InstanceNumber=number,
        )  # fmt: skip
        sent[_store(archive, data)] = data
    right = dicom_files.with_new_uids(study=OTHER, patient_id=RIGHT, PatientName="Rightful^Patient")
    sent[_store(archive, right)] = right
    return sent


def _ports(archive: tuple[Any, Any, Callable[[], Any]], sink: Any = None) -> operations.Ports:
    objects, index, catalog = archive
    return operations.Ports(objects=objects, index=index, catalog=catalog, audit=sink)


def _search(catalog: Callable[[], Any], level: str, **params: str) -> list[dict[str, Any]]:
    query = parse({k: [v] for k, v in {**params, "includefield": "all"}.items()}, level)
    return search_service.search(query, catalog(), BASE).datasets


def _ask(objects: Any, studies: list[str], change: dict[str, Any]) -> operations.Operation:
    body = json.dumps({"studyInstanceUids": studies, "changeDataset": change}).encode()
    return operations.submit(body, objects=objects, caller=operations.Caller("key-1", "admin"))


def _dataset(objects: Any, key: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(objects.get(key)))


def _tail(data: bytes) -> bytes:
    """The bytes from the pixel data element on."""
    with io.BytesIO(data) as source:
        pydicom.dcmread(source, stop_before_pixels=True)
        return data[source.tell() :]


def test_a_patient_merge_moves_the_study_and_keeps_the_originals(archive: Any) -> None:
    objects, _, catalog = archive
    sent = _two_patients(archive)
    sink = FakeAuditSink()
    operation = _ask(objects, [STUDY], MERGE)
    assert [*operations.pending(objects)] == [operation.id]
    assert operations.status(operation.id, objects).status_json()["status"] == "running"
    assert operations.run_pending(_ports(archive, sink)) == {"finished": 1, "pending": 0}
    done = operations.status(operation.id, objects).status_json()
    assert (done["status"], done["percentComplete"], done["errors"]) == ("succeeded", 100, [])
    assert done["results"]["instanceUpdated"] == 3
    assert [*operations.pending(objects)] == []
    # QIDO follows: one patient, two studies, no trace of the wrong one.
    assert _search(catalog, "PATIENT", PatientID=WRONG) == []
    (patient,) = _search(catalog, "PATIENT", PatientID=RIGHT)
    assert patient["00201200"]["Value"] == [2] and patient["00201204"]["Value"] == [4]
    assert _search(catalog, "STUDY", PatientName="Wrong*") == []
    assert len(_search(catalog, "INSTANCE", PatientID=RIGHT)) == 4
    for row in catalog().instances(STUDY):
        original = sent[row.sop_instance_uid]
        now = objects.get(row.blob_key)
        ds = pydicom.dcmread(io.BytesIO(now))
        assert (ds.PatientID, str(ds.PatientName)) == (RIGHT, "Rightful^Patient")
        assert ds.SOPInstanceUID == row.sop_instance_uid
        assert _tail(now) == _tail(original)  # pixel data untouched
        found = operations.versions(
            STUDY, row.series_uid, row.sop_instance_uid, objects=objects, catalog=catalog()
        )
        assert [v.current for v in found] == [True, False]
        assert found[0].version_id == hashlib.sha256(now).hexdigest()
        kept = operations.version_object(
            STUDY, row.series_uid, row.sop_instance_uid, found[1].version_id, objects=objects
        )
        assert objects.get(kept) == original  # byte-identical original
    (record,) = sink.records
    assert (record["action"], record["keyId"], record["studies"]) == ("U", "key-1", [STUDY])
    assert record["queryKeys"] == ["PatientID", "PatientName"]
    assert len(record["versions"]) == 3
    assert "Rightful" not in json.dumps(record) and RIGHT not in json.dumps(record)


def test_a_study_update_is_searchable_at_once_and_a_repeat_changes_nothing(archive: Any) -> None:
    objects, _, catalog = archive
    _two_patients(archive)
    change = {"00081030": {"vr": "LO", "Value": ["CHEST PA AND LATERAL"]}}
    _ask(objects, [STUDY], change)
    operations.run_pending(_ports(archive))
    assert _search(catalog, "STUDY", StudyDescription="*LATERAL*") != []
    keys = sorted(r.blob_key for r in catalog().instances(STUDY))
    again = _ask(objects, [STUDY], change)
    operations.run_pending(_ports(archive))
    status = operations.status(again.id, objects).status_json()
    assert (status["status"], status["results"]["instanceUpdated"]) == ("succeeded", 0)
    assert sorted(r.blob_key for r in catalog().instances(STUDY)) == keys


def test_a_cut_off_operation_finishes_later_without_doing_anything_twice(archive: Any) -> None:
    objects, _, catalog = archive
    _two_patients(archive)
    operation = _ask(objects, [OTHER, STUDY], MERGE | {"00081030": {"vr": "LO", "Value": ["X"]}})
    ticks = itertools.count()
    # Time runs out after a few instances: each expired() call is a tick.
    cut = Deadline(3.0, clock=lambda: float(next(ticks)))
    assert operations.run_pending(_ports(archive), deadline=cut) == {"finished": 0, "pending": 1}
    assert operations.status(operation.id, objects).status == "running"
    assert operations.run_pending(_ports(archive)) == {"finished": 1, "pending": 0}
    assert operations.status(operation.id, objects).status == "succeeded"
    for row in [*catalog().instances(STUDY), *catalog().instances(OTHER)]:
        found = operations.versions(
            row.study_uid, row.series_uid, row.sop_instance_uid, objects=objects, catalog=catalog()
        )
        assert len(found) == 2, row.sop_instance_uid  # one new version each, never two
        assert _dataset(objects, row.blob_key).StudyDescription == "X"


def test_an_unknown_study_fails_the_operation_and_the_others_are_updated(archive: Any) -> None:
    objects, _, catalog = archive
    _two_patients(archive)
    unknown = "1.2.826.0.1.3680043.8.498.7799"
    operation = _ask(objects, [unknown, STUDY], MERGE)
    operations.run_pending(_ports(archive))
    status = operations.status(operation.id, objects).status_json()
    assert status["status"] == "failed"
    assert status["errors"] == [f"study {unknown}: not found"]
    assert status["results"]["studyUpdated"] == 1
    assert _search(catalog, "PATIENT", PatientID=WRONG) == []


def test_a_deleted_study_takes_its_versions_along_and_a_restore_brings_them_back(
    archive: Any,
) -> None:
    objects, index, catalog = archive
    _two_patients(archive)
    _ask(objects, [STUDY], MERGE)
    operations.run_pending(_ports(archive))
    kept = sorted(i.key for i in objects.listing(f"versions/{STUDY}/"))
    assert len(kept) == 3
    lifecycle.delete(Target(STUDY), objects=objects, index=index, retention_days=30)
    assert [*objects.listing(f"versions/{STUDY}/")] == []
    assert len([*objects.listing(f"deleted/versions/{STUDY}/")]) == 3
    lifecycle.restore(Target(STUDY), objects=objects, index=index, calling_aet="R", base_url=BASE)
    assert sorted(i.key for i in objects.listing(f"versions/{STUDY}/")) == kept
    assert len(_search(catalog, "INSTANCE", PatientID=RIGHT)) == 4
    lifecycle.delete(Target(STUDY), objects=objects, index=index, retention_days=0)
    assert [*objects.listing(f"versions/{STUDY}/")] == []
    assert [*objects.listing(f"deleted/versions/{STUDY}/")] == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "must be"),
        (b'{"studyInstanceUids": [], "changeDataset": {}}', "non-empty"),
        (b'{"studyInstanceUids": ["1.2.x"], "changeDataset": {}}', "valid UID"),
        (
            b'{"studyInstanceUids": ["1.2.3"], "changeDataset":'
            b' {"0020000D": {"vr": "UI", "Value": ["1.2.4"]}}}',
            "changeDataset",
        ),
    ],
)
def test_a_malformed_request_is_refused_before_anything_is_recorded(body: bytes, why: str) -> None:
    objects = FakeObjectStore()
    with pytest.raises(BadRequest, match=why):
        operations.submit(body, objects=objects, caller=operations.Caller())
    assert objects.objects == {}


def test_an_unknown_operation_is_404() -> None:
    for name in ("nope", "0190b0b0-0000-7000-8000-000000000000", "../x"):
        with pytest.raises(NotFound):
            operations.status(name, FakeObjectStore())


def test_ids_sort_in_the_order_operations_were_asked_for() -> None:
    times = iter(float(t) for t in range(1_700_000_000, 1_700_000_050))
    ids = [operations.new_id(lambda: next(times)) for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_a_worker_leaves_while_another_holds_the_lease_and_the_holder_takes_new_markers(
    archive: Any, tmp_path: Path
) -> None:
    from shared.adapters.sqlite_lease import SqliteLease

    objects, _, catalog = archive
    _two_patients(archive)
    lease = SqliteLease(tmp_path / "leases.sqlite3")
    ports = operations.Ports(objects=objects, index=archive[1], catalog=catalog, lease=lease)
    first = _ask(objects, [STUDY], {"00081030": {"vr": "LO", "Value": ["ONE"]}})
    assert lease.acquire(operations.LEASE, "someone else", 60)
    assert operations.run_pending(ports) == {"finished": 0, "pending": 0, "busy": 1}
    assert operations.status(first.id, objects).status == "running"
    lease.release(operations.LEASE, "someone else")
    second: list[operations.Operation] = []
    real_run_all = operations._run_all

    def run_all_then_ask(*args: Any) -> dict[str, int]:
        done = real_run_all(*args)
        if not second:  # asked while the lease is held: its own worker would leave
            second.append(_ask(objects, [STUDY], {"00081030": {"vr": "LO", "Value": ["TWO"]}}))
        return done

    operations._run_all = run_all_then_ask  # type: ignore[assignment]
    try:
        counts = operations.run_pending(ports)
    finally:
        operations._run_all = real_run_all  # type: ignore[assignment]
    assert counts == {"finished": 2, "pending": 0, "busy": 0}
    assert operations.status(second[0].id, objects).status == "succeeded"
    assert {_dataset(objects, r.blob_key).StudyDescription for r in catalog().instances(STUDY)} == {
        "TWO"
    }
    assert lease.acquire(operations.LEASE, "anyone", 60)  # given up at the end
