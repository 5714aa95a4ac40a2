"""The restore window in the template: deleted/ purged after DeletedRetentionDays (the local
stack's object server applying the same rule), and the Lifecycle function reaching only the
prefixes it moves objects between."""

from __future__ import annotations

from typing import Any

import pytest

from local import template as local_template
from shared.services import lifecycle, operations
from tests.template.test_template import BUCKETS, FUNCTIONS, TPL


def _rules() -> list[Any]:
    (bucket,) = BUCKETS.values()
    rules: list[Any] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    return rules


def test_deleted_objects_are_purged_after_the_restore_window() -> None:
    declared = TPL["Parameters"]["DeletedRetentionDays"]
    assert (declared["Type"], declared["Default"], declared["MinValue"]) == ("Number", 30, 0)
    assert "0 = purged at once" in declared["Description"]
    assert TPL["Conditions"]["KeepDeleted"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DeletedRetentionDays"}, 0]}]
    }
    (rule,) = [
        r["Fn::If"][1] for r in _rules() if "Fn::If" in r and r["Fn::If"][0] == "KeepDeleted"
    ]
    assert rule["Prefix"] == lifecycle.DELETED_PREFIX
    assert rule["ExpirationInDays"] == {"Ref": "DeletedRetentionDays"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}  # versioned bucket
    # Every function reads it: DELETE, and rejection notes on each store path.
    assert TPL["Globals"]["Function"]["Environment"]["Variables"]["DELETED_RETENTION_DAYS"] == {
        "Ref": "DeletedRetentionDays"
    }


def test_the_local_object_server_applies_the_same_window() -> None:
    (bucket,) = local_template.load().buckets.values()
    assert (lifecycle.DELETED_PREFIX, 30) in bucket.expirations
    (bucket,) = local_template.load(
        parameter_overrides={"DeletedRetentionDays": "0"}
    ).buckets.values()
    assert not [p for p, _ in bucket.expirations if p == lifecycle.DELETED_PREFIX]


def test_the_lifecycle_function_reaches_only_its_prefixes() -> None:
    statements = FUNCTIONS["LifecycleFunction"]["Properties"]["Policies"][0]["Statement"]
    objects = next(s for s in statements if "s3:DeleteObject" in s["Action"])
    reached = sorted(r["Fn::Sub"].split("/", 1)[1] for r in objects["Resource"])
    assert reached == [
        "deleted/*",
        "dicom/*",
        "jobs/*",
        "operations/*",
        "rejections/*",
        "versions/*",
    ]
    listing = next(s for s in statements if s["Action"] == ["s3:ListBucket"])
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [
        "dicom/*",
        "deleted/*",
        "jobs/*",
        "rejections/*",
        "versions/*",
        "operations/*",
    ]
    for prefix in (
        lifecycle.STORED_PREFIX,
        lifecycle.DELETED_PREFIX,
        lifecycle.JOBS_PREFIX,
        lifecycle.REJECTIONS_PREFIX,
        lifecycle.VERSIONS_PREFIX,
    ):
        assert f"{prefix.split('/', 1)[0]}/*" in reached


@pytest.mark.parametrize("lid", ["StowFunction", "IngestFunction"])
def test_each_store_path_may_hide_what_a_rejection_note_names(lid: str) -> None:
    """STOW and the upload path's ingestion apply rejection notes as DELETE does: they read
    back, move to deleted/, keep job and rejection records, and remove index entries."""
    statements = FUNCTIONS[lid]["Properties"]["Policies"][0]["Statement"]
    objects = next(
        s for s in statements if isinstance(s["Resource"], list) and "s3:GetObject" in s["Action"]
        and any("dicom/" in r["Fn::Sub"] for r in s["Resource"])
    )  # fmt: skip
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(objects["Action"])
    reached = {r["Fn::Sub"].split("/", 1)[1] for r in objects["Resource"]}
    # versions/: a hidden instance's versions (metadata updates) follow it into deleted/.
    assert reached == {"deleted/*", "dicom/*", "jobs/*", "rejections/*", "versions/*"}
    listing = next(s for s in statements if s["Action"] == ["s3:ListBucket"])
    assert {"dicom/*", "jobs/*", "rejections/*", "versions/*"} <= set(
        listing["Condition"]["StringLike"]["s3:prefix"]
    )
    index = next(s for s in statements if "dynamodb:GetItem" in s["Action"])
    assert {"dynamodb:DeleteItem", "dynamodb:Query"} <= set(index["Action"])


@pytest.mark.parametrize("lid", ["LifecycleFunction", "StowFunction", "IngestFunction"])
def test_each_function_that_deletes_reads_the_catalog_as_qido_does(lid: str) -> None:
    """A DELETE, and a rejection note's hiding, reads the catalog (``DynamoSearch``:
    batched gets, the search indexes) to find the study's patient and refresh its parents;
    without these, every DELETE on AWS would fail with AccessDenied (moto and the local
    stack do not check IAM)."""
    statements = FUNCTIONS[lid]["Properties"]["Policies"][0]["Statement"]
    reads = [s for s in statements if "dynamodb:BatchGetItem" in s["Action"]]
    assert reads, "no BatchGetItem"
    resources = [r.get("Fn::Sub", "") for s in reads for r in s["Resource"] if isinstance(r, dict)]
    assert "${IndexTable.Arn}/index/*" in resources
    assert any("dynamodb:Query" in s["Action"] for s in reads)


def test_updates_run_one_at_a_time_woken_by_their_marker() -> None:
    """The Operations function: woken by the marker's S3 event and a schedule, one worker at
    a time by a lease (an item of the index table: PutItem and DeleteItem, no reserved
    concurrency, which a new account cannot give), reaching only the prefixes an update
    writes."""
    props = FUNCTIONS["OperationsFunction"]["Properties"]
    assert props["Timeout"] == 900 and props["Timeout"] < operations.LEASE_S
    events = props["Events"]
    pattern = events["OperationAsked"]["Properties"]["Pattern"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": operations.PENDING_PREFIX}]
    assert events["FinishOperations"]["Type"] == "Schedule"
    statements = props["Policies"][0]["Statement"]
    objects = next(s for s in statements if "s3:DeleteObject" in s["Action"])
    reached = sorted(r["Fn::Sub"].split("/", 1)[1] for r in objects["Resource"])
    assert reached == ["dicom/*", "jobs/operations/*", "operations/*", "versions/*"]
    assert local_template.load().functions["OperationsFunction"].object_created == (
        operations.PENDING_PREFIX,
    )
    table = next(s for s in statements if "dynamodb:PutItem" in s["Action"])
    assert {"dynamodb:PutItem", "dynamodb:DeleteItem"} <= set(table["Action"])
