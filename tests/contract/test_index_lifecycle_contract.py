"""One suite for the index's lifecycle (port ``InstanceIndex``: remove, replace, changes),
run on the in-memory fake, on SQLite and on DynamoDB (moto), each read back through its
own catalog and de-identified lookup: what a removal or a replacement leaves must be what
QIDO, retrieval lookups and the read-deidentified view answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.uid_map import UidMap, map_uid
from shared.dicomweb.query import parse
from shared.ports import AddOutcome, ReplaceOutcome
from shared.services import search as search_service
from tests.fakes import FakeIndex, FakeSearchCatalog
from tests.support import dicom_files

TABLE = "lifecycle-table"
KEY = b"lifecycle contract key"
BASE = "https://h/o3-dpacs-wado"
STUDY = "1.2.826.0.1.3680043.8.498.610"
CT, MR = f"{STUDY}.1", f"{STUDY}.2"
# DICOM JSON tags of the counts and aggregates QIDO returns.
STUDY_SERIES, STUDY_INSTANCES, MODALITIES = "00201206", "00201208", "00080061"
SERIES_INSTANCES = "00201209"
PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES = "00201200", "00201202", "00201204"


@dataclass
class Backend:
    index: Any
    catalog: Any
    lookup: Any
    catalog_factory: Callable[[], Any]

    def search(self, level: str, **params: str) -> list[dict[str, Any]]:
        query = parse({k: [v] for k, v in {**params, "includefield": "all"}.items()}, level)
        return search_service.search(query, self.catalog_factory(), BASE).datasets


@pytest.fixture(params=["fake", "sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> Backend:
    if request.param == "fake":
        fake = FakeIndex(uid_map=UidMap(KEY))
        return Backend(fake, FakeSearchCatalog(fake), fake, lambda: FakeSearchCatalog(fake))
    if request.param == "sqlite":
        path = tmp_path / "index.sqlite3"
        index = SqliteIndex(path, UidMap(KEY))
        catalog = SqliteCatalog(path, UidMap(KEY))
        return Backend(index, catalog, catalog, lambda: SqliteCatalog(path))
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None, uid_map=UidMap(KEY))
    search = DynamoSearch(dynamodb, TABLE)
    return Backend(index, search, search, lambda: DynamoSearch(dynamodb, TABLE))


def _study(backend: Backend, **values: object) -> list[bytes]:
    """Two CT instances and one MR instance of STUDY, patient P-610."""
    values = {"PatientName": "Kowalski^Jan", "StudyDescription": "CT HEAD", **values}
    datas = [
        dicom_files.with_new_uids(
            study=STUDY,
            series=series,
            patient_id="P-610",
            Modality=modality,
            InstanceNumber=number,
            **values,
        )
        for number, (series, modality) in enumerate(((CT, "CT"), (CT, "CT"), (MR, "MR")), 1)
    ]
    for data in datas:
        assert backend.index.add(dicom_files.record_of(data)) is AddOutcome.STORED
    return datas


def _value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value") or []
    return values if tag == MODALITIES else (values[0] if values else None)


def _counts(backend: Backend) -> tuple[Any, ...]:
    (study,) = backend.search("STUDY", StudyInstanceUID=STUDY)
    (patient,) = backend.search("PATIENT", PatientID="P-610")
    return (
        _value(study, STUDY_SERIES),
        _value(study, STUDY_INSTANCES),
        sorted(_value(study, MODALITIES)),
        _value(patient, PATIENT_STUDIES),
        _value(patient, PATIENT_SERIES),
        _value(patient, PATIENT_INSTANCES),
    )


def _sops(backend: Backend, **params: str) -> list[str]:
    return sorted(d["00080018"]["Value"][0] for d in backend.search("INSTANCE", **params))


def test_a_removed_instance_is_no_longer_found_and_every_count_drops(backend: Backend) -> None:
    datas = _study(backend)
    first, second = (dicom_files.record_of(d) for d in datas[:2])
    assert _counts(backend) == (2, 3, ["CT", "MR"], 1, 2, 3)
    (removed,) = backend.index.remove(STUDY, CT, first.sop_instance_uid)
    assert (removed.sop_instance_uid, removed.blob_key) == (first.sop_instance_uid, first.blob_key)
    assert list(backend.catalog.instances_by_uid([first.sop_instance_uid])) == []
    assert [r.sop_instance_uid for r in backend.catalog.instances(STUDY, CT)] == [
        second.sop_instance_uid
    ]
    assert _sops(backend, SOPInstanceUID=first.sop_instance_uid) == []
    assert _counts(backend) == (2, 2, ["CT", "MR"], 1, 2, 2)
    (ct,) = backend.search("SERIES", StudyInstanceUID=STUDY, Modality="CT")
    assert _value(ct, SERIES_INSTANCES) == 1
    assert backend.index.references(first.sop_instance_uid, first.blob_key) is False
    deid = map_uid(first.sop_instance_uid, KEY)
    assert backend.lookup.original_uids("INSTANCE", [deid]) == {}
    assert backend.index.remove(STUDY, CT, first.sop_instance_uid) == ()  # nothing left


def test_removing_a_series_last_instance_removes_the_series(backend: Backend) -> None:
    datas = _study(backend)
    mr = dicom_files.record_of(datas[2])
    (removed,) = backend.index.remove(STUDY, MR)
    assert removed.sop_instance_uid == mr.sop_instance_uid
    assert [s.series_uid for s in backend.catalog.series_of_study(STUDY)] == [CT]
    assert backend.search("SERIES", Modality="MR") == []
    assert _counts(backend) == (1, 2, ["CT"], 1, 1, 2)
    assert backend.lookup.original_uids("SERIES", [map_uid(MR, KEY)]) == {}
    assert backend.lookup.original_uids("STUDY", [map_uid(STUDY, KEY)]) == {
        map_uid(STUDY, KEY): STUDY
    }


def test_removing_a_study_removes_every_level_its_text_and_its_lookups(
    backend: Backend,
) -> None:
    datas = _study(backend)
    other = dicom_files.with_new_uids(patient_id="P-610", PatientName="Kowalski^Jan")
    assert backend.index.add(dicom_files.record_of(other)) is AddOutcome.STORED
    records = [dicom_files.record_of(d) for d in datas]
    removed = backend.index.remove(STUDY)
    assert sorted((e.sop_instance_uid, e.blob_key) for e in removed) == sorted(
        (r.sop_instance_uid, r.blob_key) for r in records
    )
    assert list(backend.catalog.studies_by_uid([STUDY])) == []
    assert backend.catalog.series_of_study(STUDY) == []
    assert list(backend.catalog.instances(STUDY)) == []
    found = [d["0020000D"]["Value"][0] for d in backend.search("STUDY", PatientName="*owals*")]
    assert found == [
        dicom_files.record_of(other).study_uid
    ]  # the substring index answers without it
    assert backend.search("STUDY", StudyDescription="*HEA*") == []
    (patient,) = backend.search("PATIENT", PatientID="P-610")
    assert (_value(patient, PATIENT_STUDIES), _value(patient, PATIENT_INSTANCES)) == (1, 1)
    for level, uid in (("STUDY", STUDY), ("SERIES", CT), ("INSTANCE", records[0].sop_instance_uid)):
        assert backend.lookup.original_uids(level, [map_uid(uid, KEY)]) == {}, level
    backend.index.remove(dicom_files.record_of(other).study_uid)
    assert backend.search("PATIENT", PatientID="P-610") == []  # with its last study
    assert backend.index.remove(STUDY) == ()


def test_a_removal_told_to_stop_leaves_whole_instances_and_goes_on(backend: Backend) -> None:
    """``until`` stops a removal between two instances (SQLite removes all in one
    transaction); what is left is counted exactly, and the next call removes the rest."""
    _study(backend)
    first = backend.index.remove(STUDY, until=lambda: True)
    left = 3 - len(first)
    assert len(first) == (3 if isinstance(backend.index, SqliteIndex) else 1)
    if left:
        (study,) = backend.search("STUDY", StudyInstanceUID=STUDY)
        assert _value(study, STUDY_INSTANCES) == left
        assert len(_sops(backend, StudyInstanceUID=STUDY)) == left
    rest = backend.index.remove(STUDY)
    assert len(rest) == left
    assert backend.search("STUDY", StudyInstanceUID=STUDY) == []


def test_a_removed_study_can_be_stored_again(backend: Backend) -> None:
    datas = _study(backend)
    backend.index.remove(STUDY)
    assert backend.index.add(dicom_files.record_of(datas[0])) is AddOutcome.STORED
    assert _counts(backend) == (1, 1, ["CT"], 1, 1, 1)
    found = [d["0020000D"]["Value"][0] for d in backend.search("STUDY", PatientName="*owals*")]
    assert found == [STUDY]


def test_a_replacement_changes_what_qido_matches_and_returns(backend: Backend) -> None:
    data = dicom_files.with_new_uids(
        study=STUDY, series=CT, patient_id="P-610", PatientName="Kowalski^Jan",
        StudyDescription="CT HEAD", Modality="CT",
    )  # fmt: skip
    before = dicom_files.record_of(data)
    assert backend.index.add(before) is AddOutcome.STORED
    after = dicom_files.record_of(
        dicom_files.changed(data, PatientName="Nowak^Ewa", StudyDescription="MR KNEE")
    )
    assert after.blob_key != before.blob_key
    replaced = backend.index.replace(after)
    assert replaced.outcome is ReplaceOutcome.REPLACED
    assert replaced.previous is not None and replaced.previous.blob_key == before.blob_key
    for level in ("STUDY", "SERIES", "INSTANCE"):
        assert backend.search(level, PatientName="Kowalski*") == [], level
        (found,) = backend.search(level, PatientName="Nowak*")
        assert found["00081030"]["Value"] == ["MR KNEE"]
    assert [d["0020000D"]["Value"][0] for d in backend.search("STUDY", PatientName="*owak*")] == [
        STUDY
    ]
    assert backend.search("STUDY", StudyDescription="*HEA*") == []
    (row,) = backend.catalog.instances_by_uid([after.sop_instance_uid])
    assert row.blob_key == after.blob_key
    assert backend.index.references(after.sop_instance_uid, after.blob_key) is True
    assert backend.index.references(after.sop_instance_uid, before.blob_key) is False
    assert _counts(backend) == (1, 1, ["CT"], 1, 1, 1)
    deid = map_uid(after.sop_instance_uid, KEY)
    assert backend.lookup.original_uids("INSTANCE", [deid]) == {deid: after.sop_instance_uid}


def test_a_replacement_follows_modality_and_patient_changes(backend: Backend) -> None:
    data = dicom_files.with_new_uids(study=STUDY, series=MR, patient_id="P-610", Modality="MR")
    assert backend.index.add(dicom_files.record_of(data)) is AddOutcome.STORED
    moved = dicom_files.record_of(dicom_files.changed(data, Modality="OT", PatientID="P-611"))
    assert backend.index.replace(moved).outcome is ReplaceOutcome.REPLACED
    (study,) = backend.search("STUDY", StudyInstanceUID=STUDY)
    assert _value(study, MODALITIES) == ["OT"]
    assert backend.search("PATIENT", PatientID="P-610") == []
    (patient,) = backend.search("PATIENT", PatientID="P-611")
    assert (_value(patient, PATIENT_STUDIES), _value(patient, PATIENT_INSTANCES)) == (1, 1)
    assert [d["0020000D"]["Value"][0] for d in backend.search("STUDY", PatientID="P-611")] == [
        STUDY
    ]


def test_a_replacement_is_refused_when_it_cannot_be_made_in_place(backend: Backend) -> None:
    datas = _study(backend)
    unknown = dicom_files.record_of(
        dicom_files.with_new_uids(study=STUDY, series=CT, patient_id="P-610")
    )
    assert backend.index.replace(unknown).outcome is ReplaceOutcome.NOT_FOUND
    elsewhere = dicom_files.record_of(dicom_files.changed(datas[0], SeriesInstanceUID=MR))
    assert backend.index.replace(elsewhere).outcome is ReplaceOutcome.MOVED
    other_patient = dicom_files.record_of(dicom_files.changed(datas[0], PatientID="P-999"))
    assert backend.index.replace(other_patient).outcome is ReplaceOutcome.PATIENT_MISMATCH
    assert _counts(backend) == (2, 3, ["CT", "MR"], 1, 2, 3)
    assert [c.kind for c in backend.index.changes().changes] == ["add", "add", "add"]


def test_the_change_log_lists_exactly_the_committed_changes_in_order(backend: Backend) -> None:
    datas = _study(backend)
    first, second, third = (dicom_files.record_of(d) for d in datas)
    assert backend.index.add(dicom_files.record_of(datas[0])) is AddOutcome.ALREADY_STORED
    assert backend.index.add(
        dicom_files.record_of(dicom_files.changed(datas[0], SeriesDescription="x"))
    ) is (AddOutcome.DIFFERENT_CONTENT)
    intruder = dicom_files.with_new_uids(study=STUDY, patient_id="P-999")
    assert backend.index.add(dicom_files.record_of(intruder)) is AddOutcome.PATIENT_MISMATCH
    update = dicom_files.record_of(
        dicom_files.changed(datas[1], StudyDescription="CT HEAD AND NECK")
    )
    assert backend.index.replace(update).outcome is ReplaceOutcome.REPLACED
    backend.index.remove(STUDY, MR)
    expected = [
        ("add", first.sop_instance_uid, first.blob_key, ""),
        ("add", second.sop_instance_uid, second.blob_key, ""),
        ("add", third.sop_instance_uid, third.blob_key, ""),
        ("replace", second.sop_instance_uid, update.blob_key, second.blob_key),
        ("remove", third.sop_instance_uid, third.blob_key, ""),
    ]
    page = backend.index.changes()
    assert [(c.kind, c.sop_instance_uid, c.blob_key, c.previous_key) for c in page.changes] == (
        expected
    )
    assert {(c.study_uid, bool(c.at)) for c in page.changes} == {(STUDY, True)}
    paged, cursor = [], ""
    while True:  # two at a time, from each page's cursor
        part = backend.index.changes(after=cursor, limit=2)
        if not part.changes:
            assert part.cursor == cursor
            break
        paged += part.changes
        cursor = part.cursor
    assert paged == list(page.changes)
    backend.index.remove(STUDY)
    (*_, last) = backend.index.changes().changes
    later = backend.index.changes(after=cursor).changes
    assert [(c.kind, c.sop_instance_uid) for c in later] == [
        ("remove", first.sop_instance_uid),
        ("remove", second.sop_instance_uid),
    ]
    assert later[-1] == last


def test_a_patient_merge_moves_the_whole_study_one_replacement_at_a_time(
    backend: Backend,
) -> None:
    datas = _study(backend)  # P-610: three instances in two series
    elsewhere = dicom_files.with_new_uids(patient_id="P-777", Modality="US")
    assert backend.index.add(dicom_files.record_of(elsewhere)) is AddOutcome.STORED
    merged = [dicom_files.changed(d, PatientID="P-777") for d in datas]
    first = dicom_files.record_of(merged[0])
    assert backend.index.replace(first).outcome is ReplaceOutcome.PATIENT_MISMATCH
    assert backend.index.replace(first, moves_study=True).outcome is ReplaceOutcome.REPLACED
    # From the first replacement on, the study is the other patient's: a STOW of the old
    # patient into it is refused.
    stray = dicom_files.with_new_uids(study=STUDY, series=CT, patient_id="P-610")
    assert backend.index.add(dicom_files.record_of(stray)) is AddOutcome.PATIENT_MISMATCH
    for data in merged[1:]:  # the others now match the study's patient: no move needed
        assert backend.index.replace(dicom_files.record_of(data)).outcome is (
            ReplaceOutcome.REPLACED
        )
    assert backend.search("PATIENT", PatientID="P-610") == []
    (patient,) = backend.search("PATIENT", PatientID="P-777")
    assert (
        _value(patient, PATIENT_STUDIES),
        _value(patient, PATIENT_SERIES),
        _value(patient, PATIENT_INSTANCES),
    ) == (2, 3, 4)
    assert sorted(
        d["0020000D"]["Value"][0] for d in backend.search("STUDY", PatientID="P-777")
    ) == sorted([STUDY, dicom_files.record_of(elsewhere).study_uid])
    assert backend.search("INSTANCE", PatientID="P-610") == []
    assert len(backend.search("INSTANCE", PatientID="P-777")) == 4
    assert [c.kind for c in backend.index.changes().changes][-3:] == ["replace"] * 3
