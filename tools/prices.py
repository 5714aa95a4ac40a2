"""List prices the cost model uses: US East (N. Virginia, us-east-1), USD, no free tiers.

Looked up on 2026-11-27 without a browser, in stored copies of public pages: each price names
where it was seen and how far that source can be trusted (``seen``):

- ``aws``: on an AWS page (pricing page, documentation or whitepaper);
- ``third-party``: quoted by a third-party page (dated where it says), not seen on AWS's own;
- ``unverified``: not found in any stored page this session; the public list price as the
  project knew it. Check these on the pricing page before relying on them.

Prices change: re-check the URLs and update ``CHECKED`` with this table. docs/cost.md shows
the table as the model prints it (``dicomweb-cost --prices``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHECKED = "2026-11-27"
REGION = "us-east-1"

Seen = Literal["aws", "third-party", "unverified"]


@dataclass(frozen=True)
class Price:
    """One list price."""

    usd: float
    unit: str
    source: str
    seen: Seen


S3 = "https://aws.amazon.com/s3/pricing/"
DYNAMODB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
LAMBDA = "https://aws.amazon.com/lambda/pricing/"
APIGW = "https://aws.amazon.com/api-gateway/pricing/"
XRAY = "https://aws.amazon.com/xray/pricing/"
CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
SECRETS = "https://aws.amazon.com/secrets-manager/pricing/"
TRANSFER = "https://aws.amazon.com/ec2/pricing/on-demand/#Data_Transfer"
HEALTHIMAGING = "https://aws.amazon.com/healthimaging/pricing/"

# ---------------------------------------------------------------- S3
S3_STANDARD_GB_MONTH = Price(
    0.023,
    "GB-month (first 50 TB)",
    "https://my.globalxperts.net/?p=5330 (S3 price list)",
    "third-party",
)
S3_IT_FREQUENT_GB_MONTH = Price(
    0.023,
    "GB-month, Intelligent-Tiering Frequent Access",
    S3 + " (as quoted by globalxperts)",
    "third-party",
)
S3_IT_INFREQUENT_GB_MONTH = Price(
    0.0125, "GB-month, Intelligent-Tiering Infrequent Access (30 days unread)", S3, "unverified"
)
S3_IT_ARCHIVE_INSTANT_GB_MONTH = Price(
    0.004, "GB-month, Intelligent-Tiering Archive Instant Access (90 days unread)", S3, "unverified"
)
S3_IT_MONITORING_PER_OBJECT_MONTH = Price(
    0.0025 / 1000,
    "object-month (objects >= 128 KB)",
    "https://my.globalxperts.net/?p=5330",
    "third-party",
)
S3_IT_MIN_OBJECT_BYTES = 128 * 1024  # smaller objects are not monitored nor tiered (AWS S3 page)
S3_LIFECYCLE_TRANSITION_IT = Price(
    0.01 / 1000, "object transitioned into Intelligent-Tiering", S3, "unverified"
)
S3_PUT = Price(0.005 / 1000, "PUT, COPY, POST, LIST request", S3, "unverified")
S3_GET = Price(0.0004 / 1000, "GET request", S3, "unverified")

# ---------------------------------------------------------------- DynamoDB, on demand
DDB_WRITE_UNIT = Price(
    0.625 / 1e6,
    "write request unit",
    "https://airbyte.com/data-engineering-resources/dynamodb-pricing (after the 2024-11 cut)",
    "third-party",
)
DDB_READ_UNIT = Price(0.125 / 1e6, "read request unit", "same as the write unit", "third-party")
DDB_STORAGE_GB_MONTH = Price(
    0.25, "GB-month (Standard table class)", "https://aws.amazon.com/dynamodb/pricing/", "aws"
)
DDB_PITR_GB_MONTH = Price(0.20, "GB-month of continuous backup", DYNAMODB, "unverified")

# ---------------------------------------------------------------- Lambda, arm64
LAMBDA_REQUEST = Price(
    0.20 / 1e6,
    "request",
    "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html",
    "aws",
)
LAMBDA_ARM_GB_SECOND = Price(
    0.0000133334,
    "GB-second, arm64",
    "https://git.mcrn.ar/mariano/lambda_local_runner (docs/lambdas-md/lambda-13-cost.md)",
    "third-party",
)

# ---------------------------------------------------------------- API Gateway, REST
APIGW_REST_REQUEST = Price(
    3.50 / 1e6,
    "REST API request (first 333 million a month)",
    "https://awsforengineers.com/blog/aws-api-gateway-pricing-explained (2025-05-19)",
    "third-party",
)

# ---------------------------------------------------------------- observability
XRAY_TRACE_RECORDED = Price(
    5.00 / 1e6, "trace recorded", "https://aws.amazon.com/de/xray/pricing/", "aws"
)
CW_LOGS_INGEST_GB = Price(0.50, "GB ingested (standard log class)", CLOUDWATCH, "unverified")
CW_LOGS_STORE_GB_MONTH = Price(0.03, "GB-month archived", CLOUDWATCH, "unverified")
CW_METRIC_MONTH = Price(
    0.30,
    "custom or detailed metric-month, prorated by the hour (first 10,000)",
    "https://002-workshop-application-performance-monitoring.huyanh.click/5-optimization",
    "third-party",
)

# ---------------------------------------------------------------- other
SECRET_MONTH = Price(0.40, "secret-month", SECRETS, "unverified")
SECRET_API_CALL = Price(0.05 / 10_000, "API call", SECRETS, "unverified")
DATA_TRANSFER_OUT_GB = Price(
    0.09,
    "GB to the internet (first 10 TB a month)",
    "https://awsforengineers.com/blog/aws-api-gateway-pricing-explained",
    "third-party",
)

# ---------------------------------------------------------------- AWS HealthImaging
# The AWS page's price tables render from tokens the stored copy does not resolve; these
# figures are the ones its worked examples use for us-east-1, as transcribed on 2026-10-07
# by https://github.com/api-evangelist/amazon-healthimaging
# (plans/amazon-healthimaging-plans-pricing.yml). The page's text itself (5 MB minimum per
# image set, 30-day minimum duration, free imports, Archive Instant Access after 30 days
# unread) was seen in the stored copy of the AWS page.
HI_FREQUENT_GB_MONTH = Price(0.105, "GB-month, Frequent Access tier", HEALTHIMAGING, "third-party")
HI_ARCHIVE_INSTANT_GB_MONTH = Price(
    0.006, "GB-month, Archive Instant Access tier (30 days untouched)", HEALTHIMAGING, "third-party"
)
HI_API_CALL = Price(0.005 / 1000, "API call", HEALTHIMAGING, "third-party")
HI_MIN_IMAGE_SET_BYTES = 5 * 1024 * 1024  # "billed at a minimum size of 5 MB" (AWS page)


def table() -> list[tuple[str, Price]]:
    """Every price of this module, by name."""
    return [(name, value) for name, value in globals().items() if isinstance(value, Price)]
