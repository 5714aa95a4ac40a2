"""Side by side with Orthanc: ``make bench-peer`` (``python -m bench.bench_peer``).

Installs Orthanc and its DICOMweb plugin from Debian when they are missing (as root), starts
Orthanc and ``python -m local`` (the embedded backend, one worker per CPU) on free ports of
this machine, loads the same studies into both (50 studies x 12 CT slices of 526 KB, fresh
UIDs, 4 concurrent clients) and measures, for both, in the same run:

* STOW-RS instances/s and MB/s;
* QIDO-RS p50 for PatientID, a StudyDate range, a PatientName prefix, ``studies?limit=50``
  and ``studies/{s}/series``;
* WADO-RS MB/s for whole studies and p50 for one instance;
* a rendered JPEG, full size and 256 px with a window. Orthanc's WADO-URI answers PNG and
  ignores rows and window, so its WADO-RS ``/rendered`` (viewport, window) stands in.

Then, for this archive alone, the indexed QIDO p50 with 1,000 and with 10,000 studies in the
index (synthetic studies written straight into the index, the p50 ratio reported).

Results: ``bench/results/peer.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared import keys
from tests.support import dicom_files
from tests.support.served import served

STUDIES, SLICES, CLIENTS = 50, 12, 4
SOURCE = "693_UNCI.dcm"
REPEATS = 40
SURNAMES = ("Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Roberts")
MULTIPART = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True)
class Study:
    uid: str
    series: str
    patient_id: str
    name: str
    date: str
    instances: tuple[tuple[str, bytes], ...]  # (SOP Instance UID, Part 10 bytes)


def make_studies(count: int = STUDIES, slices: int = SLICES) -> list[Study]:
    """``count`` studies of ``slices`` CT slices each, fresh UIDs, varied demographics."""
    import io

    import pydicom

    studies = []
    root = f"2.25.{int(time.time() * 1000)}"
    for number in range(count):
        uid, series = f"{root}.{number}", f"{root}.{number}.1"
        patient_id = f"PEER{number:04d}"
        name = f"{SURNAMES[number % len(SURNAMES)]}^Patient{number:04d}"
        date = f"2020{1 + number % 12:02d}{1 + number % 28:02d}"
        instances = []
        for index in range(slices):
            data = dicom_files.with_new_uids(
                SOURCE,
                study=uid,
                series=series,
                patient_id=patient_id,
                PatientName=name,
                StudyDate=date,
                AccessionNumber=f"ACC{number:05d}",
                InstanceNumber=index + 1,
            )
            sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
            instances.append((sop, data))
        studies.append(Study(uid, series, patient_id, name, date, tuple(instances)))
    return studies


# ----------------------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Target:
    """One archive's URLs."""

    name: str
    stow: str
    qido: str
    rs: str
    headers: dict[str, str]
    rendered: Callable[[Study, str, str], str]  # (study, sop, query) -> URL


def ensure_orthanc() -> str:
    """The Orthanc binary, installed from Debian if missing and possible."""
    found = shutil.which("Orthanc")
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    if found and plugin.exists():
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise SystemExit("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "orthanc", "orthanc-dicomweb"],
        check=True,
        env=env,
        timeout=1200,
    )
    return shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@contextmanager
