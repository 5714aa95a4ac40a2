"""DELETE of a large study (issue 22, item 8): a study of ``n`` instances (default 1,000,
in four series) deleted whole with ``shared.services.lifecycle.delete``, restore window on.

* files + SQLite (the embedded backend): seconds for the DELETE (index transaction and
  sweep), ``n`` instances;
* S3 + DynamoDB on moto (in-process), ``moto_n`` instances (moto slows with the table, and
  what is counted is per instance): the DELETE's seconds (moto's, not AWS's), its DynamoDB
  items written per instance (each TransactWriteItems' items and each single or batch
  write, counted with botocore's event hooks) and its AWS calls per instance.

The study's instances share one file's bytes under their own UIDs: a whole-study DELETE
never reads them back.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.moto_archive import moto_archive
from shared.dicom.validate import validate
from shared.services import lifecycle
from shared.services.lifecycle import Target
from shared.services.store import record_of
from tests.support import dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.8800"
#: Targets (2-core development machine): a 1,000-instance study deletes in one request's
#: 22 s with room to spare on SQLite, and each instance writes a bounded number of items.
TARGET_SQLITE_S = 2.0
TARGET_ITEMS_PER_INSTANCE = 8


def _fill(objects: Any, index: Any, n: int) -> None:
    data = dicom_files.with_new_uids(study=STUDY, series=f"{STUDY}.1", patient_id="BENCH-DEL")
    base = record_of(validate(data), "BENCH", datetime.now(UTC))
    for number in range(n):
        series = f"{STUDY}.{number % 4 + 1}"
        sop = f"{series}.{number + 1}"
        key = f"dicom/{STUDY}/{series}/{sop}.{base.sha256}.dcm"
        objects.put(key, data)
        index.add(
            replace(
                base,
                series_uid=series,
                sop_instance_uid=sop,
                blob_key=key,
                instance_number=str(number + 1),
            )
        )


def sqlite(n: int) -> dict[str, Any]:
    """The DELETE of an n-instance study on files + SQLite, timed."""
    from shared.adapters.file_blobs import FileBlobStore
    from shared.adapters.sqlite_catalog import SqliteCatalog
    from shared.adapters.sqlite_index import SqliteIndex

    with tempfile.TemporaryDirectory() as tmp:
        objects = FileBlobStore(Path(tmp) / "objects")
        index = SqliteIndex(Path(tmp) / "index.sqlite3")
        _fill(objects, index, n)
        started = time.perf_counter()
        deletion = lifecycle.delete(
            Target(STUDY),
            objects=objects,
            index=index,
            retention_days=30,
            catalog=SqliteCatalog(Path(tmp) / "index.sqlite3"),
        )
        deleted_s = time.perf_counter() - started
        if not deletion.done or len(deletion.removed) != n:
            raise RuntimeError(f"the DELETE did not finish: {deletion}")
    return {
        "instances": n,
        "delete_s": round(deleted_s, 3),
        "delete_target_s": TARGET_SQLITE_S,
        "delete_met": deleted_s <= TARGET_SQLITE_S,
    }


def _moto(n: int) -> dict[str, Any]:
    with moto_archive("bench-delete") as archive:
        _fill(archive.objects, archive.index, n)
        counted = archive.count()
        started = time.perf_counter()
        deletion = lifecycle.delete(
            Target(STUDY),
            objects=archive.objects,
            index=archive.index,
            retention_days=30,
            catalog=archive.catalog(),
        )
        deleted_s = time.perf_counter() - started
        if not deletion.done or len(deletion.removed) != n:
            raise RuntimeError(f"the DELETE did not finish: {deletion}")
    written = counted.written()
    return {
        "instances": n,
        "delete_s_moto": round(deleted_s, 3),
        "items_written_per_instance": round(written / n, 3),
        "items_target_per_instance": TARGET_ITEMS_PER_INSTANCE,
        "items_met": written / n <= TARGET_ITEMS_PER_INSTANCE,
        "items_by_kind": dict(sorted(counted.items.items())),
        "calls_per_instance": counted.per(n),
    }


def run(n: int = 1000, moto_n: int = 200) -> dict[str, Any]:
    """Both backends; prints a summary."""
    on_sqlite = sqlite(n)
    moto = _moto(moto_n)
    print("\nDELETE of a whole study (four series), restore window on")
    print(
        f"  files + SQLite, {n} instances: {on_sqlite['delete_s']:.2f} s"
        f" (target <= {TARGET_SQLITE_S} s)"
    )
    print(
        f"  S3 + DynamoDB (moto), {moto_n} instances: {moto['delete_s_moto']:.2f} s;"
        f" {moto['items_written_per_instance']} items written per instance"
        f" (target <= {TARGET_ITEMS_PER_INSTANCE})"
    )
    print(f"  AWS calls / instance {moto['calls_per_instance']}")
    return {"sqlite": on_sqlite, "moto": moto}
