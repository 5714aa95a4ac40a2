"""``dicomweb-import`` against the real local stack (its own process, its own data).

Every pydicom and pydicom-data test file that fits a STOW-RS body (large ones need the upload
path: tests/integration/test_import_uploads.py) is imported from a copy of both packages'
folders, non-DICOM files and DICOMDIRs included: exactly the files the archive's validator
accepts end up stored or duplicate, every other Part 10 file fails with a reason, and a
second run sends nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import keys
from shared.dicom.validate import InstanceRejected, validate
from tests.support import dicom_files
from tests.support.served import served
from tools.importer.batching import fits_alone
from tools.importer.walk import MAGIC, PREAMBLE, is_dicomdir

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("import")]


def copy_corpus(target: Path, small_only: bool) -> Path:
    """Both packages' test-file folders, side by side (DICOMDIR file sets intact)."""
    for number, root in enumerate(dicom_files.roots()):
        shutil.copytree(
            root,
            target / f"root{number}",
            ignore=lambda folder, names: [
                n
                for n in names
                if small_only
                and (Path(folder) / n).is_file()
                and not fits_alone((Path(folder) / n).stat().st_size)
            ],
        )
    return target


def accepted_by_the_archive(folder: Path) -> tuple[set[str], set[str]]:
    """(files the validator accepts, every other Part 10 file that is not a DICOMDIR)."""
    valid, others = set(), set()
    for path in folder.rglob("*"):
        if not path.is_file() or is_dicomdir(path):
            continue
        data = path.read_bytes()
        if data[PREAMBLE : PREAMBLE + len(MAGIC)] != MAGIC:
            continue
        try:
            validate(data)
        except InstanceRejected:
            others.add(str(path))
        else:
            valid.add(str(path))
    return valid, others


def stack_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "stack"
    folder.mkdir()
    return folder


def run_import(base_url: str, key: str, *args: str) -> tuple[int, dict[str, object], str]:
    report = (
        Path(args[0]).parent / f"report-{len(list(Path(args[0]).parent.glob('report-*')))}.json"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.importer",
            *args,
            "--url",
            base_url,
            "--key",
            key,
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in {0, 1}, done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text()), done.stdout


def sources(report: dict[str, object], *kinds: str) -> set[str]:
    return {str(entry["source"]) for kind in kinds for entry in report[kind]}  # type: ignore[attr-defined]


def test_the_corpus_is_imported_once_and_skipped_the_second_time(tmp_path: Path) -> None:
    corpus = copy_corpus(tmp_path / "corpus", small_only=True)
    valid, invalid = accepted_by_the_archive(corpus)
    key, _ = keys.generate("import-test")
    journal = tmp_path / "journal.jsonl"
    with served(stack_dir(tmp_path), key) as stack:
        status, first, stdout = run_import(
            stack.base_url, key, str(corpus), "--journal", str(journal), "--workers", "3"
        )
        assert status == 1  # the corpus holds broken files on purpose
        assert sources(first, "stored", "duplicates") == valid, stdout
        assert sources(first, "failed") == invalid
        assert all(entry["reason"] for entry in first["failed"])  # type: ignore[attr-defined]
        assert any("not a DICOM" in n["note"] for n in first["notes"])  # type: ignore[attr-defined]

        _, again, _ = run_import(stack.base_url, key, str(corpus), "--journal", str(journal))
        assert again["counts"]["stored"] == again["counts"]["duplicate"] == 0  # type: ignore[index]
        assert sources(again, "skipped") >= valid

        # a fresh journal: the archive itself (QIDO-RS) says what it holds
        _, asked, _ = run_import(
            stack.base_url, key, str(corpus), "--journal", str(tmp_path / "fresh.jsonl")
        )
        assert asked["counts"]["stored"] == asked["counts"]["duplicate"] == 0  # type: ignore[index]
        assert sources(asked, "skipped") >= valid


def test_zip_and_tar_archives_of_the_corpus(tmp_path: Path) -> None:
    names = dicom_files.storable(max_size=1_000_000)[:20]
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in names:
        shutil.copy(dicom_files.path(name), folder / name)
    shutil.make_archive(str(tmp_path / "bundle"), "zip", folder)
    shutil.make_archive(str(tmp_path / "bundle"), "gztar", folder)
    key, _ = keys.generate("import-test")
    with served(stack_dir(tmp_path), key) as stack:
        status, report, stdout = run_import(
            stack.base_url,
            key,
            str(tmp_path / "bundle.zip"),
            str(tmp_path / "bundle.tar.gz"),
            "--no-journal",
        )
    assert status == 0, stdout
    assert report["counts"]["stored"] == len(names)  # type: ignore[index]
    assert report["counts"]["duplicate"] == len(names)  # type: ignore[index]


def test_a_wrong_key_stops_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(dicom_files.with_new_uids())
    key, _ = keys.generate("import-test")
    with served(stack_dir(tmp_path), key) as stack:
        done = subprocess.run(
            [sys.executable, "-m", "tools.importer", str(folder), "--url", stack.base_url],
            env={"DICOMWEB_API_KEY": "o3k_wrong", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    assert "API key" in done.stdout
