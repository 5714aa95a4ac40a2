"""DELETE of a large study (issue 22, item 8): a study of ``n`` instances (default 1,000,
in four series) deleted whole with ``shared.services.lifecycle.delete``, restore window on.

* files + SQLite (the embedded backend): seconds for the DELETE (index transaction and
  sweep), ``n`` instances;
* S3 + DynamoDB on moto (in-process), ``moto_n`` instances (moto slows with the table, and
  what is counted is per instance): the DELETE's seconds (moto's, not AWS's), its DynamoDB
  items written per instance (each TransactWriteItems' items and each single or batch
  write, counted with botocore's event hooks) and its AWS calls per instance.

The study's instances share one file's bytes under their own UIDs: a whole-study DELETE
never reads them back.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.dicom.validate import validate
from shared.services import lifecycle
from shared.services.lifecycle import Target
from shared.services.store import record_of
from tests.support import dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.8800"
#: Targets (2-core development machine): a 1,000-instance study deletes in one request's
#: 22 s with room to spare on SQLite, and each instance writes a bounded number of items.
TARGET_SQLITE_S = 2.0
TARGET_ITEMS_PER_INSTANCE = 8


def _fill(objects: Any, index: Any, n: int) -> None:
    data = dicom_files.with_new_uids(study=STUDY, series=f"{STUDY}.1", patient_id="BENCH-DEL")
    base = record_of(validate(data), "BENCH", datetime.now(UTC))
    for number in range(n):
        series = f"{STUDY}.{number % 4 + 1}"
        sop = f"{series}.{number + 1}"
        key = f"dicom/{STUDY}/{series}/{sop}.{base.sha256}.dcm"
        objects.put(key, data)
        index.add(
            replace(
                base,
                series_uid=series,
                sop_instance_uid=sop,
                blob_key=key,
                instance_number=str(number + 1),
            )
        )


def sqlite(n: int) -> dict[str, Any]:
    """The DELETE of an n-instance study on files + SQLite, timed."""
    from shared.adapters.file_blobs import FileBlobStore
    from shared.adapters.sqlite_catalog import SqliteCatalog
    from shared.adapters.sqlite_index import SqliteIndex

    with tempfile.TemporaryDirectory() as tmp:
        objects = FileBlobStore(Path(tmp) / "objects")
        index = SqliteIndex(Path(tmp) / "index.sqlite3")
        _fill(objects, index, n)
        started = time.perf_counter()
        deletion = lifecycle.delete(
            Target(STUDY),
            objects=objects,
            index=index,
            retention_days=30,
            catalog=SqliteCatalog(Path(tmp) / "index.sqlite3"),
        )
        deleted_s = time.perf_counter() - started
        if not deletion.done or len(deletion.removed) != n:
            raise RuntimeError(f"the DELETE did not finish: {deletion}")
    return {
        "instances": n,
        "delete_s": round(deleted_s, 3),
        "delete_target_s": TARGET_SQLITE_S,
        "delete_met": deleted_s <= TARGET_SQLITE_S,
    }


def _moto(n: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared.adapters.dynamo_index import DynamoInstanceIndex
    from shared.adapters.dynamo_search import DynamoSearch
    from shared.adapters.s3_blobs import S3BlobStore

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        dynamodb.create_table(
            TableName="bench-delete", **local_template.load().tables["IndexTable"].create_args
        )
        s3.create_bucket(Bucket="bench-delete")
        objects = S3BlobStore(s3, "bench-delete")
        index = DynamoInstanceIndex(dynamodb, "bench-delete", sleep=lambda _: None)
        _fill(objects, index, n)
        calls: Counter[str] = Counter()
        items: Counter[str] = Counter()

        def count(event_name: str, params: dict[str, Any], **_: Any) -> None:
            operation = event_name.rsplit(".", maxsplit=1)[-1]
            calls[operation] += 1
            if operation == "TransactWriteItems":
                for item in params.get("TransactItems", []):
                    items[next(iter(item))] += 1
            elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
                items[operation] += 1
            elif operation == "BatchWriteItem":
                items["BatchWrite"] += sum(len(v) for v in params["RequestItems"].values())

        for client in (dynamodb, s3):
            client.meta.events.register("provide-client-params.*.*", count)
        started = time.perf_counter()
        deletion = lifecycle.delete(
            Target(STUDY),
            objects=objects,
            index=index,
            retention_days=30,
            catalog=DynamoSearch(dynamodb, "bench-delete"),
        )
        deleted_s = time.perf_counter() - started
        if not deletion.done or len(deletion.removed) != n:
            raise RuntimeError(f"the DELETE did not finish: {deletion}")
    written = sum(v for k, v in items.items() if k != "ConditionCheck")
    return {
        "instances": n,
        "delete_s_moto": round(deleted_s, 3),
        "items_written_per_instance": round(written / n, 3),
        "items_target_per_instance": TARGET_ITEMS_PER_INSTANCE,
        "items_met": written / n <= TARGET_ITEMS_PER_INSTANCE,
        "items_by_kind": dict(sorted(items.items())),
        "calls_per_instance": {op: round(c / n, 3) for op, c in sorted(calls.items())},
    }


def run(n: int = 1000, moto_n: int = 200) -> dict[str, Any]:
    """Both backends; prints a summary."""
    on_sqlite = sqlite(n)
    moto = _moto(moto_n)
    print("\nDELETE of a whole study (four series), restore window on")
    print(
        f"  files + SQLite, {n} instances: {on_sqlite['delete_s']:.2f} s"
        f" (target <= {TARGET_SQLITE_S} s)"
    )
    print(
        f"  S3 + DynamoDB (moto), {moto_n} instances: {moto['delete_s_moto']:.2f} s;"
        f" {moto['items_written_per_instance']} items written per instance"
        f" (target <= {TARGET_ITEMS_PER_INSTANCE})"
    )
    print(f"  AWS calls / instance {moto['calls_per_instance']}")
    return {"sqlite": on_sqlite, "moto": moto}
