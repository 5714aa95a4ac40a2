"""Importing 1,000 files: ``dicomweb-import`` through the local stack with 1 and 4 workers,
``storescu`` into Orthanc (Debian ``orthanc``, as in bench_peer) on the same files, and
``storescu`` through ``dicomweb-gateway`` into the local stack.

The files are slices of the corpus (CT, MR, enhanced MR, SC, US; 10 KB to 920 KB,
uncompressed so that one ``storescu`` association carries them all) re-written with fresh
UIDs. Every run starts a fresh archive, so nothing is skipped; each figure is the median of
REPEATS runs. ``python -m bench --only import`` (``--import-files N`` for another count).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared import keys
from tests.support import dicom_files
from tests.support.served import free_port, served

SLICES = ("CT_small.dcm", "MR_small.dcm", "693_UNCI.dcm", "emri_small.dcm", "SC_rgb.dcm")
SLICES += ("US1_UNCR.dcm",)
FILES = 1000
REPEATS = 3


def make_files(folder: Path, count: int) -> int:
    """``count`` corpus slices with fresh UIDs, 25 per study; returns their total size."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    study = series = ""
    for number in range(count):
        if number % 25 == 0:
            study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        data = dicom_files.with_new_uids(
            SLICES[number % len(SLICES)],
            study=study,
            series=series,
            patient_id=f"BENCH{number // 25:04d}",
            InstanceNumber=number + 1,
        )
        (folder / f"{number:05d}.dcm").write_bytes(data)
        total += len(data)
    return total


def _stack_dir(work: Path) -> Path:
    folder = work / f"stack-{time.monotonic_ns()}"
    folder.mkdir()
    return folder


def importer(folder: Path, workers: int, work: Path) -> float:
    """Seconds for ``dicomweb-import`` of ``folder`` into a fresh local stack."""
    key, _ = keys.generate("bench-import")
    with served(_stack_dir(work), key) as stack:
        command = [sys.executable, "-m", "tools.importer", str(folder), "--url", stack.base_url]
        command += ["--key", key, "--workers", str(workers), "--no-journal", "--no-progress"]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dicomweb-import failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def storescu_orthanc(folder: Path, work: Path) -> float:
    """Seconds for ``storescu +sd`` of ``folder`` into a fresh Orthanc (one association)."""
    from bench.bench_peer import orthanc

    storescu = _storescu()
    port = free_port()
    peer = work / f"orthanc-{time.monotonic_ns()}"
    peer.mkdir()
    with orthanc(peer, dicom_port=port):
        started = time.perf_counter()
        _send(storescu, "ORTHANC", port, folder)
        return time.perf_counter() - started


def storescu_gateway(folder: Path, work: Path) -> tuple[float, float]:
    """(seconds until ``storescu`` is done, seconds until the gateway has forwarded all)
    for ``folder`` through ``dicomweb-gateway`` into a fresh local stack."""
    storescu = _storescu()
    key, _ = keys.generate("bench-gateway")
    port, spool = free_port(), work / f"spool-{time.monotonic_ns()}"
    with served(_stack_dir(work), key) as stack:
        log = work / f"gateway-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "tools.gateway", "--url", stack.base_url]
        command += ["--ae-title", "GATEWAY", "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--spool", str(spool)]
        with log.open("wb") as out:
            gateway = subprocess.Popen(
                command,
                env={**os.environ, "DICOMWEB_API_KEY": key},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            while b"listening on" not in log.read_bytes():
                if gateway.poll() is not None:
                    raise RuntimeError(f"the gateway did not start: {log.read_text()}")
                time.sleep(0.1)
            started = time.perf_counter()
            _send(storescu, "GATEWAY", port, folder)
            acknowledged = time.perf_counter() - started
            while any((spool / "ready").rglob("*.dcm")):
                time.sleep(0.05)
            forwarded = time.perf_counter() - started
        finally:
            gateway.terminate()
            gateway.wait(timeout=60)
    if any((spool / "failed").iterdir()):
        raise RuntimeError("the gateway set instances aside: see its spool's failed/")
    return acknowledged, forwarded


def _storescu() -> str:
    """dcmtk's storescu, installed from Debian if missing and possible (as root)."""
    found = shutil.which("storescu")
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise SystemExit("storescu is not installed: apt-get install dcmtk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "dcmtk"],
        check=True,
        env=env,
        timeout=1200,
    )
    return shutil.which("storescu") or "/usr/bin/storescu"


def _send(storescu: str, called: str, port: int, folder: Path) -> None:
    done = subprocess.run(
        [storescu, "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), "+sd", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu into {called} failed: {done.stderr[-2000:]}")


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def _rates(seconds: float, count: int, size: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "files_per_s": round(count / seconds, 1),
        "mb_per_s": round(size / seconds / 1e6, 1),
    }


def run(count: int = FILES, repeats: int = REPEATS) -> dict[str, Any]:
    """Every measurement, medians of ``repeats`` runs; a Markdown table on stdout."""
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        folder = work / "files"
        size = make_files(folder, count)
        timed: dict[str, Callable[[], float]] = {
            "import_1_worker": lambda: importer(folder, 1, work),
            "import_4_workers": lambda: importer(folder, 4, work),
            "storescu_orthanc": lambda: storescu_orthanc(folder, work),
        }
        results: dict[str, Any] = {"files": count, "mb": round(size / 1e6, 1)}
        for name, measure in timed.items():
            results[name] = _rates(_median([measure() for _ in range(repeats)]), count, size)
        gateway_runs = [storescu_gateway(folder, work) for _ in range(repeats)]
        results["storescu_gateway_acknowledged"] = _rates(
            _median([a for a, _ in gateway_runs]), count, size
        )
        results["storescu_gateway_forwarded"] = _rates(
            _median([f for _, f in gateway_runs]), count, size
        )
    orthanc = results["storescu_orthanc"]["files_per_s"]
    for workers in ("import_1_worker", "import_4_workers"):
        results[f"{workers}_vs_storescu_orthanc"] = round(
            results[workers]["files_per_s"] / orthanc, 2
        )
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"\nImport of {results['files']} files ({results['mb']} MB), median of {REPEATS} runs")
    print("| path | s | files/s | MB/s |")
    print("|---|---:|---:|---:|")
    for name, value in results.items():
        if isinstance(value, dict):
            print(f"| {name} | {value['seconds']} | {value['files_per_s']} | {value['mb_per_s']} |")
    for workers in ("import_1_worker", "import_4_workers"):
        ratio = results[f"{workers}_vs_storescu_orthanc"]
        print(f"{workers} / storescu->Orthanc (files/s): {ratio}")


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else FILES)
