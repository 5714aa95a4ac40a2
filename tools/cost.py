"""Monthly AWS bill of this archive for a workload, and of AWS HealthImaging for the same.

    dicomweb-cost --studies-per-month 1500 --instances-per-study 20 \\
        --mb-per-instance 1 --reads-per-study 3 --months-kept 84 [--tiering-after-days 30]
    dicomweb-cost --table      # the three reference workloads (README, docs/cost.md)
    dicomweb-cost --prices     # the price list with its sources

The bill is the one of a month in which the archive holds ``months_kept`` months of studies
(the steady state of a retention period). Each operation is priced by the AWS calls its code
path makes (counted below, from shared/adapters and shared/services), its Lambda GB-seconds
(from the benchmark medians in README.md plus an assumed AWS round-trip time, since no AWS
account measured them) and the list prices of tools/prices.py (us-east-1, no free tiers).
Every assumption is a named constant; docs/cost.md explains them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from tools import prices as p

MB = 1024 * 1024
GB = 1024 * MB
KB = 1024
SECONDS_PER_MONTH = 730 * 3600
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 30.4

# ------------------------------------------------------------------ counted from the code
#: One new instance = 1 PutObject (services/store.py) + 1 TransactWriteItems of 5 items
#: (adapters/dynamo_index.py: guard put, instance put, series, study and patient updates).
#: Transactional writes cost 2 units per KB of each item; measured item sizes for a 512x512
#: CT slice (693_UNCI): guard 0.7 KB, instance 2.7 KB (DICOM JSON of the levels and the
#: packed metadata), series 0.9 KB, study 0.7 KB + its sets, patient 0.3 KB -> 1+3+1+2+1 KB.
STOW_ITEM_KB = (1, 3, 1, 2, 1)
STOW_WRITE_UNITS = 2 * sum(STOW_ITEM_KB)
#: Sparse KEYS_ONLY GSI entries written once per study (ByPatientId, ByAccession, ByList,
#: ByPatientName, ByDeidentifiedUid), per series (ByModality, BySeriesUid,
#: ByDeidentifiedUid), per patient (ByList, ByPatientName) and per instance
#: (ByDeidentifiedUid: the read-deidentified view); counter updates change no key, so later
#: instances write no other GSI entry. The ``duid`` attribute adds ~50 bytes to the
#: instance, series and study items: no item of STOW_ITEM_KB crosses a KB for it.
GSI_WRITES_PER_STUDY = 5 + 2
GSI_WRITES_PER_SERIES = 3
GSI_WRITES_PER_INSTANCE = 1
#: The substring index, once per new study: one posting per distinct trigram of
#: its text, in its first transaction (items under 1 KB: 2 units each), and one UpdateItem
#: of each trigram's count (1 unit). Trigrams per study: 52, measured on the synthetic
#: archive of ``python -m bench --only qido-scale`` (``dynamo_postings``: 52.2 per study).
#: Every instance first reads its study item (one consistent GetItem, item under 4 KB).
SUBSTRING_TRIGRAMS_PER_STUDY = 52
#: Bytes of those postings per study, DynamoDB's 100-byte item overhead included (measured
#: the same way: 208 bytes each; the count items are shared by every study, negligible).
SUBSTRING_BYTES_PER_STUDY = 52 * 208
SUBSTRING_WRITE_UNITS_PER_STUDY = SUBSTRING_TRIGRAMS_PER_STUDY * (2 + 1)
STOW_READ_UNITS = 1
#: GET-class S3 requests per new instance: a HeadObject of its object once indexed (a
#: DELETE's sweep may have removed an identical copy, decision 0007) and a GetObject of its
#: rejection record, usually absent (IOCM, decision 0009).
STOW_S3_READS = 2
#: Index bytes kept per instance (the items above plus GSI keys, amortised).
INDEX_BYTES_PER_INSTANCE = 5 * KB
#: The largest STOW body (shared/config.py): several small instances share a request.
STOW_BODY_LIMIT_MB = 4.5
#: ... and at most 1,000 parts (shared/dicomweb/multipart.py).
MAX_PARTS = 1000
#: A QIDO search: one Query page of index keys (0.5 read unit, eventually consistent) and a
#: BatchGetItem of the result items (0.5 unit each, items under 4 KB); README: items read
#: ~ 2 x results. QIDO_RESULTS is an assumption (a worklist page).
QIDO_RESULTS = 25
QIDO_READ_UNITS = 0.5 + 0.5 * QIDO_RESULTS
#: A frame, bulk or rendered request: instances_by_uid = 2 BatchGetItem of 1 item (guard,
#: instance), 1 GetObject.
FRAME_READ_UNITS = 1.0
#: Series metadata: 1 Query over the series' instance items (INSTANCE_ITEM_KB each).
INSTANCE_ITEM_KB = 3
#: WADO-RS of a whole study: 1 Query of its instance items, 1 GetObject per instance; over
#: the 4.5 MB inline limit the body is assembled in retrieve/ (CreateMultipartUpload,
#: UploadPart per 8 MiB, CompleteMultipartUpload), kept one day, fetched by 1 presigned GET.
ASSEMBLY_PART_MB = 8
INLINE_LIMIT_MB = 4.5

# ------------------------------------------------------------------ assumptions
#: Series per study (for the per-series metadata requests and GSI entries).
SERIES_PER_STUDY = 4
#: Share of API requests that reach the authorizer (its decision is cached 300 s per key).
AUTHORIZER_SHARE = 0.1
#: Log bytes per request: the function's JSON line and Lambda's START/END/REPORT lines, and
#: the stage's access log line; the authorizer writes less.
LOG_BYTES_PER_REQUEST = 1200 + 300
LOG_BYTES_PER_AUTHORIZATION = 500
#: Log retention (LogRetentionDays, 365 by default), in months; archived logs are billed
#: compressed, counted here uncompressed (an upper bound).
LOG_MONTHS = 12
#: API Gateway detailed metrics (MetricsEnabled): metrics per resource-method in use.
METRICS_PER_METHOD = 5
#: X-Ray's default sampling: 1 request a second, then 5 % (upper bound: an even spread).
XRAY_RESERVOIR = SECONDS_PER_MONTH
XRAY_RATE = 0.05
#: HealthImaging stores one image set per study here, compressed by this ratio (it bills
#: the size after its own lossless transcoding: unknown without a test, 1.0 assumed).
HI_COMPRESSION = 1.0


@dataclass(frozen=True)
class Function:
    """A Lambda function's memory and per-request duration: handler compute (README's
    benchmark medians) plus AWS round trips (assumed: no AWS account measured them)."""

    memory_mb: int
    compute_ms: float
    aws_ms: float

    def gb_seconds(self, requests: float, extra_ms: float = 0.0) -> float:
        """GB-seconds of ``requests`` invocations (plus ``extra_ms`` in total)."""
        seconds = requests * (self.compute_ms + self.aws_ms) / 1000 + extra_ms / 1000
        return self.memory_mb / 1024 * seconds


#: STOW: 5.6 ms of handler compute per 526 KB instance (README, Performance), S3 PutObject
#: and TransactWriteItems assumed 60 ms. Per instance, not per request.
STOW = Function(1024, 5.6, 60)
#: QIDO: 1-15 ms of compute (README, QIDO-RS table), DynamoDB assumed 30 ms.
QIDO = Function(512, 5.0, 30)
#: WADO-RS frame: 11.2 ms (README, Viewer resources), BatchGetItem and GetObject 40 ms.
FRAME = Function(1769, 11.2, 40)
#: WADO-RS series metadata: 24.8 ms for 300 instances (README), Query 30 ms.
METADATA = Function(1769, 24.8 / 300, 30)
#: WADO-RS of a whole study: 42 MB/s through the local stack (README, WADO-RS table).
WADO_MB_PER_S = 42.0
WADO = Function(1769, 0.0, 50)
AUTHORIZER = Function(256, 5.0, 0)


@dataclass(frozen=True)
class Workload:
    """What the archive is asked to do each month."""

    studies_per_month: float
    instances_per_study: float
    mb_per_instance: float
    reads_per_study: float
    months_kept: int
    name: str = ""

    def __post_init__(self) -> None:
        numbers = (
            self.studies_per_month,
            self.instances_per_study,
            self.mb_per_instance,
            self.reads_per_study,
            self.months_kept,
        )
        if any(not math.isfinite(n) or n < 0 for n in numbers):
            raise ValueError("every workload figure must be a finite number >= 0")


ReadAs = Literal["viewer", "retrieve"]


@dataclass(frozen=True)
class Options:
    """How the archive is deployed and read."""

    #: IntelligentTieringAfterDays of the template (0 = S3 Standard only).
    tiering_after_days: int = 0
    #: ``viewer``: a read is what OHIF does (2 searches, metadata per series, one frame
    #: request per instance); ``retrieve``: 1 search and one WADO-RS of the whole study.
    read_as: ReadAs = "viewer"


@dataclass
class Bill:
    """USD per month by line item."""

    lines: dict[str, float] = field(default_factory=dict)

    def add(self, item: str, usd: float) -> None:
        """Add ``usd`` to a line."""
        self.lines[item] = self.lines.get(item, 0.0) + usd

    @property
    def total(self) -> float:
        """The whole monthly bill."""
        return sum(self.lines.values())


# ------------------------------------------------------------------ storage over time


def _s3_rate_per_gb(age_days: float, tiering_after_days: int, last_read_day: float) -> float:
    """S3 price of one GB at ``age_days`` after it was stored: Standard before the
    transition, then Intelligent-Tiering's tier for the days since it was last read."""
    if tiering_after_days <= 0 or age_days < tiering_after_days:
        return p.S3_STANDARD_GB_MONTH.usd
    idle = age_days - max(tiering_after_days, last_read_day)
    if idle < 30:
        return p.S3_IT_FREQUENT_GB_MONTH.usd
    if idle < 90:
        return p.S3_IT_INFREQUENT_GB_MONTH.usd
    return p.S3_IT_ARCHIVE_INSTANT_GB_MONTH.usd


