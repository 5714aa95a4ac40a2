"""Metadata update (issue 22, item 4): the rate of the Operations worker, which gives each
instance of a study a new version (``shared.services.operations``).

* files + SQLite (the embedded backend): a PatientName/PatientID update (a patient merge) of
  one study of ``n`` instances (default 500, in four series), instances per second, median
  of ``rounds`` runs (each run changes the name again, so each writes ``n`` new versions);
* S3 + DynamoDB on moto (in-process), ``moto_n`` instances: AWS calls and DynamoDB items
  written per instance (moto's seconds are not AWS's and are reported only as such).

Each instance has its own bytes (pydicom's CT_small under its own UIDs, 39 KB): an update
reads, rewrites and validates every one.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.moto_archive import moto_archive
from shared.dicom.validate import validate
from shared.services import operations, store
from tests.support import dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.8900"
#: Target (2-core development machine): well above HealthImaging's few updates per second
#: and Azure's 50 studies per operation; at this rate a 500-instance study is merged in
#: under 10 s.
TARGET_INSTANCES_PER_S = 50.0


def _fill(objects: Any, index: Any, n: int) -> None:
    for number in range(n):
        data = dicom_files.with_new_uids(
            study=STUDY,
            series=f"{STUDY}.{number % 4 + 1}",
            patient_id="BENCH-UPD",
            PatientName="Before^Update",
            InstanceNumber=number + 1,
        )
        instance = validate(data)
        store.commit(
            instance,
            calling_aet="BENCH",
            base_url="http://bench",
            objects=objects,
            index=index,
            write=lambda key, data=data: objects.put(key, data),
            clock=lambda: datetime.now(UTC),
        )


def _update(objects: Any, ports: operations.Ports, round_number: int) -> float:
    change = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"After^Update{round_number}"}]},
        "00100020": {"vr": "LO", "Value": [f"BENCH-UPD-{round_number}"]},
    }
    body = json.dumps({"studyInstanceUids": [STUDY], "changeDataset": change}).encode()
    operation = operations.submit(body, objects=objects, caller=operations.Caller())
    started = time.perf_counter()
    operations.run_pending(ports)
    elapsed = time.perf_counter() - started
    done = operations.status(operation.id, objects)
    if done.status != "succeeded":
        raise RuntimeError(f"the update did not succeed: {done.errors[:3]}")
    return elapsed


def sqlite(n: int = 500, rounds: int = 3) -> dict[str, Any]:
    """Patient merges of an n-instance study on files + SQLite, timed."""
    from shared.adapters.file_blobs import FileBlobStore
    from shared.adapters.sqlite_catalog import SqliteCatalog
    from shared.adapters.sqlite_index import SqliteIndex

    with tempfile.TemporaryDirectory() as tmp:
        objects = FileBlobStore(Path(tmp) / "objects")
        index = SqliteIndex(Path(tmp) / "index.sqlite3")
        _fill(objects, index, n)
        ports = operations.Ports(
            objects=objects,
            index=index,
            catalog=lambda: SqliteCatalog(Path(tmp) / "index.sqlite3"),
        )
        times = [_update(objects, ports, r) for r in range(rounds)]
    median = statistics.median(times)
    rate = n / median
    return {
        "instances": n,
        "rounds": rounds,
        "update_s_median": round(median, 3),
        "instances_per_s": round(rate, 1),
        "target_instances_per_s": TARGET_INSTANCES_PER_S,
        "met": rate >= TARGET_INSTANCES_PER_S,
    }


def _moto(n: int) -> dict[str, Any]:
    with moto_archive("bench-update") as archive:
        _fill(archive.objects, archive.index, n)
        ports = operations.Ports(
            objects=archive.objects, index=archive.index, catalog=archive.catalog
        )
        counted = archive.count()
        elapsed = _update(archive.objects, ports, 0)
    return {
        "instances": n,
        "update_s_moto": round(elapsed, 3),
        "items_written_per_instance": round(counted.written() / n, 2),
        "calls_per_instance": counted.per(n, 2),
    }


def run(n: int = 500, moto_n: int = 100) -> dict[str, Any]:
    """Both backends; prints a summary."""
    on_sqlite = sqlite(n)
    moto = _moto(moto_n)
    print("\nMetadata update (a patient merge) of a whole study, one worker")
    print(
        f"  files + SQLite, {n} instances: {on_sqlite['update_s_median']:.2f} s median,"
        f" {on_sqlite['instances_per_s']:.0f} instances/s"
        f" (target >= {TARGET_INSTANCES_PER_S:.0f})"
    )
    print(
        f"  S3 + DynamoDB (moto), {moto_n} instances: {moto['items_written_per_instance']}"
        f" items written and AWS calls {moto['calls_per_instance']} per instance"
    )
    return {"sqlite": on_sqlite, "moto": moto}
