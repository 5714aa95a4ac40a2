"""The upload path end to end through the local stack (embedded backend): a 150 MB
multi-frame instance through a multipart upload, a 7.2 MB radiograph through one presigned
PUT; and the peak memory of ingesting the 150 MB object, in a process of its own.

Times: ``upload`` from asking for the upload to the last part's PUT (and the complete);
``ingest`` from then until the status is no longer pending (validation from disk, the copy
to the final key, the index entry). Medians of a few runs, each with fresh UIDs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from local.stack import LocalStack
from tests.support import dicom_files, uploads

LARGE = 150 * 1000 * 1000
RUNS = 3
TARGETS = {"large_mb_s": 50.0, "ingest_peak_mb": 64.0}


def _timed_send(stack: LocalStack, data: bytes) -> tuple[float, float, str]:
    """(upload seconds, ingest seconds, status) of one object."""
    headers = {"Authorization": stack.api_key}
    started = time.perf_counter()
    answer = uploads.ask(stack, len(data), "BENCH")
    uploads.put_object(answer, data, headers)
    sent = time.perf_counter()
    found = uploads.wait(answer["statusUrl"], headers, timeout=600)
    return sent - started, time.perf_counter() - sent, str(found["status"])


def run() -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        large_files = [uploads.large_multiframe(work / f"large{i}.dcm", LARGE) for i in range(RUNS)]
        size = large_files[0].stat().st_size
        with LocalStack(port=0, data_dir=work / "data") as stack:
            large = [_timed_send(stack, p.read_bytes()) for p in large_files]
            radiographs = [
                _timed_send(stack, dicom_files.with_new_uids("RG1_UNCR.dcm")) for _ in range(RUNS)
            ]
        alone = uploads.ingest_alone(large_files[0], work / "memory")
    if any(s != "stored" for *_, s in large + radiographs):
        raise RuntimeError("an upload was not stored")
    total = [u + i for u, i, _ in large]
    result = {
        "large_bytes": size,
        "large_upload_s": round(statistics.median(u for u, _, _ in large), 2),
        "large_ingest_s": round(statistics.median(i for _, i, _ in large), 2),
        "large_mb_s": round(size / 1e6 / statistics.median(total), 1),
        "radiograph_bytes": len(dicom_files.data("RG1_UNCR.dcm")),
        "radiograph_total_ms": round(statistics.median((u + i) * 1000 for u, i, _ in radiographs)),
        "ingest_alone_s": round(alone["s"], 2),
        "ingest_peak_mb": round(alone["added_mb"], 1),
        "targets": TARGETS,
    }
    print(
        f"uploads: {size / 1e6:.0f} MB multipart in {result['large_upload_s']} s + ingest "
        f"{result['large_ingest_s']} s = {result['large_mb_s']} MB/s; 7.2 MB radiograph "
        f"{result['radiograph_total_ms']} ms; ingest alone {result['ingest_alone_s']} s, "
        f"peak memory +{result['ingest_peak_mb']} MB"
    )
    return result


if __name__ == "__main__":
    run()