def _cohort_ages(months_kept: int) -> list[float]:
    """Age in days, mid-month, of each monthly cohort the archive holds."""
    return [(m + 0.5) * DAYS_PER_MONTH for m in range(months_kept)]


def _storage(w: Workload, o: Options, bill: Bill) -> None:
    objects_per_month = w.studies_per_month * w.instances_per_study
    gb_per_month = objects_per_month * w.mb_per_instance * MB / GB
    # Reads happen in the study's first month (reporting, comparison): the idle clock of
    # Intelligent-Tiering starts after them.
    last_read = DAYS_PER_MONTH if w.reads_per_study > 0 else 0.0
    tiered_objects = w.mb_per_instance * MB >= p.S3_IT_MIN_OBJECT_BYTES
    for age in _cohort_ages(w.months_kept):
        tiering = o.tiering_after_days if tiered_objects else 0
        rate = _s3_rate_per_gb(age, tiering, last_read)
        bill.add("S3 storage (dicom/)", gb_per_month * rate)
        if tiering and age >= o.tiering_after_days:
            bill.add(
                "S3 Intelligent-Tiering monitoring",
                objects_per_month * p.S3_IT_MONITORING_PER_OBJECT_MONTH.usd,
            )
    if (
        o.tiering_after_days > 0
        and tiered_objects
        and w.months_kept * DAYS_PER_MONTH > (o.tiering_after_days)
    ):
        bill.add("S3 lifecycle transitions", objects_per_month * p.S3_LIFECYCLE_TRANSITION_IT.usd)
    instances_kept = objects_per_month * w.months_kept
    studies_kept = w.studies_per_month * w.months_kept
    index_gb = (
        instances_kept * INDEX_BYTES_PER_INSTANCE + studies_kept * SUBSTRING_BYTES_PER_STUDY
    ) / GB
    bill.add("DynamoDB storage", index_gb * p.DDB_STORAGE_GB_MONTH.usd)
    bill.add("DynamoDB point-in-time recovery", index_gb * p.DDB_PITR_GB_MONTH.usd)


