"""One suite for the InstanceIndex port, run on the in-memory fake and on DynamoDB (moto).

Also counts AWS calls: a new instance costs exactly one S3 PutObject and one DynamoDB
TransactWriteItems.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_keys import patient_pk, patient_sk, study_pk
from shared.adapters.s3_blobs import S3BlobStore
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom.validate import validate
from shared.dicomweb.multipart import Part
from shared.ports import AddOutcome
from shared.services.store import StoreRequest, _record, store
from tests.fakes import FakeIndex
from tests.support import dicom_files

TABLE, BUCKET = "index-table", "dicom-bucket"


@pytest.fixture
def aws(mocked_aws: None) -> dict[str, Any]:
    stack = local_template.load()
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, **stack.tables["IndexTable"].create_args)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return {"dynamodb": dynamodb, "s3": s3}


@pytest.fixture(params=["fake", "dynamodb", "sqlite"])
def index(request: pytest.FixtureRequest, aws: dict[str, Any], tmp_path: Path):
    if request.param == "fake":
        return FakeIndex()
    if request.param == "sqlite":
        return SqliteIndex(tmp_path / "index.sqlite3")
    return DynamoInstanceIndex(aws["dynamodb"], TABLE, sleep=lambda _: None)


def record(data: bytes):
    from datetime import UTC, datetime

    return _record(validate(data), "AE1", datetime.now(UTC))


def changed(data: bytes, **values: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_new_then_identical_then_different(index) -> None:
    data = dicom_files.with_new_uids()
    assert index.add(record(data)) is AddOutcome.STORED
    assert index.add(record(data)) is AddOutcome.ALREADY_STORED
    assert index.add(record(changed(data, SeriesDescription="x"))) is AddOutcome.DIFFERENT_CONTENT


def test_patient_mismatch_within_a_study(index) -> None:
    first = dicom_files.with_new_uids(study="1.2.3.77", patient_id="A")
    other = dicom_files.with_new_uids(study="1.2.3.77", patient_id="B")
    assert index.add(record(first)) is AddOutcome.STORED
    assert index.add(record(other)) is AddOutcome.PATIENT_MISMATCH


def test_dynamodb_counters_and_aggregates(aws: dict[str, Any]) -> None:
    index = DynamoInstanceIndex(aws["dynamodb"], TABLE, sleep=lambda _: None)
    study = "1.2.826.0.1.3680043.8.498.42"
    series = ["1.2.826.0.1.3680043.8.498.42.1", "1.2.826.0.1.3680043.8.498.42.2"]
    datas = [
        dicom_files.with_new_uids(study=study, series=series[i % 2], patient_id="P42", Modality=m)
        for i, m in enumerate(["CT", "MR", "CT", "MR", "CT"])
    ]
    for data in datas + datas[:2]:  # two repeats must not count
        index.add(record(data))
    item = aws["dynamodb"].get_item(
        TableName=TABLE, Key={"PK": {"S": study_pk(study)}, "SK": {"S": "STUDY"}}
    )["Item"]
    assert item["n_instances"] == {"N": "5"}
    assert len(item["series_keys"]["SS"]) == 2
    assert set(item["modalities"]["SS"]) == {"CT", "MR"}
    assert item["pid"] == {"S": "P42"}
    series_item = aws["dynamodb"].get_item(
        TableName=TABLE, Key={"PK": {"S": study_pk(study)}, "SK": {"S": f"SERIES#{series[0]}"}}
    )["Item"]
    assert series_item["n_instances"] == {"N": "3"}
    patient = aws["dynamodb"].get_item(
        TableName=TABLE, Key={"PK": {"S": patient_pk("P42")}, "SK": {"S": patient_sk("")}}
    )["Item"]
    assert patient["n_instances"] == {"N": "5"}
    assert len(patient["study_keys"]["SS"]) == 1 and len(patient["series_keys"]["SS"]) == 2


def test_transaction_conflicts_are_retried(aws: dict[str, Any]) -> None:
    """Real DynamoDB cancels concurrent transactions on one item; moto never does."""
    from botocore.exceptions import ClientError

    real = aws["dynamodb"]
    conflicts = {"left": 3}

    class Conflicting:
        def transact_write_items(self, **kwargs: Any) -> Any:
            if conflicts["left"]:
                conflicts["left"] -= 1
                reasons = [{"Code": "None"}, {"Code": "None"}, {"Code": "TransactionConflict"}]
                raise ClientError(
                    {
                        "Error": {"Code": "TransactionCanceledException"},
                        "CancellationReasons": reasons,
                    },
                    "TransactWriteItems",
                )
            return real.transact_write_items(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    sleeps: list[float] = []
    index = DynamoInstanceIndex(Conflicting(), TABLE, sleep=sleeps.append)
    assert index.add(record(dicom_files.with_new_uids())) is AddOutcome.STORED
    assert len(sleeps) == 3


def test_persistent_conflict_is_storage_unavailable(aws: dict[str, Any]) -> None:
    from botocore.exceptions import ClientError

    from shared.errors import StorageUnavailable

    class AlwaysBusy:
        def get_item(self, **kwargs: Any) -> Any:
            return {}  # the study is new

        def transact_write_items(self, **kwargs: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "TransactionInProgressException"}}, "TransactWriteItems"
            )

    index = DynamoInstanceIndex(AlwaysBusy(), TABLE, sleep=lambda _: None)
    with pytest.raises(StorageUnavailable):
        index.add(record(dicom_files.with_new_uids()))


def test_one_put_one_transaction_and_three_reads_per_new_instance(aws: dict[str, Any]) -> None:
    """The read learns what the study's substring index holds; a new study's trigrams
    are then counted, one ADD each, outside the transaction. S3 is read twice, GET-class:
    the object once indexed (a DELETE's sweep may have removed an identical copy: decision
    0007) and its rejection record, absent (IOCM: decision 0009)."""
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", maxsplit=1)[-1]] += 1

    for client in (aws["s3"], aws["dynamodb"]):
        client.meta.events.register("before-call.*.*", count)
    blobs = S3BlobStore(aws["s3"], BUCKET)
    index = DynamoInstanceIndex(aws["dynamodb"], TABLE)
    n = 5
    parts = [
        Part(dicom_files.with_new_uids(), {"content-type": "application/dicom"}) for _ in range(n)
    ]
    result = store(
        StoreRequest(parts, "AE1", "https://h/o3-dpacs-wado"), objects=blobs, index=index
    )
    assert result.status == 200
    grams = calls.pop("UpdateItem")
    assert calls == Counter(
        {
            "PutObject": n,
            "TransactWriteItems": n,
            "GetItem": n,
            "HeadObject": n,
            "GetObject": n,
        }
    )
    counts = aws["dynamodb"].query(
        TableName=TABLE,
        IndexName="ByList",
        KeyConditionExpression="lst = :l",
        ExpressionAttributeValues={":l": {"S": "STUDY"}},
    )["Count"]
    assert counts == n  # every instance is a new study, with its trigrams counted
    assert grams >= n
    stored = aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"]
    assert stored == n


def test_a_record_over_the_item_limit_is_rejected_not_retried(index) -> None:
    """DynamoDB refuses items over 400 KB: a permanent refusal, not a retryable outage."""
    import dataclasses

    huge = dataclasses.replace(
        record(dicom_files.with_new_uids()), instance_json='{"x":"' + "a" * 420_000 + '"}'
    )
    assert index.add(huge) is AddOutcome.REJECTED


def test_references_names_the_object_of_an_entry(index) -> None:
    rec = record(dicom_files.with_new_uids())
    assert index.references(rec.sop_instance_uid, rec.blob_key) is False
    index.add(rec)
    assert index.references(rec.sop_instance_uid, rec.blob_key) is True
    assert index.references(rec.sop_instance_uid, rec.blob_key + "x") is False
