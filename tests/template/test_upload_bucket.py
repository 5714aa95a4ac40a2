"""The bucket's rules for what the upload path writes: retention of quarantine/, results/ and
uploads/ by parameter, and the Uploads and Ingest functions listing only their prefixes."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from shared.services import ingest, uploads
from tests.template.test_template import BUCKETS, FUNCTIONS, TPL

DAY_S = 86400
RETENTION = [
    ("quarantine/", "QuarantineRetentionDays", "ExpireQuarantine", 30),
    ("results/", "UploadResultsRetentionDays", "ExpireUploadResults", 90),
    ("uploads/", "UploadResultsRetentionDays", "ExpireUploadResults", 90),
]
#: Prefixes each function lists, or reads objects under that may be missing (S3 answers such
#: a read 404 only with s3:ListBucket for the object's key as s3:prefix).
LISTED = {
    "UploadsFunction": [
        ingest.RESULTS,
        f"{ingest.UPLOAD_RECORDS}{ingest.OWNERS}0123abcd/",
        f"{ingest.UPLOAD_RECORDS}0123abcd.json",
        f"{ingest.INCOMING}{ingest.UPLOADED}0123abcd",
    ],
    "IngestFunction": [
        ingest.INCOMING,
        f"{ingest.INCOMING}site1/a.dcm",
        f"{ingest.UPLOAD_RECORDS}0123abcd.json",
        f"{ingest.RESULTS}site1/a.dcm.json",
        # As STOW: an object read back once indexed, a rejection record, a hidden
        # instance's objects and job record (shared.services.rejection).
        "dicom/1/2/3.4.dcm",
        "rejections/1/2/3.json",
        "jobs/delete/1/2/3.json",
    ],
}
#: Functions that never list the stored objects.
NOT_LISTING_STORED = ("UploadsFunction",)


def _rules() -> list[Any]:
    (bucket,) = BUCKETS.values()
    rules: list[Any] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    return rules


@pytest.mark.parametrize(("prefix", "parameter", "condition", "default"), RETENTION)
def test_what_the_upload_path_writes_expires_after_its_parameter(
    prefix: str, parameter: str, condition: str, default: int
) -> None:
    declared = TPL["Parameters"][parameter]
    assert (declared["Type"], declared["Default"], declared["MinValue"]) == ("Number", default, 0)
    assert "0 = kept" in declared["Description"]
    assert TPL["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
    (rule,) = [
        r["Fn::If"][1]
        for r in _rules()
        if "Fn::If" in r and r["Fn::If"][0] == condition and r["Fn::If"][1]["Prefix"] == prefix
    ]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": parameter}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}  # versioned bucket


def test_no_upload_record_expires_before_its_upload_could_complete() -> None:
    shortest = min(
        TPL["Parameters"][p]["MinValue"] or 1 for _, p, _, _ in RETENTION
    )  # 0 keeps for ever: the shortest retention is 1 day
    assert shortest * DAY_S >= uploads.UPLOAD_URL_TTL
    (abort,) = [r for r in _rules() if r.get("Id") == "abort-incomplete-multipart-uploads"]
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] * DAY_S >= (
        uploads.UPLOAD_URL_TTL
    )


@pytest.mark.parametrize("lid", sorted(LISTED))
def test_the_upload_functions_list_only_their_prefixes(lid: str) -> None:
    statements = [
        s
        for policy in FUNCTIONS[lid]["Properties"]["Policies"]
        for s in policy["Statement"]
        if "s3:ListBucket" in s["Action"]
    ]
    assert statements, f"{lid} lists nothing"
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert set(statement["Condition"]) == {"StringLike"}, "listing the whole bucket"
        patterns = statement["Condition"]["StringLike"]["s3:prefix"]
        assert all(p.endswith("/*") and p != "/*" for p in patterns), patterns
        for needed in LISTED[lid]:
            assert any(fnmatch.fnmatchcase(needed, p) for p in patterns), (lid, needed)
        if lid in NOT_LISTING_STORED:
            assert not any(fnmatch.fnmatchcase("dicom/1/2/3.dcm", p) for p in patterns)