# ------------------------------------------------------------------ operations


@dataclass
class _Usage:
    """AWS usage of a month, before prices."""

    api_requests: dict[str, float] = field(default_factory=dict)  # per resource-method
    gb_seconds: float = 0.0
    lambda_requests: float = 0.0
    write_units: float = 0.0
    read_units: float = 0.0
    s3_puts: float = 0.0
    s3_gets: float = 0.0
    transfer_out_gb: float = 0.0
    retrieve_gb_days: float = 0.0

    def requests(self, method: str, count: float) -> None:
        self.api_requests[method] = self.api_requests.get(method, 0.0) + count
        self.lambda_requests += count


def _stow(w: Workload, u: _Usage) -> None:
    instances = w.studies_per_month * w.instances_per_study
    per_request = MAX_PARTS
    if w.mb_per_instance * MAX_PARTS > STOW_BODY_LIMIT_MB:
        per_request = max(1, math.floor(STOW_BODY_LIMIT_MB / w.mb_per_instance))
    u.requests("POST stowRsListener/studies", math.ceil(instances / per_request))
    u.gb_seconds += STOW.gb_seconds(instances)
    u.s3_puts += instances
    u.s3_gets += instances * STOW_S3_READS
    u.write_units += instances * (STOW_WRITE_UNITS + GSI_WRITES_PER_INSTANCE)
    u.write_units += w.studies_per_month * (
        GSI_WRITES_PER_STUDY
        + GSI_WRITES_PER_SERIES * SERIES_PER_STUDY
        + SUBSTRING_WRITE_UNITS_PER_STUDY
    )
    u.read_units += instances * STOW_READ_UNITS