def orthanc(
    workdir: Path,
    dicomweb: dict[str, Any] | None = None,
    dicom_port: int | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[Target]:
    """Orthanc 1.10 + DICOMweb plugin on free ports, storage in ``workdir``; ``dicomweb``
    replaces options of the plugin's section (``{"StudiesMetadata": "Full"}``);
    ``dicom_port`` fixes its DICOM port (AE title ORTHANC) for C-STORE; ``config`` adds
    top-level options (``DicomModalities``)."""
    from tests.support import orthanc as peer

    try:
        with peer.running(
            workdir, ensure_orthanc(), dicomweb=dicomweb, dicom_port=dicom_port, config=config
        ) as server:
            web = server.dicomweb
            yield Target(
                "Orthanc",
                f"{web}/studies",
                web,
                web,
                {},
                lambda s, sop, q: (
                    f"{web}/studies/{s.uid}/series/{s.series}/instances/{sop}/rendered{q}"
                ),
            )
    except peer.OrthancDidNotStart as exc:
        raise SystemExit(f"Orthanc did not start: {exc}") from exc


@contextmanager
def ours(workdir: Path) -> Iterator[Target]:
    """``python -m local`` on the embedded backend."""
    key, _ = keys.generate("peer")
    with served(workdir, key) as stack:
        base = stack.base_url

        def rendered(study: Study, sop: str, query: str) -> str:
            return (
                f"{base}/wado?requestType=WADO&studyUID={study.uid}&seriesUID={study.series}"
                f"&objectUID={sop}&contentType=image/jpeg{query}"
            )

        yield Target(
            "this archive",
            f"{base}/stowRsListener/PEER/studies",
            f"{base}/qido/PEER",
            f"{base}/rs",
            {"Authorization": key},
            rendered,
        )


# ----------------------------------------------------------------------------- measuring


def _body(data: bytes) -> bytes:
    return b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"


def stow(target: Target, studies: list[Study]) -> dict[str, float]:
    """Every instance, one per request, from CLIENTS concurrent clients."""
    bodies = [_body(data) for study in studies for _, data in study.instances]
    sessions = [requests.Session() for _ in range(CLIENTS)]
    headers = {**target.headers, "Content-Type": f"{MULTIPART}; boundary=b"}

    def send(index: int) -> None:
        reply = sessions[index % CLIENTS].post(target.stow, data=bodies[index], headers=headers)
        if reply.status_code != 200:
            raise RuntimeError(f"{target.name} STOW answered {reply.status_code}: {reply.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, range(len(bodies))))
    elapsed = time.perf_counter() - started
    size = sum(len(data) for study in studies for _, data in study.instances)
    return {
        "instances_per_s": round(len(bodies) / elapsed, 1),
        "mb_per_s": round(size / elapsed / 1e6, 1),
    }


def p50(session: requests.Session, url: str, headers: dict[str, str], **kwargs: Any) -> float:
    """Median milliseconds of REPEATS sequential GETs (after one warm-up); 200 required."""
    times = []
    for attempt in range(REPEATS + 1):
        started = time.perf_counter()
        reply = session.get(url, headers=headers, **kwargs)
        elapsed = time.perf_counter() - started
        if reply.status_code != 200:
            raise RuntimeError(f"{url} answered {reply.status_code}")
        if attempt:
            times.append(elapsed)
    return round(statistics.median(times) * 1000, 2)


def _qido_queries(studies: list[Study]) -> dict[str, tuple[str, dict[str, str]]]:
    one = studies[len(studies) // 2]
    return {
        "PatientID": ("studies", {"PatientID": one.patient_id}),
        "StudyDate range": ("studies", {"StudyDate": "20200301-20200430"}),
        "PatientName prefix": ("studies", {"PatientName": "Tay*"}),
        "studies?limit=50": ("studies", {"limit": "50"}),
        "studies/{s}/series": (f"studies/{one.uid}/series", {}),
    }


def qido(target: Target, studies: list[Study]) -> dict[str, float]:
    """p50 of the five QIDO kinds."""
    session = requests.Session()
    return {
        label: p50(session, f"{target.qido}/{path}", target.headers, params=params)
        for label, (path, params) in _qido_queries(studies).items()
    }


def qido_results(target: Target, studies: list[Study]) -> dict[str, int]:
    """How many results each QIDO kind answers: a latency is compared only between equal
    answers (Orthanc 1.10.1's DICOMweb plugin answers every PatientName filter with [],
    while its own /tools/find finds the same studies)."""
    session = requests.Session()
    counts = {}
    for label, (path, params) in _qido_queries(studies).items():
        reply = session.get(f"{target.qido}/{path}", headers=target.headers, params=params)
        reply.raise_for_status()
        counts[label] = len(reply.json()) if reply.content else 0
    return counts


def wado(target: Target, studies: list[Study]) -> dict[str, float]:
    """Whole studies (MB/s, redirects followed) and one instance (p50)."""
    session = requests.Session()
    accept = {**target.headers, "Accept": f"{MULTIPART}; transfer-syntax=*"}
    size, started = 0, time.perf_counter()
    for study in studies[:10]:
        reply = session.get(f"{target.rs}/studies/{study.uid}", headers=accept)
        if reply.status_code != 200:
            raise RuntimeError(f"{target.name} WADO-RS study answered {reply.status_code}")
        size += len(reply.content)
    elapsed = time.perf_counter() - started
    one = studies[0]
    sop = one.instances[0][0]
    instance = f"{target.rs}/studies/{one.uid}/series/{one.series}/instances/{sop}"
    return {
        "study_mb_per_s": round(size / elapsed / 1e6, 1),
        "instance_p50_ms": p50(session, instance, accept),
    }


def render(target: Target, studies: list[Study]) -> dict[str, float]:
    """A JPEG of a 512x512 CT slice, full size and 256 px with a window (40/400)."""
    session = requests.Session()
    one = studies[1]
    sop = one.instances[0][0]
    if target.name == "Orthanc":
        full, small = "", "?viewport=256,256&window=40,400,linear"
    else:
        full, small = "", "&rows=256&columns=256&windowCenter=40&windowWidth=400"
    return {
        "jpeg_full_p50_ms": p50(session, target.rendered(one, sop, full), target.headers),
        "jpeg_256_window_p50_ms": p50(session, target.rendered(one, sop, small), target.headers),
    }


def measure(target: Target, studies: list[Study]) -> dict[str, Any]:
    """Everything for one archive."""
    return {
        "stow": stow(target, studies),
        "qido_p50_ms": qido(target, studies),
        "qido_results": qido_results(target, studies),
        "wado": wado(target, studies),
        "render": render(target, studies),
    }


# ----------------------------------------------------------------------------- scale


def scale(sizes: tuple[int, ...] = (1_000, 10_000)) -> dict[str, Any]:
    """Indexed QIDO p50 of this archive with ``sizes`` studies in its index."""
    from shared.adapters.sqlite_index import SqliteIndex
    from shared.bootstrap import INDEX_FILE
    from shared.dicom.validate import validate
    from shared.services.store import _record

    results: dict[str, Any] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as work:
            index = SqliteIndex(Path(work) / "data" / INDEX_FILE)
            for number in range(size):
                uid = f"2.25.99{size}{number:06d}"
                data = dicom_files.with_new_uids(
                    "CT_small.dcm",
                    study=uid,
                    series=f"{uid}.1",
                    patient_id=f"SCALE{number:06d}",
                    PatientName=f"{SURNAMES[number % 8].upper()}^P{number}",
                    StudyDate=f"20{10 + number % 12}{1 + number % 12:02d}01",
                    AccessionNumber=f"S{number:06d}",
                )
                index.add(_record(validate(data), "PEER", datetime.now(UTC)))
            key, _ = keys.generate("scale")
            with served(Path(work), key) as stack:
                target = f"{stack.base_url}/qido/PEER"
                session = requests.Session()
                headers = {"Authorization": key}
                middle = size // 2
                kinds = {
                    "PatientID": ("studies", {"PatientID": f"SCALE{middle:06d}"}),
                    "StudyDate range": ("studies", {"StudyDate": "20150301-20150430"}),
                    "PatientName prefix": ("studies", {"PatientName": "TAY*", "limit": "50"}),
                    "studies?limit=50": ("studies", {"limit": "50"}),
                    "studies/{s}/series": (f"studies/2.25.99{size}{middle:06d}/series", {}),
                }
                results[str(size)] = {
                    label: p50(session, f"{target}/{path}", headers, params=params)
                    for label, (path, params) in kinds.items()
                }
    small, large = (results[str(s)] for s in sizes)
    results["ratio"] = {k: round(large[k] / small[k], 2) for k in small}
    return results


# ----------------------------------------------------------------------------- report

TARGETS = {  # metric -> (higher is better, target ratio ours/Orthanc)
    "stow.instances_per_s": (True, 1.0),
    "wado.study_mb_per_s": (True, 0.7),
    "render.jpeg_full_p50_ms": (False, 1.5),
    "render.jpeg_256_window_p50_ms": (False, 1.5),
}


def _flat(report: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for group, values in report.items():
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    return flat


def table(peer: dict[str, Any], mine: dict[str, Any]) -> str:
    """Markdown: metric, Orthanc, ours, ratio, target, pass."""
    rows = ["| figure | Orthanc | this archive | ratio | target |", "|---|---|---|---|---|"]
    theirs, own = _flat(peer), _flat(mine)
    for metric, value in own.items():
        if metric.startswith("qido_results."):
            continue
        other = theirs[metric]
        ratio = value / other if other else float("inf")
        higher, goal = TARGETS.get(metric, (metric.endswith("_per_s"), 1.0))
        if metric.startswith("qido"):
            higher, goal = False, 1.0
        met = ratio >= goal if higher else ratio <= goal
        sign = ">=" if higher else "<="
        verdict = "pass" if met else "miss"
        kind = metric.removeprefix("qido_p50_ms.")
        answered = (theirs.get(f"qido_results.{kind}"), own.get(f"qido_results.{kind}"))
        if metric.startswith("qido_p50_ms.") and answered[0] != answered[1]:
            verdict = f"not comparable: Orthanc answered {answered[0]}, this archive {answered[1]}"
        rows.append(f"| {metric} | {other} | {value} | {ratio:.2f}x | {sign} {goal}x: {verdict} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=STUDIES)
    parser.add_argument("--no-scale", action="store_true", help="skip the 1k/10k QIDO run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/peer.json"))
    args = parser.parse_args()
    studies = make_studies(args.studies)
    report: dict[str, Any] = {
        "machine": {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "cpus": os.cpu_count()},
        "studies": args.studies,
        "slices": SLICES,
    }
    with tempfile.TemporaryDirectory() as work:
        with _dir(Path(work) / "orthanc") as o_dir, orthanc(o_dir) as target:
            report["orthanc"] = measure(target, studies)
        with _dir(Path(work) / "ours") as our_dir, ours(our_dir) as target:
            report["ours"] = measure(target, studies)
    if not args.no_scale:
        report["scale"] = scale()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report["orthanc"], report["ours"]))
    if "scale" in report:
        print("\nindexed QIDO p50, 10,000 / 1,000 studies:", json.dumps(report["scale"]["ratio"]))
    print(f"written {args.out}")


@contextmanager
def _dir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    yield path


if __name__ == "__main__":
    main()
