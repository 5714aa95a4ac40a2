"""Hostile connections against ``dicomweb-gateway``: ``python -m bench.fuzz_gateway --count 2000``.

Starts the local stack (``python -m local``) and the gateway, each a process of its own
(``python -m tools.gateway --bind 127.0.0.1 --timeout 2``, no ``--allow``), stores one
instance normally to warm it up, then opens ``count`` hostile connections over raw sockets,
``concurrency`` at a time: the seeded cases of ``tests/support/gateway_peer.py`` (random
bytes, truncated and mutated association requests, huge declared lengths, unknown PDU types,
odd AE titles, P-DATA or A-RELEASE before association, a tenth of them left open and silent),
and every 50th a declared 2 GB PDU followed by as many zeros as the gateway takes. Then one
more normal C-STORE, which must reach the archive.

Reports connections sent, gateway crashes (the process died, or an exception escaped one of
its threads), connections neither answered nor closed within ``timeout + 3`` s, the slowest
answer, the gateway's peak RSS growth over the warmed-up process (VmHWM, reset after warm-up)
and its growth once settled, threads, open descriptors and received data set files left
(in the spool's ``receiving/`` or the gateway's private ``TMPDIR``), and whether the last
instance was forwarded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import requests

TIMEOUT_S = 2.0
FLOOD_EVERY = 50
FLOOD_UP_TO = 64 << 20


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM", "Threads"}:
            found[name] = int(value.split()[0])
    return found


def _fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def _start_gateway(workdir: Path, url: str, key: str, port: int) -> subprocess.Popen[bytes]:
    log = workdir / "gateway.log"
    (workdir / "tmp").mkdir()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.gateway",
                *("--url", url, "--ae-title", "GATEWAY", "--bind", "127.0.0.1"),
                *("--port", str(port), "--spool", str(workdir / "spool")),
                *("--timeout", str(TIMEOUT_S), "--retries", "2"),
            ],
            env={**os.environ, "DICOMWEB_API_KEY": key, "TMPDIR": str(workdir / "tmp")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b"listening on" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the gateway did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def _store(port: int, data: bytes) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    requestor = AE(ae_title="MODALITY")
    requestor.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = requestor.associate("127.0.0.1", port, ae_title="GATEWAY")
    if not assoc.is_established:
        return -1
    try:
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
    finally:
        assoc.release()
    return int(status.Status) if "Status" in status else -1


def _forwarded(base_url: str, key: str, data: bytes, spool: Path, wait: float = 60) -> bool:
    """The instance left the spool and the archive returns it."""
    deadline = time.monotonic() + wait
    while list((spool / "ready").rglob("*.dcm")) and time.monotonic() < deadline:
        time.sleep(0.2)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    reply = requests.get(
        f"{base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
            "contentType": "application/dicom",
        },
        headers={"Authorization": key},
        timeout=60,
    )
    return reply.status_code == 200


def _crashes(log: Path) -> list[str]:
    """Exceptions that escaped a gateway thread (Python prints "Exception in thread"), each
    with the start of its traceback."""
    text = log.read_text(errors="replace")
    found, start = [], text.find("Exception in thread")
    while start >= 0:
        found.append(text[start : start + 2000])
        start = text.find("Exception in thread", start + 1)
    return found


Result = tuple[str, float, bool, int]  # kind, seconds, answered or closed, bytes taken


def _hostile(port: int, count: int, seed: int, concurrency: int) -> list[Result]:
    """Send the connections, ``concurrency`` at a time."""
    from tests.support.gateway_peer import flood, hostile_case

    rng = random.Random(seed)
    cases = [hostile_case(rng) for _ in range(count)]

    def one(number: int) -> Result:
        if number % FLOOD_EVERY == FLOOD_EVERY - 1:
            started = time.monotonic()
            taken = flood(port, 0x01 if number % 2 else 0x04, FLOOD_UP_TO)
            return "flood-2GB", time.monotonic() - started, True, taken
        case = cases[number]
        answer = case.run(port, wait=TIMEOUT_S + 3.0)
        return case.kind, answer.seconds, answer.ended, 0

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


class _Sampler:
    """The RSS of a process every 0.2 s, in a thread, between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.2):
            try:
                self.samples.append(_status(self.pid)["VmRSS"])
            except OSError:
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """The peak (kB): the highest sample or the kernel's high-water mark."""
        self._done.set()
        self._thread.join()
        return max([_status(self.pid)["VmHWM"], *self.samples])


def run(count: int, seed: int = 0, *, concurrency: int = 8) -> dict[str, Any]:
    """``count`` hostile connections against a fresh gateway; the counts (see module doc)."""
    from shared import keys
    from tests.support import dicom_files
    from tests.support.served import free_port, served

    key, _ = keys.generate("bench-fuzz-gateway")
    with tempfile.TemporaryDirectory(prefix="fuzz-gateway-") as scratch:
        workdir = Path(scratch)
        (workdir / "stack").mkdir()
        with served(workdir / "stack", key) as stack:
            port = free_port()
            gateway = _start_gateway(workdir, stack.base_url, key, port)
            try:
                warm = _store(port, dicom_files.with_new_uids("CT_small.dcm"))
                time.sleep(1.0)
                Path(f"/proc/{gateway.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
                before, fds_before = _status(gateway.pid), _fds(gateway.pid)
                sampler = _Sampler(gateway.pid)
                sampler.start()
                started = time.monotonic()
                results = _hostile(port, count, seed, concurrency)
                wall = time.monotonic() - started
                peak = sampler.stop()
                time.sleep(TIMEOUT_S + 1.0)  # let the last connections' threads end
                after, fds_after = _status(gateway.pid), _fds(gateway.pid)
                last = dicom_files.with_new_uids("CT_small.dcm")
                last_status = _store(port, last)
                forwarded = last_status == 0 and _forwarded(
                    stack.base_url, key, last, workdir / "spool"
                )
                alive = gateway.poll() is None
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
        crashes = _crashes(workdir / "gateway.log")
        partial_files = sum(  # data sets pynetdicom received, left behind
            1
            for folder in (workdir / "tmp", workdir / "spool" / "receiving")
            for _ in folder.iterdir()
        )
    slowest = max(results, key=lambda r: r[1])
    by_kind: dict[str, int] = {}
    for kind, *_ in results:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {
        "sent": count,
        "crashed": (0 if alive else 1) + len(crashes),
        "no_answer": sum(not ended for _, _, ended, _ in results),
        "max_seconds": round(slowest[1], 2),
        "slowest_kind": slowest[0],
        "peak_rss_growth_mb": round((peak - before["VmRSS"]) / 1024, 1),
        "settled_rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1),
        "rss_before_mb": round(before["VmRSS"] / 1024, 1),
        "flood_max_bytes_taken": max((r[3] for r in results if r[0] == "flood-2GB"), default=0),
        "threads_before_after": [before["Threads"], after["Threads"]],
        "partial_files_left": partial_files,
        "open_fds_before_after": [fds_before, fds_after],
        "warm_up_store_status": warm,
        "final_store_status": last_status,
        "final_store_forwarded": forwarded,
        "by_kind": dict(sorted(by_kind.items())),
        "timeout_s": TIMEOUT_S,
        "concurrency": concurrency,
        "wall_s": round(wall, 1),
        "crash_examples": crashes[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="hostile connections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8, help="connections at a time")
    args = parser.parse_args()
    print(json.dumps(run(args.count, args.seed, concurrency=args.concurrency), indent=2))


if __name__ == "__main__":
    main()