def _search(u: _Usage, count: float, method: str) -> None:
    u.requests(method, count)
    u.gb_seconds += QIDO.gb_seconds(count)
    u.read_units += count * QIDO_READ_UNITS


def _viewer_reads(w: Workload, u: _Usage) -> None:
    reads = w.studies_per_month * w.reads_per_study
    _search(u, reads, "GET qido/studies")
    _search(u, reads, "GET qido/studies/{s}/series")
    series_requests = reads * SERIES_PER_STUDY
    per_series = w.instances_per_study / SERIES_PER_STUDY
    u.requests("GET rs/.../series/{se}/metadata", series_requests)
    u.gb_seconds += (
        METADATA.memory_mb
        / 1024
        * series_requests
        * (METADATA.aws_ms + METADATA.compute_ms * per_series)
        / 1000
    )
    u.read_units += series_requests * 0.5 * math.ceil(per_series * INSTANCE_ITEM_KB / 4)
    frames = reads * w.instances_per_study
    u.requests("GET rs/.../frames/{f}", frames)
    u.gb_seconds += FRAME.gb_seconds(frames)
    u.read_units += frames * FRAME_READ_UNITS
    u.s3_gets += frames
    u.transfer_out_gb += frames * w.mb_per_instance * MB / GB


def _study_retrieves(w: Workload, u: _Usage) -> None:
    reads = w.studies_per_month * w.reads_per_study
    _search(u, reads, "GET qido/studies")
    study_mb = w.instances_per_study * w.mb_per_instance
    u.requests("GET rs/studies/{s}", reads)
    u.gb_seconds += WADO.gb_seconds(reads, extra_ms=reads * study_mb / WADO_MB_PER_S * 1000)
    u.read_units += reads * 0.5 * math.ceil(w.instances_per_study * INSTANCE_ITEM_KB / 4)
    u.s3_gets += reads * w.instances_per_study
    if study_mb > INLINE_LIMIT_MB:
        u.s3_puts += reads * (2 + math.ceil(study_mb / ASSEMBLY_PART_MB))
        u.s3_gets += reads  # the client's presigned GET
        u.retrieve_gb_days += reads * study_mb * MB / GB  # kept one day (lifecycle rule)
    u.transfer_out_gb += reads * study_mb * MB / GB


