"""WADO-RS study retrieval: throughput through the local stack, and the memory it takes to
assemble a study body that is too large to return inline.

* throughput: studies of CT slices (pydicom-data 693_UNCI.dcm, 526 KB, fresh UIDs) stored
  by STOW-RS, then retrieved with ``requests`` through the API emulator: a 4 MB study comes
  back inline, a 40 MB one through the S3 redirect (assembled, then presigned GET);
* memory: ``services.retrieve.retrieve_rs`` assembling the 40 MB body into S3, measured with
  tracemalloc in a process where moto runs in a separate process (so only our code and
  boto3 are counted).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

SOURCE = "693_UNCI.dcm"
MB = 1_000_000  # decimal megabytes, as the issue counts them


def _study(count: int, number: int) -> tuple[str, list[bytes]]:
    study = f"1.2.826.0.1.3680043.8.498.9{number}"
    return study, [
        dicom_files.with_new_uids(SOURCE, study=study, series=f"{study}.1", InstanceNumber=i + 1)
        for i in range(count)
    ]


def _stow(base: str, key: str, datas: list[bytes]) -> None:
    for data in datas:
        boundary = new_boundary()
        response = requests.post(
            f"{base}/stowRsListener/BENCH/studies",
            data=build_related([(data, "application/dicom")], boundary),
            headers={
                "Authorization": key,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(f"STOW failed: {response.status_code}")


def throughput(runs: int = 5) -> dict[str, Any]:
    from local.stack import LocalStack

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work, LocalStack(port=0, data_dir=Path(work)) as stack:
        for label, count in (("inline_4MB", 8), ("redirect_40MB", 76)):
            study, datas = _study(count, count)
            _stow(stack.base_url, stack.api_key, datas)
            size = sum(len(d) for d in datas)
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                response = requests.get(
                    f"{stack.base_url}/rs/studies/{study}",
                    headers={"Authorization": stack.api_key},
                    timeout=300,
                )
                seconds.append(time.perf_counter() - started)
                if response.status_code != 200 or len(response.content) < size:
                    raise RuntimeError(f"retrieve failed: {response.status_code}")
            median = statistics.median(seconds)
            results[label] = {
                "instances": count,
                "megabytes": round(size / MB, 1),
                "redirected": bool(response.history),
                "median_s": round(median, 3),
                "mb_per_s": round(size / MB / median, 1),
            }
    return results


_MEMORY_SCRIPT = r"""
import json, os, sys, tracemalloc
sys.path.insert(0, os.getcwd())
import boto3
from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.s3_blobs import S3BlobStore
from shared.dicomweb.multipart import Part
from shared.services import retrieve
from shared.services.store import StoreRequest, store
from tests.support import dicom_files

endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint)
ddb = boto3.client("dynamodb", endpoint_url=endpoint)
s3.create_bucket(Bucket="bench-wado")
ddb.create_table(TableName="bench-wado", **local_template.load().tables["IndexTable"].create_args)
blobs, index = S3BlobStore(s3, "bench-wado"), DynamoInstanceIndex(ddb, "bench-wado")
study = "1.2.826.0.1.3680043.8.498.9999"
largest = 0
for i in range(76):
    data = dicom_files.with_new_uids("693_UNCI.dcm", study=study, series=study + ".1")
    largest = max(largest, len(data))
    store(StoreRequest([Part(data, {})], "BENCH", "http://bench"), objects=blobs, index=index)
    del data
rows = retrieve.locate(DynamoSearch(ddb, "bench-wado"), study)
total = sum(r.size for r in rows)
delivery = retrieve.Delivery(
    store=blobs, inline_limit=4_500_000, presign_ttl=60, anonymizer=lambda d: d
)
tracemalloc.start()
outcome = retrieve.retrieve_rs(rows, transfer_syntax=None, anonymize=False, delivery=delivery)
current, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"body_mb": total / 1e6, "largest_instance_mb": largest / 1e6,
                  "peak_mb": peak / 1e6, "redirect": isinstance(outcome, retrieve.Redirect)}))
"""


def assembly_memory() -> dict[str, Any]:
    """Peak Python memory of assembling a 40 MB study body (moto in another process)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        env = {
            **os.environ,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=600,
        )
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    import json

    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
    result["target_mb"] = round(100 + result["largest_instance_mb"], 1)
    result["meets_target"] = result["peak_mb"] < result["target_mb"]
    return result


def run() -> dict[str, Any]:
    """Both measurements, printed and returned."""
    speed = throughput()
    memory = assembly_memory()
    print("\nWADO-RS study retrieval through the local stack (median of 5)")
    for label, r in speed.items():
        print(
            f"  {label:14s} {r['instances']:3d} x 526 KB = {r['megabytes']:5.1f} MB"
            f"  {r['median_s']:6.3f} s  {r['mb_per_s']:6.1f} MB/s"
            f"  {'(303 -> S3)' if r['redirected'] else '(inline)'}"
        )
    print(
        f"  assembling a {memory['body_mb']} MB body into S3: peak Python memory "
        f"{memory['peak_mb']} MB (target < {memory['target_mb']} MB = 100 MB + largest instance)"
    )
    return {"throughput": speed, "assembly_memory": memory}
