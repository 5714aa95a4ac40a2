"""The viewer resources, through the real handler and the embedded backend (files + SQLite):
series metadata of a 300-instance CT series (handler time, bytes, storage reads), one
frame of a 512x512 CT, a 128 px thumbnail.

The WADO-RS Lambda handler is called in-process with API Gateway events, as the local
stack calls it, so the time is the handler's own (no HTTP). Storage reads are the SQL
statements the catalog ran and the objects read from the store, counted by wrapping them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.api_gateway.proxy import ProxyRequest, Stage, proxy_event
from tests.support import dicom_files

SOURCE = "693_UNCI.dcm"  # pydicom-data: a 512x512 CT slice, 526 KB
SERIES_SIZE = 300
REPEATS = 15
TARGETS = {"metadata_ms": 150.0, "metadata_reads": 3, "frame_ms": 30.0, "thumbnail_ms": 40.0}


def _load(data_dir: Path) -> tuple[str, str, str]:
    from shared.adapters.file_blobs import FileBlobStore
    from shared.adapters.sqlite_index import SqliteIndex
    from shared.bootstrap import INDEX_FILE, OBJECTS_DIR
    from shared.dicom.validate import validate
    from shared.services.store import _record

    study, series = "1.2.826.0.1.3680043.8.498.777", "1.2.826.0.1.3680043.8.498.777.1"
    blobs, index = FileBlobStore(data_dir / OBJECTS_DIR), SqliteIndex(data_dir / INDEX_FILE)
    sop = ""
    for number in range(SERIES_SIZE):
        data = dicom_files.with_new_uids(
            SOURCE, study=study, series=series, InstanceNumber=number + 1
        )
        record = _record(validate(data), "BENCH", datetime.now(UTC))
        blobs.put(record.blob_key, data)
        index.add(record)
        sop = sop or record.sop_instance_uid
    return study, series, sop


def _event(path: str, accept: str) -> dict[str, Any]:
    headers = [("Accept", accept), ("Host", "127.0.0.1"), ("Accept-Encoding", "gzip")]
    request = ProxyRequest("GET", path, path, headers=headers, request_id="bench")
    return proxy_event(request, Stage("local"))


class _Context:
    function_name = "bench"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


def run() -> dict[str, Any]:
    """Median handler times, bytes and storage reads of the three resources."""
    with tempfile.TemporaryDirectory() as work:
        data_dir = Path(work)
        study, series, sop = _load(data_dir)
        os.environ.update(
            {
                "DICOMWEB_STORAGE": "local",
                "DICOMWEB_DATA_DIR": str(data_dir),
                "DICOMWEB_LOCAL_URL": "http://127.0.0.1:1",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        from shared import bootstrap, config

        config.settings.cache_clear()
        from functions.wado_rs import app

        catalog = bootstrap.current().catalog
        store = bootstrap.current().objects
        counts = {"sql": 0, "objects": 0}
        fetch, get = catalog._fetch, store.get  # type: ignore[attr-defined]

        def counting_fetch(*args: Any, **kwargs: Any) -> Any:
            counts["sql"] += 1
            return fetch(*args, **kwargs)

        def counting_get(*args: Any, **kwargs: Any) -> Any:
            counts["objects"] += 1
            return get(*args, **kwargs)

        catalog._fetch = counting_fetch  # type: ignore[attr-defined]
        store.get = counting_get  # type: ignore[method-assign]
        base = f"/o3-dpacs-wado/rs/studies/{study}/series/{series}"
        cases = {
            "metadata": (f"{base}/metadata", "application/dicom+json"),
            "frame": (
                f"{base}/instances/{sop}/frames/1",
                "multipart/related; type=application/octet-stream; transfer-syntax=*",
            ),
            "thumbnail": (f"{base}/instances/{sop}/thumbnail", "image/jpeg"),
        }
        results: dict[str, Any] = {}
        for label, (path, accept) in cases.items():
            times, reads, size = [], {}, 0
            for attempt in range(REPEATS + 1):
                counts.update(sql=0, objects=0)
                started = time.perf_counter()
                reply = app.lambda_handler(_event(path, accept), _Context())
                elapsed = time.perf_counter() - started
                if reply["statusCode"] != 200:
                    raise RuntimeError(f"{label}: {reply['statusCode']} {reply['body'][:200]}")
                if attempt:
                    times.append(elapsed)
                reads = dict(counts)
                size = (
                    len(reply["body"]) * 3 // 4 if reply["isBase64Encoded"] else len(reply["body"])
                )
            results[label] = {
                "p50_ms": round(statistics.median(times) * 1000, 1),
                "bytes": size,
                "sql_statements": reads["sql"],
                "objects_read": reads["objects"],
            }
        results["targets"] = TARGETS
        print_table(results)
        return results


def print_table(results: dict[str, Any]) -> None:
    """The figures as a Markdown table."""
    print("| resource | p50 (ms) | bytes | SQL statements | objects read |")
    print("|---|---|---|---|---|")
    for label in ("metadata", "frame", "thumbnail"):
        r = results[label]
        print(
            f"| {label} | {r['p50_ms']} | {r['bytes']:,} | {r['sql_statements']} |"
            f" {r['objects_read']} |"
        )


if __name__ == "__main__":
    run()
