"""IOCM rejection notes on every backend (the fake, files + SQLite, S3 + DynamoDB on
moto): what a note names leaves every search and count at once, whether it was stored
before or arrives after, and an admin's restore brings it back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest

from shared.dicomweb.multipart import Part
from shared.dicomweb.query import parse
from shared.services import lifecycle, rejection
from shared.services import search as search_service
from shared.services.lifecycle import Target
from shared.services.store import StoreRequest, store
from tests.support import backends, dicom_files, notes

STUDY = "1.2.826.0.1.3680043.8.498.7800"
SERIES = f"{STUDY}.1"


@pytest.fixture(params=backends.KINDS)
def archive(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> Any:
    return backends.empty(request.param, tmp_path)


def _stow(objects: Any, index: Any, *datas: bytes, catalog: Any = None) -> Any:
    request = StoreRequest(
        [Part(d, {"content-type": "application/dicom"}) for d in datas], "AE", "https://h"
    )
    return store(request, objects=objects, index=index, catalog=catalog)


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _found(catalog: Any, level: str, **params: str) -> list[dict[str, Any]]:
    query = parse({k: [v] for k, v in params.items()}, level)
    return list(search_service.search(query, catalog(), "https://h").datasets)


def _instances(catalog: Any) -> set[str]:
    return {d["00080018"]["Value"][0] for d in _found(catalog, "INSTANCE", StudyInstanceUID=STUDY)}


def _count(catalog: Any) -> int:
    (study,) = _found(catalog, "STUDY", StudyInstanceUID=STUDY)
    return int(study["00201208"]["Value"][0])


def test_a_note_hides_stored_instances_from_every_search_and_count(archive) -> None:
    objects, index, catalog = archive
    datas = [
        dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="IOCM-C1")
        for _ in range(3)
    ]
    _stow(objects, index, *datas)
    note = notes.rejection_note(datas[:2], "113037")
    _stow(objects, index, note)
    assert _instances(catalog) == {_sop(datas[2]), _sop(note)}
    assert _count(catalog) == 2
    assert _found(catalog, "INSTANCE", SOPInstanceUID=_sop(datas[0])) == []
    assert [_sop(note)] == [
        d["00080018"]["Value"][0] for d in _found(catalog, "INSTANCE", Modality="KO")
    ]


def test_a_rejection_kept_before_arrival_hides_on_arrival(archive) -> None:
    objects, index, catalog = archive
    early = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="IOCM-C2")
    kept = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="IOCM-C2")
    note = notes.rejection_note([early])
    _stow(objects, index, note)
    result = _stow(objects, index, early, kept)
    assert [s.hidden for s in result.stored] == [True, False]
    assert _instances(catalog) == {_sop(note), _sop(kept)}
    assert _count(catalog) == 2
    (record,) = rejection.listing(objects)[0]
    assert record.applied


def test_a_restore_brings_a_rejected_instance_back_into_searches(archive) -> None:
    objects, index, catalog = archive
    (data,) = [dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="IOCM-C3")]
    _stow(objects, index, data)
    _stow(objects, index, notes.rejection_note([data]))
    restored = lifecycle.restore(
        Target(STUDY, SERIES, _sop(data)),
        objects=objects,
        index=index,
        calling_aet="AE",
        base_url="h",
    )
    assert restored.restored == [_sop(data)]
    assert _sop(data) in _instances(catalog)
    assert _count(catalog) == 2
    assert rejection.listing(objects)[0] == []


def test_no_attribute_of_a_rejected_instance_stays_on_its_study_or_series(archive) -> None:
    """The study and series carry the attributes of the instance stored last; when a note
    hides that one, they take those of an instance that remains, as after a DELETE."""
    objects, index, catalog = archive
    kept = dicom_files.with_new_uids(
        study=STUDY, series=SERIES, patient_id="IOCM-C4", StudyDescription="CT HEAD"
    )
    wrong = dicom_files.with_new_uids(
        study=STUDY,
        series=SERIES,
        patient_id="IOCM-C4",
        StudyDescription="WRONG KNEE",
        SeriesDescription="WRONG SERIES",
    )
    _stow(objects, index, kept, wrong)
    assert _found(catalog, "STUDY", StudyDescription="*KNEE*") != []
    _stow(objects, index, notes.rejection_note([wrong]), catalog=catalog)
    assert _found(catalog, "STUDY", StudyDescription="*KNEE*") == []
    assert _found(catalog, "SERIES", SeriesInstanceUID=SERIES, SeriesDescription="*WRONG*") == []
