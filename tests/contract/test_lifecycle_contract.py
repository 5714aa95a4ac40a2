"""A large study deletes completely on every backend, however often the deleting function
is cut off (its time runs out, or it dies mid-sweep), and is never half-counted meanwhile:
the delete service (``shared.services.lifecycle``) over the fake, files + SQLite, and S3 +
DynamoDB (moto)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.s3_blobs import S3BlobStore
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.deadline import Deadline
from shared.dicom.validate import validate
from shared.dicomweb.query import parse
from shared.errors import StorageUnavailable
from shared.services import lifecycle
from shared.services import search as search_service
from shared.services.lifecycle import Target
from shared.services.store import _record
from tests.fakes import FakeIndex, FakeObjectStore, FakeSearchCatalog
from tests.support import dicom_files

TABLE, BUCKET = "lifecycle-contract", "lifecycle-contract"
STUDY = "1.2.826.0.1.3680043.8.498.7500"
INSTANCES = 160


@pytest.fixture(params=["fake", "sqlite", "dynamodb"])
def archive(
    request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path
) -> tuple[Any, Any, Callable[[], Any]]:
    """(objects, index, catalog factory) of one backend, holding INSTANCES instances of
    STUDY in four series (all the same bytes but their UIDs: the index never reads them)."""
    if request.param == "fake":
        objects: Any = FakeObjectStore()
        index: Any = FakeIndex()
        catalog: Callable[[], Any] = lambda: FakeSearchCatalog(index)  # noqa: E731
    elif request.param == "sqlite":
        objects = FileBlobStore(tmp_path / "objects")
        index = SqliteIndex(tmp_path / "index.sqlite3")
        catalog = lambda: SqliteCatalog(tmp_path / "index.sqlite3")  # noqa: E731
    else:
        dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        dynamodb.create_table(
            TableName=TABLE, **local_template.load().tables["IndexTable"].create_args
        )
        s3.create_bucket(Bucket=BUCKET)
        objects = S3BlobStore(s3, BUCKET)
        index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
        catalog = lambda: DynamoSearch(dynamodb, TABLE)  # noqa: E731
    data = dicom_files.with_new_uids(study=STUDY, series=f"{STUDY}.1", patient_id="BIG-1")
    base = _record(validate(data), "AE", datetime.now(UTC))
    for number in range(INSTANCES):
        series = f"{STUDY}.{number % 4 + 1}"
        sop = f"{series}.{number + 1}"
        key = f"dicom/{STUDY}/{series}/{sop}.{base.sha256}.dcm"
        record = replace(
            base, series_uid=series, sop_instance_uid=sop, blob_key=key,
            instance_number=str(number + 1),
        )  # fmt: skip
        objects.put(key, data)
        index.add(record)
    return objects, index, catalog


def _count(catalog: Callable[[], Any]) -> int:
    query = parse({"StudyInstanceUID": [STUDY]}, "STUDY")
    rows = list(catalog().search(query).rows)
    return rows[0].n_instances if rows else 0


def _listed(catalog: Callable[[], Any]) -> int:
    return sum(1 for _ in catalog().instances(STUDY))


def _ticks(n: int) -> Deadline:
    """A deadline that passes after ``n`` looks at the clock (a function cut off)."""
    counter = itertools.count()
    return Deadline(float(n), clock=lambda: float(next(counter)))


def _keys(objects: Any, prefix: str) -> list[str]:
    return [info.key for info in objects.listing(prefix)]


def test_a_large_study_deleted_in_many_short_requests_is_never_half_counted(archive) -> None:
    objects, index, catalog = archive
    assert _count(catalog) == INSTANCES
    rounds = 0
    while True:
        rounds += 1
        assert rounds < INSTANCES, "no progress"
        deletion = lifecycle.delete(
            Target(STUDY), objects=objects, index=index, retention_days=30, deadline=_ticks(25)
        )
        assert _count(catalog) == _listed(catalog), "counted other than listed"
        if deletion.done:
            break
    if isinstance(index, SqliteIndex):
        assert rounds > 1, "the sweep runs out of time, not the index's one transaction"
    else:
        assert rounds > 2, "removals stopped between instances"
    assert _listed(catalog) == 0 and _count(catalog) == 0
    assert _keys(objects, "dicom/") == [] and _keys(objects, lifecycle.JOBS_PREFIX) == []
    assert len(_keys(objects, lifecycle.DELETED_PREFIX)) == INSTANCES


class _DiesInTheSweep:
    """Object storage whose function dies (an exception) at the n-th copy."""

    def __init__(self, inner: Any, at: int) -> None:
        self.inner, self.copies, self.at = inner, 0, at

    def copy(self, source: str, target: str) -> None:
        self.copies += 1
        if self.copies == self.at:
            raise StorageUnavailable("the function was cut off")
        self.inner.copy(source, target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_delete_cut_off_mid_sweep_is_finished_by_the_schedule(archive) -> None:
    objects, index, catalog = archive
    dying = _DiesInTheSweep(objects, at=INSTANCES // 3)
    with pytest.raises(StorageUnavailable):
        lifecycle.delete(Target(STUDY), objects=dying, index=index, retention_days=30)
    assert _count(catalog) == _listed(catalog)
    assert list(lifecycle.pending(objects)) == [Target(STUDY)]
    for _ in range(INSTANCES):
        counts = lifecycle.finish_pending(
            objects=objects, index=index, retention_days=30, deadline=_ticks(40)
        )
        assert _count(catalog) == _listed(catalog)
        if counts["pending"] == 0:
            break
    assert _listed(catalog) == 0
    assert _keys(objects, "dicom/") == [] and _keys(objects, lifecycle.JOBS_PREFIX) == []
    restored = lifecycle.restore(
        Target(STUDY), objects=objects, index=index, calling_aet="AE", base_url="h"
    )
    assert restored.failed == [], "every kept copy is a valid instance"


@pytest.fixture(params=["fake", "sqlite", "dynamodb"])
def backend(
    request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path
) -> tuple[Any, Any, Callable[[], Any]]:
    """(objects, index, catalog factory) of one backend, empty."""
    if request.param == "fake":
        index: Any = FakeIndex()
        return FakeObjectStore(), index, lambda: FakeSearchCatalog(index)
    if request.param == "sqlite":
        path = tmp_path / "index.sqlite3"
        return FileBlobStore(tmp_path / "objects"), SqliteIndex(path), lambda: SqliteCatalog(path)
    dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    s3.create_bucket(Bucket=BUCKET)
    index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
    return S3BlobStore(s3, BUCKET), index, lambda: DynamoSearch(dynamodb, TABLE)


@pytest.mark.parametrize("level", ["SERIES", "INSTANCE"])
def test_no_attribute_of_a_deleted_instance_stays_on_its_study_or_series(backend, level) -> None:
    """The study and series take the attributes of the instance stored last; when a DELETE
    removes that one (a wrongly sent instance, another description), they take those of
    an instance that remains, and no search finds the deleted values."""
    objects, index, catalog = backend
    study, kept_series, wrong_series = f"{STUDY}1", f"{STUDY}1.1", f"{STUDY}1.2"
    datas = [
        dicom_files.with_new_uids(
            study=study, series=kept_series, patient_id="P-7501", StudyDescription="CT HEAD"
        ),
        dicom_files.with_new_uids(
            study=study, series=wrong_series, patient_id="P-7501", StudyDescription="CT HEAD"
        ),
        dicom_files.with_new_uids(
            study=study,
            series=wrong_series,
            patient_id="P-7501",
            StudyDescription="WRONG KNEE",
            SeriesDescription="WRONG SERIES",
        ),
    ]
    records = [_record(validate(d), "AE", datetime.now(UTC)) for d in datas]
    for record, data in zip(records, datas, strict=True):
        objects.put(record.blob_key, data)
        index.add(record)
    wrong = records[-1]
    target = Target(
        study, wrong.series_uid, wrong.sop_instance_uid if level == "INSTANCE" else None
    )
    lifecycle.delete(target, objects=objects, index=index, retention_days=0, catalog=catalog())

    def found(level: str, **params: str) -> list[Any]:
        query = parse({k: [v] for k, v in params.items()}, level)
        return list(search_service.search(query, catalog(), "https://h").datasets)

    assert found("STUDY", StudyDescription="*KNEE*") == []
    assert found("STUDY", StudyDescription="CT HEAD") != []
    if level == "INSTANCE":
        assert found("SERIES", SeriesInstanceUID=wrong_series, SeriesDescription="*WRONG*") == []
        assert len(found("SERIES", SeriesInstanceUID=wrong_series)) == 1


def test_a_patient_never_keeps_the_name_of_a_deleted_study(backend) -> None:
    """A study sent under the wrong name for an existing PatientID, then deleted: the
    patient shows the name of its remaining study again, and no search by the wrong name
    finds it."""
    objects, index, catalog = backend
    right = dicom_files.with_new_uids(
        study=f"{STUDY}2", patient_id="P-7502", PatientName="Right^Name"
    )
    wrong = dicom_files.with_new_uids(
        study=f"{STUDY}3", patient_id="P-7502", PatientName="Wrongly^Sent"
    )
    for data in (right, wrong):
        record = _record(validate(data), "AE", datetime.now(UTC))
        objects.put(record.blob_key, data)
        index.add(record)

    def patients(**params: str) -> list[Any]:
        query = parse({k: [v] for k, v in params.items()}, "PATIENT")
        return list(search_service.search(query, catalog(), "https://h").datasets)

    assert patients(PatientName="Wrongly*") != []
    lifecycle.delete(
        Target(f"{STUDY}3"), objects=objects, index=index, retention_days=0, catalog=catalog()
    )
    assert patients(PatientName="Wrongly*") == []
    (found,) = patients(PatientID="P-7502")
    assert found["00100010"]["Value"][0]["Alphabetic"] == "Right^Name"
