"""S3 + DynamoDB on moto, in-process, for benchmarks that count what a change costs on AWS:
an empty archive (the template's index table, a bucket) and a counter of the AWS calls and
DynamoDB items written through its clients (botocore's parameter hooks)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counted:
    """AWS calls by operation, and DynamoDB items written by kind (each TransactWriteItems'
    items, single and batch writes)."""

    calls: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)

    def hook(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        """botocore's ``provide-client-params`` hook: count one call."""
        operation = event_name.rsplit(".", maxsplit=1)[-1]
        self.calls[operation] += 1
        if operation == "TransactWriteItems":
            for item in params.get("TransactItems", []):
                self.items[next(iter(item))] += 1
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self.items[operation] += 1
        elif operation == "BatchWriteItem":
            self.items["BatchWrite"] += sum(len(v) for v in params["RequestItems"].values())

    def written(self) -> int:
        """Items written (condition checks are reads)."""
        return sum(v for k, v in self.items.items() if k != "ConditionCheck")

    def per(self, n: int, digits: int = 3) -> dict[str, float]:
        """Calls per instance of an ``n``-instance change."""
        return {op: round(c / n, digits) for op, c in sorted(self.calls.items())}


@dataclass
class MotoArchive:
    """The ports of an empty archive on moto, and its clients' counter."""

    objects: Any
    index: Any
    catalog: Callable[[], Any]
    counted: Counted

    def count(self) -> Counted:
        """Start counting afresh (what was stored to set up is not counted)."""
        self.counted.calls.clear()
        self.counted.items.clear()
        return self.counted


@contextmanager
def moto_archive(name: str) -> Iterator[MotoArchive]:
    """An empty archive (table and bucket named ``name``) on moto while the context lasts."""
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared.adapters.dynamo_index import DynamoInstanceIndex
    from shared.adapters.dynamo_search import DynamoSearch
    from shared.adapters.s3_blobs import S3BlobStore

    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        os.environ.pop(variable, None)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        dynamodb.create_table(
            TableName=name, **local_template.load().tables["IndexTable"].create_args
        )
        s3.create_bucket(Bucket=name)
        counted = Counted()
        for client in (dynamodb, s3):
            client.meta.events.register("provide-client-params.*.*", counted.hook)
        yield MotoArchive(
            S3BlobStore(s3, name),
            DynamoInstanceIndex(dynamodb, name, sleep=lambda _: None),
            lambda: DynamoSearch(dynamodb, name),
            counted,
        )
