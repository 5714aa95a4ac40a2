"""The import benchmark's files are ones the archive stores: fresh UIDs, one patient per
study (a study with two PatientIDs would fail with 0x0110 and measure nothing)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom

from bench.bench_import import make_files
from shared.dicom.validate import validate


def test_the_generated_files_are_storable_and_consistent(tmp_path: Path) -> None:
    total = make_files(tmp_path, 60)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 60
    assert total == sum(f.stat().st_size for f in files)
    patients: dict[str, set[str]] = defaultdict(set)
    uids = set()
    for path in files:
        instance = validate(path.read_bytes())
        uids.add(instance.sop_instance_uid)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        patients[str(ds.StudyInstanceUID)].add(str(ds.PatientID))
    assert len(uids) == 60
    assert all(len(ids) == 1 for ids in patients.values())