def _observability(u: _Usage, bill: Bill) -> None:
    requests = sum(u.api_requests.values())
    authorizations = requests * AUTHORIZER_SHARE
    u.lambda_requests += authorizations
    u.gb_seconds += AUTHORIZER.gb_seconds(authorizations)
    bill.add("Secrets Manager API calls", authorizations * p.SECRET_API_CALL.usd)
    traced = min(requests, XRAY_RESERVOIR) + XRAY_RATE * max(0.0, requests - XRAY_RESERVOIR)
    bill.add("X-Ray traces", traced * p.XRAY_TRACE_RECORDED.usd)
    log_gb = (requests * LOG_BYTES_PER_REQUEST + authorizations * LOG_BYTES_PER_AUTHORIZATION) / GB
    bill.add("CloudWatch Logs ingestion", log_gb * p.CW_LOGS_INGEST_GB.usd)
    bill.add("CloudWatch Logs storage", log_gb * LOG_MONTHS * p.CW_LOGS_STORE_GB_MONTH.usd)
    # Detailed metrics of a method are billed for the hours it served a request (Poisson
    # arrivals spread over the month).
    metric_months = sum(
        METRICS_PER_METHOD * (1 - math.exp(-count / HOURS_PER_MONTH))
        for count in u.api_requests.values()
    )
    bill.add("API Gateway detailed metrics", metric_months * p.CW_METRIC_MONTH.usd)


def serverless(w: Workload, o: Options | None = None) -> Bill:
    """This archive's monthly bill for the workload."""
    o = o or Options()
    bill = Bill()
    bill.add("Secrets Manager secrets (2)", 2 * p.SECRET_MONTH.usd)  # the fixed cost
    _storage(w, o, bill)
    u = _Usage()
    _stow(w, u)
    (_viewer_reads if o.read_as == "viewer" else _study_retrieves)(w, u)
    _observability(u, bill)
    bill.add("API Gateway requests", sum(u.api_requests.values()) * p.APIGW_REST_REQUEST.usd)
    bill.add("Lambda requests", u.lambda_requests * p.LAMBDA_REQUEST.usd)
    bill.add("Lambda GB-seconds", u.gb_seconds * p.LAMBDA_ARM_GB_SECOND.usd)
    bill.add("DynamoDB writes", u.write_units * p.DDB_WRITE_UNIT.usd)
    bill.add("DynamoDB reads", u.read_units * p.DDB_READ_UNIT.usd)
    bill.add("S3 requests", u.s3_puts * p.S3_PUT.usd + u.s3_gets * p.S3_GET.usd)
    bill.add(
        "S3 storage (retrieve/, one day)",
        u.retrieve_gb_days / DAYS_PER_MONTH * p.S3_STANDARD_GB_MONTH.usd,
    )
    bill.add("Data transfer out", u.transfer_out_gb * p.DATA_TRANSFER_OUT_GB.usd)
    return bill


def healthimaging(w: Workload, o: Options | None = None) -> Bill:
    """AWS HealthImaging's monthly bill for the same workload (prices: tools/prices.py).

    One image set per study, billed at least 5 MB; imports (and STOW-RS) free; a study is
    in Frequent Access for its first month (imported and read then), in Archive Instant
    Access after 30 days untouched. A viewer read: 2 searches, 1 metadata call, 1 frame call
    per instance; a study retrieve: 1 search and 1 call per instance. Data transfer out is
    assumed priced as elsewhere in AWS; the structured metadata storage is not counted (its
    price could not be verified)."""
    o = o or Options()
    bill = Bill()
    study_bytes = w.instances_per_study * w.mb_per_instance * MB / HI_COMPRESSION
    billed_gb = max(study_bytes, p.HI_MIN_IMAGE_SET_BYTES) / GB if w.instances_per_study else 0.0
    monthly_gb = w.studies_per_month * billed_gb
    for month in range(w.months_kept):
        rate = p.HI_FREQUENT_GB_MONTH if month == 0 else p.HI_ARCHIVE_INSTANT_GB_MONTH
        bill.add("HealthImaging storage", monthly_gb * rate.usd)
    reads = w.studies_per_month * w.reads_per_study
    if o.read_as == "viewer":
        calls = reads * (2 + 1 + w.instances_per_study)
    else:
        calls = reads * (1 + w.instances_per_study)
    bill.add("HealthImaging API calls", calls * p.HI_API_CALL.usd)
    read_gb = reads * w.instances_per_study * w.mb_per_instance * MB / GB
    bill.add("Data transfer out", read_gb * p.DATA_TRANSFER_OUT_GB.usd)
    return bill


