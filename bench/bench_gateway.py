"""The DIMSE gateway side by side with Orthanc: ``python -m bench.bench_gateway``
(``make bench-gateway``; installs Orthanc from Debian when missing, as root).

The same data goes into both: one study of :data:`MOVE_INSTANCES` CT slices (CT_small.dcm,
39 KB, fresh UIDs) and :data:`OTHER_STUDIES` studies of one slice. The gateway runs as
``python -m tools.gateway`` in front of ``python -m local`` (embedded backend); Orthanc 1.10
answers DIMSE itself. A pynetdicom SCU measures, for both, in the same run:

Every side sends each PDU at once (TCP_NODELAY): the SCU here, the gateway always, and
Orthanc and ``storescp`` (dcmtk) through ``TCP_NODELAY=1`` in their environment; without
it a DIMSE message (a command PDU, then a data set PDU) waits for the peer's delayed
acknowledgement (40 ms on Linux).

* C-FIND, Study Root, STUDY level by PatientID (one match): the p50 over :data:`REPEATS`
  queries, each on an association of its own (associate, find, release: what a
  workstation does), and the p50 of the C-FIND alone on an open association;
* C-MOVE of the whole study to dcmtk's ``storescp --ignore`` (acknowledges, writes
  nothing): instances/s from the C-MOVE request to its final response (completed
  sub-operations checked), the median of :data:`MOVES` moves.

Results: ``bench/results/gateway.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from bench.bench_peer import ensure_orthanc
from shared import keys
from tests.support import dicom_files
from tests.support import orthanc as peer
from tests.support.debian_tools import require_debian_tool
from tests.support.gateway_run import gateway, stow
from tests.support.served import free_port, served

MOVE_INSTANCES, OTHER_STUDIES = 300, 50
REPEATS, MOVES = 40, 3
SCU, RECEIVER = "BENCHSCU", "BENCHRECV"
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Data:
    study: str
    patient_id: str
    files: list[bytes]


def make_data() -> Data:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = [
        dicom_files.with_new_uids(
            "CT_small.dcm",
            study=study,
            series=series,
            patient_id="GWBENCH-MOVE",
            PatientName="Move^Bench",
            InstanceNumber=n + 1,
        )
        for n in range(MOVE_INSTANCES)
    ]
    files += [
        dicom_files.with_new_uids(
            "CT_small.dcm", patient_id=f"GWBENCH-{n:03d}", PatientName=f"Find^Bench{n:03d}"
        )
        for n in range(OTHER_STUDIES)
    ]
    return Data(study, "GWBENCH-017", files)


@dataclass(frozen=True)
class Peer:
    name: str
    ae_title: str
    port: int


class Receiver:
    """dcmtk's ``storescp --ignore`` (a process of its own, C++): acknowledges every C-STORE,
    writes nothing, so the figure is the sender's."""

    def __init__(self, port: int) -> None:
        binary = require_debian_tool("storescp", "dcmtk")
        self.process = subprocess.Popen(
            [binary, "--ignore", "-aet", RECEIVER, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _nodelay(event: Any) -> None:
    """The workstation sends each PDU at once, as dcmtk does (TCP_NODELAY)."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


HANDLERS = [(evt.EVT_CONN_OPEN, _nodelay)]


def _scu() -> AE:
    ae = AE(ae_title=SCU)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    return ae


def _query(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = ""
    ds.StudyDate = ""
    ds.PatientName = ""
    return ds


def find_p50(target: Peer, patient_id: str) -> dict[str, float]:
    """C-FIND latencies in ms: with and without the association around it."""
    ae = _scu()
    whole, alone = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        assoc = ae.associate(
            "127.0.0.1", target.port, ae_title=target.ae_title, evt_handlers=HANDLERS
        )
        inner = time.perf_counter()
        answers = list(
            assoc.send_c_find(_query(patient_id), StudyRootQueryRetrieveInformationModelFind)
        )
        alone.append(time.perf_counter() - inner)
        assoc.release()
        whole.append(time.perf_counter() - started)
        if len(answers) != 2 or int(answers[-1][0].Status) != 0:
            raise RuntimeError(f"{target.name}: C-FIND answered {[a[0] for a in answers]}")
    return {
        "find_p50_ms": round(statistics.median(whole) * 1000, 2),
        "find_only_p50_ms": round(statistics.median(alone) * 1000, 2),
    }


def move_rate(target: Peer, study: str) -> dict[str, float]:
    """C-MOVE of the study: instances/s (median of MOVES)."""
    ae = _scu()
    rates = []
    for _ in range(MOVES):
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        started = time.perf_counter()
        assoc = ae.associate(
            "127.0.0.1", target.port, ae_title=target.ae_title, evt_handlers=HANDLERS
        )
        answers = list(
            assoc.send_c_move(identifier, RECEIVER, StudyRootQueryRetrieveInformationModelMove)
        )
        assoc.release()
        elapsed = time.perf_counter() - started
        final = answers[-1][0]
        done = int(final.get("NumberOfCompletedSuboperations", 0))
        if int(final.Status) != 0 or done != MOVE_INSTANCES:
            raise RuntimeError(f"{target.name}: C-MOVE {final}")
        rates.append(MOVE_INSTANCES / elapsed)
    return {"move_instances_per_s": round(statistics.median(rates), 1)}


@contextmanager
def ours(workdir: Path, data: Data, receiver_port: int) -> Iterator[Peer]:
    key, _ = keys.generate("gateway-bench")
    (workdir / "stack").mkdir()
    with served(workdir / "stack", key) as stack:
        stow(stack.base_url, key, data.files)
        port = free_port()
        with gateway(
            workdir,
            stack.base_url,
            key,
            port,
            workdir / "spool",
            allow=(SCU,),
            extra=["--destination", f"{RECEIVER}=127.0.0.1:{receiver_port}"],
        ):
            yield Peer("gateway", "GATEWAY", port)


@contextmanager
def orthanc(workdir: Path, data: Data, receiver_port: int) -> Iterator[Peer]:
    modalities = {
        "scu": [SCU, "127.0.0.1", free_port()],
        "receiver": [RECEIVER, "127.0.0.1", receiver_port],
    }
    with peer.running(
        workdir / "orthanc", ensure_orthanc(), config={"DicomModalities": modalities}
    ) as server:
        session = requests.Session()
        for body in data.files:
            session.post(f"{server.url}/instances", data=body, timeout=60).raise_for_status()
        yield Peer("Orthanc", "ORTHANC", server.dicom_port)


def run() -> dict[str, Any]:
    """Both sides; the figures and their ratios."""
    os.environ["TCP_NODELAY"] = "1"  # dcmtk (Orthanc, storescp) then sends PDUs at once too
    data = make_data()
    report: dict[str, Any] = {}
    receiver_port = free_port()
    receiver = Receiver(receiver_port)
    try:
        for name, start in (("orthanc", orthanc), ("gateway", ours)):
            with (
                tempfile.TemporaryDirectory() as folder,
                start(Path(folder), data, receiver_port) as target,
            ):
                find_p50(target, data.patient_id)  # warm up
                report[name] = {
                    **find_p50(target, data.patient_id),
                    **move_rate(target, data.study),
                }
                print(name, report[name], flush=True)
    finally:
        receiver.stop()
    mine, theirs = report["gateway"], report["orthanc"]
    report["ratios"] = {
        "find_p50": round(mine["find_p50_ms"] / theirs["find_p50_ms"], 2),
        "find_only_p50": round(mine["find_only_p50_ms"] / theirs["find_only_p50_ms"], 2),
        "move_rate": round(mine["move_instances_per_s"] / theirs["move_instances_per_s"], 2),
    }
    return report


def table(report: dict[str, Any]) -> str:
    mine, theirs, ratio = report["gateway"], report["orthanc"], report["ratios"]
    rows = [
        "| Measure | Orthanc 1.10 | gateway + archive | ratio | target |",
        "|---|---|---|---|---|",
        f"| C-FIND study level p50, with association (ms) | {theirs['find_p50_ms']} | "
        f"{mine['find_p50_ms']} | {ratio['find_p50']}x | <= 1.0x |",
        f"| C-FIND study level p50, C-FIND alone (ms) | {theirs['find_only_p50_ms']} | "
        f"{mine['find_only_p50_ms']} | {ratio['find_only_p50']}x | <= 1.0x |",
        f"| C-MOVE of {MOVE_INSTANCES} instances (instances/s) | "
        f"{theirs['move_instances_per_s']} | {mine['move_instances_per_s']} | "
        f"{ratio['move_rate']}x | >= 0.8x |",
    ]
    return "\n".join(rows)


def main() -> None:
    report = run()
    report["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
