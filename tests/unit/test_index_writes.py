"""What a change of the index writes (``shared.index.writes``), with no backend: the
description every adapter persists."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from shared.dicom.uid_map import UidMap
from shared.dicom.validate import validate
from shared.index import writes
from shared.index.order import instance_sort_key, study_sort_key
from shared.ports import AddOutcome, InstanceRecord, ReplaceOutcome
from shared.services.store import _record
from tests.support import dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.620"
AT = "2026-12-07T00:00:00.000000Z"


def _record_of(**values: object) -> InstanceRecord:
    data = dicom_files.with_new_uids(study=STUDY, patient_id="P-620", **values)  # type: ignore[arg-type]
    return _record(validate(data), "AE", datetime.now(UTC))


def _holding(*records: InstanceRecord, patient: int | None = None) -> writes.Holding:
    last = records[-1]
    sort_key = study_sort_key(last.study_date, last.study_time, STUDY)
    texts = writes.add(last, writes.StudyState(), None)
    assert isinstance(texts, writes.Writes) and texts.study.text is not None
    state = writes.StudyState(
        exists=True,
        patient_id="P-620",
        sort_key=sort_key,
        texts=texts.study.text.texts,
        texts_sort_key=sort_key,
        instances=len(records),
    )
    return writes.Holding(
        state,
        {r.sop_instance_uid: writes.Member(r.series_uid, r.sop_class_uid) for r in records},
        {r.series_uid: r.modality for r in records},
        len(records) if patient is None else patient,
    )


def test_a_new_study_s_first_instance_writes_every_level_its_text_and_its_lookups() -> None:
    record = _record_of(Modality="CT", PatientName="Kowalski^Jan")
    w = writes.add(record, writes.StudyState(), UidMap(b"k"))
    assert isinstance(w, writes.Writes)
    assert w.put == record and w.removed is None
    assert w.put_sort_key == instance_sort_key(
        record.series_uid, record.instance_number, record.sop_instance_uid
    )
    assert (w.study.instances, w.study.series_added, w.study.modalities_added) == (
        1,
        (record.series_uid,),
        ("CT",),
    )
    assert [(s.series_uid, s.instances) for s in w.series] == [(record.series_uid, 1)]
    assert [(p.patient_id, p.instances, p.studies_added) for p in w.patients] == [
        ("P-620", 1, (STUDY,))
    ]
    assert w.study.text is not None and ("name", "kow") in w.study.text.new_grams()
    assert {lk.level for lk in w.lookups_added} == {"STUDY", "SERIES", "INSTANCE"}
    assert w.study.deidentified == w.deidentified("STUDY") != ""
    assert (w.change.kind, w.change.sop_instance_uid, w.change.at) == (
        "add",
        record.sop_instance_uid,
        record.received,
    )


def test_an_instance_with_nothing_new_writes_no_text() -> None:
    first = _record_of(PatientName="Kowalski^Jan")
    w = writes.add(_record_of(PatientName="Kowalski^Jan"), _holding(first).study, None)
    assert isinstance(w, writes.Writes)
    assert w.study.text is None and not w.lookups_added and not w.keyed


def test_an_add_the_index_must_refuse_is_an_outcome() -> None:
    first = _record_of()
    other = dataclasses.replace(_record_of(), patient_id="P-999")
    assert writes.add(other, _holding(first).study, None) is AddOutcome.PATIENT_MISMATCH
    huge = dataclasses.replace(first, instance_json="x" * writes.MAX_ENTRY_BYTES)
    assert writes.add(huge, writes.StudyState(), None) is AddOutcome.REJECTED
    assert writes.existing(first, first.sha256) is AddOutcome.ALREADY_STORED
    assert writes.existing(first, "other") is AddOutcome.DIFFERENT_CONTENT


def test_removing_one_of_two_instances_lowers_the_counts_only() -> None:
    a, b = _record_of(series=f"{STUDY}.1"), _record_of(series=f"{STUDY}.1")
    w = writes.remove(writes.entry_of(a), _holding(a, b), UidMap(b"k"), AT)
    assert (w.study.instances, w.study.gone, w.study.counted) == (-1, False, True)
    assert [(s.instances, s.gone) for s in w.series] == [(-1, False)]
    assert [(p.instances, p.gone, p.expect) for p in w.patients] == [(-1, False, 2)]
    assert w.study.series_removed == () and w.study.text_removed is None
    assert [lk.level for lk in w.lookups_removed] == ["INSTANCE"]
    assert w.removed == writes.entry_of(a) and w.put is None and w.change.kind == "remove"


def test_removing_a_study_s_last_instance_removes_every_level() -> None:
    only = _record_of(Modality="MR")
    w = writes.remove(writes.entry_of(only), _holding(only), UidMap(b"k"), AT)
    assert w.study.gone and w.series[0].gone and w.patients[0].gone
    assert w.study.text_removed is not None and w.study.text_removed.grams()
    assert {lk.level for lk in w.lookups_removed} == {"STUDY", "SERIES", "INSTANCE"}


def test_removing_a_series_drops_its_modality_from_the_study() -> None:
    ct, mr = _record_of(Modality="CT"), _record_of(Modality="MR")
    w = writes.remove(writes.entry_of(mr), _holding(ct, mr), None, AT)
    assert w.study.series_removed == (mr.series_uid,)
    assert w.study.modalities == ("CT",)
    assert w.patients[0].series_removed == (mr.series_uid,)


def test_a_replacement_keeps_the_counts_and_refuses_another_place() -> None:
    a, b = _record_of(Modality="CT"), _record_of(Modality="CT")
    holding = _holding(a, b)
    new = dataclasses.replace(a, sha256="new", blob_key="new-key", study_json='{"x": 1}')
    w = writes.replace(writes.entry_of(a), new, holding, None, AT)
    assert isinstance(w, writes.Writes)
    assert (w.study.instances, w.series[0].instances, w.patients[0].instances) == (0, 0, 0)
    assert (w.change.kind, w.change.blob_key, w.change.previous_key) == (
        "replace",
        "new-key",
        a.blob_key,
    )
    moved = dataclasses.replace(a, series_uid="1.2.3")
    assert writes.replace(writes.entry_of(a), moved, holding, None, AT) is ReplaceOutcome.MOVED
    other = dataclasses.replace(a, patient_id="P-999")
    assert (
        writes.replace(writes.entry_of(a), other, holding, None, AT)
        is ReplaceOutcome.PATIENT_MISMATCH
    )


def test_a_patient_merge_moves_the_whole_study_with_its_counts() -> None:
    a, b = _record_of(series=f"{STUDY}.1"), _record_of(series=f"{STUDY}.2")
    c = _record_of(series=f"{STUDY}.2")
    holding = _holding(a, b, c, patient=5)  # the patient has 2 instances elsewhere
    merged = dataclasses.replace(a, patient_id="P-999", sha256="new", blob_key="new-key")
    w = writes.replace(writes.entry_of(a), merged, holding, None, AT, moves_study=True)
    assert isinstance(w, writes.Writes)
    old, new = w.patients
    assert (old.patient_id, old.instances, old.gone, old.expect) == ("P-620", -3, False, 5)
    assert old.studies_removed == (STUDY,)
    assert sorted(old.series_removed) == [f"{STUDY}.1", f"{STUDY}.2"]
    assert (new.patient_id, new.instances, new.studies_added) == ("P-999", 3, (STUDY,))
    assert sorted(new.series_added) == [f"{STUDY}.1", f"{STUDY}.2"]
    assert w.study.patient_id == "P-999"
    assert (w.study.instances, w.series[0].instances) == (0, 0)
    alone = _holding(a, b, c, patient=3)  # the study was all the patient had: it goes
    w = writes.replace(writes.entry_of(a), merged, alone, None, AT, moves_study=True)
    assert isinstance(w, writes.Writes) and w.patients[0].gone


def test_the_holding_follows_a_removal() -> None:
    a, b = _record_of(series=f"{STUDY}.1"), _record_of(series=f"{STUDY}.2")
    after = _holding(a, b).without(writes.entry_of(a))
    assert after.consistent() and list(after.members) == [b.sop_instance_uid]
    assert list(after.modalities) == [b.series_uid] and after.patient_instances == 1
    assert not after.without(writes.entry_of(b)).study.exists