# ------------------------------------------------------------------ reference workloads

SMALL_CLINIC = Workload(1_500, 20, 1.0, 2, 84, "small clinic")
HOSPITAL = Workload(15_000, 150, 0.5, 3, 84, "mid-size hospital")
RESEARCH = Workload(2_000, 500, 0.5, 0.2, 120, "research archive")
REFERENCE = (SMALL_CLINIC, HOSPITAL, RESEARCH)


def _money(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 100 else f"${usd:,.2f}"


def reference_table() -> str:
    """The README/docs table: the three workloads, ours with and without tiering, and
    HealthImaging's."""
    rows = [
        "| Workload | Studies/month x instances x MB, reads/study, months kept | Stored"
        " | This archive | with Intelligent-Tiering after 30 days | AWS HealthImaging |",
        "|---|---|---|---|---|---|",
    ]
    for w in REFERENCE:
        stored_tb = w.studies_per_month * w.instances_per_study * w.mb_per_instance
        stored_tb *= w.months_kept / 1024 / 1024
        ours = serverless(w).total
        tiered = serverless(w, Options(tiering_after_days=30)).total
        theirs = healthimaging(w).total
        rows.append(
            f"| {w.name} | {w.studies_per_month:,.0f} x {w.instances_per_study:,.0f} x"
            f" {w.mb_per_instance:g} MB, {w.reads_per_study:g}, {w.months_kept}"
            f" | {stored_tb:,.1f} TB | {_money(ours)} | {_money(tiered)} | {_money(theirs)} |"
        )
    return "\n".join(rows)


def _lines(bill: Bill) -> str:
    width = max((len(k) for k in bill.lines), default=10)
    out = [f"  {k:<{width}}  {_money(v):>12}" for k, v in bill.lines.items() if v >= 0.005]
    out.append(f"  {'total':<{width}}  {_money(bill.total):>12}")
    return "\n".join(out)


def _price_table() -> str:
    rows = [f"Prices: {p.REGION}, USD, checked {p.CHECKED} (tools/prices.py)", ""]
    for name, price in p.table():
        rows.append(f"{name:36} {price.usd:<14.10g} per {price.unit} [{price.seen}] {price.source}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="dicomweb-cost", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--studies-per-month", type=float)
    parser.add_argument("--instances-per-study", type=float)
    parser.add_argument("--mb-per-instance", type=float)
    parser.add_argument("--reads-per-study", type=float)
    parser.add_argument("--months-kept", type=int)
    parser.add_argument("--tiering-after-days", type=int, default=0)
    parser.add_argument("--read-as", choices=["viewer", "retrieve"], default="viewer")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--table", action="store_true", help="the three reference workloads")
    parser.add_argument("--prices", action="store_true", help="the price list and its sources")
    args = parser.parse_args(argv)
    if args.prices:
        print(_price_table())
        return 0
    if args.table:
        print(reference_table())
        return 0
    figures = [
        args.studies_per_month,
        args.instances_per_study,
        args.mb_per_instance,
        args.reads_per_study,
        args.months_kept,
    ]
    if any(f is None for f in figures):
        parser.error("give the five workload figures, or --table, or --prices")
    workload = Workload(*figures)
    options = Options(args.tiering_after_days, args.read_as)
    ours, theirs = serverless(workload, options), healthimaging(workload, options)
    if args.json:
        document = {
            "workload": asdict(workload),
            "options": asdict(options),
            "prices_checked": p.CHECKED,
            "region": p.REGION,
            "serverless": {**ours.lines, "total": ours.total},
            "healthimaging": {**theirs.lines, "total": theirs.total},
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"This archive, USD per month ({p.REGION}, prices of {p.CHECKED}):")
    print(_lines(ours))
    print("AWS HealthImaging, same workload:")
    print(_lines(theirs))
    return 0


__all__ = ["Bill", "Options", "Workload", "healthimaging", "replace", "serverless"]

if __name__ == "__main__":
    sys.exit(main())
