"""STOW-RS of a 526 KB CT slice (pydicom-data 693_UNCI.dcm) with fresh UIDs per instance.

* in-process: the STOW Lambda handler called with API Gateway events, storage on moto
  (in-process mock); handler time is split into storage calls and the rest (compute);
* through the local stack: HTTP POST per instance (emulator, authorizer, handler, moto
  server), latency seen by the client;
* AWS calls per instance counted with botocore's event hooks.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files
from tests.support.handlers import Context, load, rest_event

SOURCE = "693_UNCI.dcm"
RESOURCE = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies"


def _instances(n: int) -> list[bytes]:
    """``n`` instances of one study (four series): what a modality sends."""
    study = "1.2.826.0.1.3680043.8.498.777"
    return [
        dicom_files.with_new_uids(SOURCE, study=study, series=f"{study}.{i % 4}") for i in range(n)
    ]


def _new_studies(n: int) -> list[bytes]:
    """``n`` instances, each the first of a study of its own (the index's costliest write)."""
    return [dicom_files.with_new_uids(SOURCE) for _ in range(n)]


def _event(data: bytes) -> dict[str, Any]:
    boundary = new_boundary()
    return rest_event(
        "POST",
        RESOURCE,
        "/o3-dpacs-wado/stowRsListener/BENCH/studies",
        body=build_related([(data, "application/dicom")], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        path_parameters={"CALLING_AET": "BENCH"},
    )


class Timed:
    """Wraps an adapter and adds the time spent in its methods to a shared total."""

    def __init__(self, inner: Any, total: list[float]) -> None:
        self._inner = inner
        self._total = total

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._inner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._total[0] += time.perf_counter() - started

        return timed


def in_process(datas: list[bytes]) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared import bootstrap, config

    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto's dummy credentials
        DICOM_BUCKET="bench-bucket",
        INDEX_TABLE="bench-table",
        POWERTOOLS_SERVICE_NAME="bench",
        LOG_LEVEL="WARNING",
    )
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(name, None)
    config.settings.cache_clear()
    with mock_aws():
        stack = local_template.load()
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(TableName="bench-table", **stack.tables["IndexTable"].create_args)
        boto3.client("s3").create_bucket(Bucket="bench-bucket")
        calls: Counter[str] = Counter()
        storage = [0.0]
        real = bootstrap.build(config.settings())
        blobs, index = real.objects, real.index
        for client in (blobs._client, index._client):  # type: ignore[attr-defined]
            client.meta.events.register(
                "before-call.*.*", lambda event_name, **_: calls.update([event_name.split(".")[-1]])
            )
        timed = bootstrap.build(
            config.settings(), objects=Timed(blobs, storage), index=Timed(index, storage)
        )
        module = load("stow")
        module.archive.set(timed)
        events = [_event(d) for d in datas]
        module.lambda_handler(_event(dicom_files.with_new_uids(SOURCE)), Context())  # warm-up
        calls.clear()
        totals, computes = [], []
        for event in events:
            storage[0] = 0.0
            started = time.perf_counter()
            response = module.lambda_handler(event, Context())
            elapsed = time.perf_counter() - started
            if response["statusCode"] != 200:
                raise RuntimeError(f"STOW failed: {response['body']}")
            totals.append(elapsed * 1000)
            computes.append((elapsed - storage[0]) * 1000)
    n = len(events)
    return {
        "instances": n,
        "handler_ms_median": round(statistics.median(totals), 2),
        "compute_ms_median": round(statistics.median(computes), 2),
        "compute_ms_p90": round(statistics.quantiles(computes, n=10)[-1], 2),
        "calls_per_instance": {op: round(c / n, 3) for op, c in sorted(calls.items())},
    }


def through_local_stack(datas: list[bytes]) -> dict[str, Any]:
    from local.stack import LocalStack

    with tempfile.TemporaryDirectory() as work, LocalStack(port=0, data_dir=Path(work)) as stack:
        url = f"{stack.base_url}/stowRsListener/BENCH/studies"
        session = requests.Session()
        session.headers["Authorization"] = stack.api_key
        latencies = []
        for data in datas:
            boundary = new_boundary()
            body = build_related([(data, "application/dicom")], boundary)
            headers = {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            }
            started = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"STOW failed: {response.text}")
    return {
        "instances": len(datas),
        "request_ms_median": round(statistics.median(latencies), 2),
        "request_ms_p90": round(statistics.quantiles(latencies, n=10)[-1], 2),
    }


def run(n: int) -> dict[str, Any]:
    """Both measurements on the same instances (fresh UIDs for each run)."""
    size = len(dicom_files.data(SOURCE))
    local = through_local_stack(_instances(n))
    inproc = in_process(_instances(n))
    firsts = in_process(_new_studies(max(10, n // 4)))
    print(f"\nSTOW-RS of {SOURCE} ({size:,} bytes), {n} instances, fresh UIDs each")
    print(f"  in-process handler   median {inproc['handler_ms_median']:7.2f} ms")
    print(
        f"  compute (no storage) median {inproc['compute_ms_median']:7.2f} ms"
        f"  p90 {inproc['compute_ms_p90']:.2f} ms  (target <= 15 ms)"
    )
    print(f"  AWS calls / instance  {inproc['calls_per_instance']}")
    print(f"  ... each a new study  {firsts['calls_per_instance']}")
    print(
        f"  local stack HTTP     median {local['request_ms_median']:7.2f} ms"
        f"  p90 {local['request_ms_p90']:.2f} ms"
    )
    return {
        "file": SOURCE,
        "bytes": size,
        "in_process": inproc,
        "in_process_new_studies": firsts,
        "local_stack": local,
    }
