"""The embedded backend keeps what it acknowledged: across a restart, and across kill -9.

``python -m local`` runs as a process of its own over a data directory. A study stored, the
server stopped and started again, is still there byte for byte. Four clients store instances
concurrently while the server is killed with SIGKILL; after a restart, every instance that
got a 200 is retrievable byte-identical and counted once, every index entry has its file,
and the counters agree with the entries.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests

from shared import keys
from tests.support import dicom_files
from tests.support.served import Served, served

pytestmark = pytest.mark.integration

MULTIPART = 'multipart/related; type="application/dicom"'


def _stow(stack: Served, data: bytes) -> int:
    response = requests.post(
        f"{stack.base_url}/stowRsListener/DURABLE/studies",
        data=data,
        headers={"Authorization": stack.api_key, "Content-Type": "application/dicom"},
        timeout=30,
    )
    return response.status_code


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _instance(stack: Served, data: bytes) -> bytes:
    study, series, sop = _uids(data)
    response = requests.get(
        f"{stack.base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": study,
            "seriesUID": series,
            "objectUID": sop,
            "contentType": "application/dicom",
        },
        headers={"Authorization": stack.api_key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.content


def _study_count(stack: Served, study: str) -> int:
    response = requests.get(
        f"{stack.base_url}/qido/DURABLE/studies",
        params={"StudyInstanceUID": study, "includefield": "NumberOfStudyRelatedInstances"},
        headers={"Authorization": stack.api_key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (found,) = response.json()
    return int(found["00201208"]["Value"][0])


def _instances_listed(stack: Served, study: str) -> list[str]:
    response = requests.get(
        f"{stack.base_url}/qido/DURABLE/studies/{study}/instances",
        params={"limit": "1000"},
        headers={"Authorization": stack.api_key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [d["00080018"]["Value"][0] for d in response.json()]


def _feed(stack: Served) -> list[dict[str, object]]:
    """The whole change feed, page by page."""
    entries: list[dict[str, object]] = []
    while True:
        offset = int(str(entries[-1]["Sequence"])) if entries else 0
        page = requests.get(
            f"{stack.base_url}/changefeed",
            params={"offset": offset, "limit": 100, "includeMetadata": "false"},
            headers={"Authorization": stack.api_key},
            timeout=60,
        )
        assert page.status_code == 200, page.text
        if not page.json():
            return entries
        entries += page.json()


def _children(pid: int) -> list[int]:
    """The processes ``pid`` forked (its API workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        found += [int(child) for child in text]
    return found


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Until every process has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                break
            if state in ("Z", "X"):
                break
            assert time.monotonic() < deadline, f"worker {pid} did not exit"
            time.sleep(0.05)


def test_a_study_survives_a_restart(tmp_path: Path) -> None:
    key, _ = keys.generate("durable")
    study = "1.2.826.0.1.3680043.8.498.7001"
    datas = [dicom_files.with_new_uids(study=study) for _ in range(3)]
    with served(tmp_path, key) as stack:
        assert [_stow(stack, d) for d in datas] == [200, 200, 200]
        stack.process.send_signal(signal.SIGTERM)
        assert stack.process.wait(timeout=30) == 0
    with served(tmp_path, key) as stack:
        assert _study_count(stack, study) == 3
        assert all(_instance(stack, d) == d for d in datas)
        assert _stow(stack, datas[0]) == 200  # an identical re-send: counted once
        assert _study_count(stack, study) == 3


def test_kill_9_during_four_concurrent_stow_streams_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    key, _ = keys.generate("durable")
    study = "1.2.826.0.1.3680043.8.498.7002"
    streams = [
        [dicom_files.with_new_uids(study=study, series=f"{study}.{s}") for _ in range(40)]
        for s in range(4)
    ]
    acknowledged: list[bytes] = []
    lock = threading.Lock()

    def send(stack: Served, datas: list[bytes]) -> None:
        for data in datas:
            try:
                status = _stow(stack, data)
            except requests.RequestException:
                return  # the server is gone
            if status == 200:
                with lock:
                    acknowledged.append(data)

    with served(tmp_path, key) as stack:
        threads = [threading.Thread(target=send, args=(stack, s)) for s in streams]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = _children(stack.process.pid)
        os.kill(stack.process.pid, signal.SIGKILL)
        # The forked workers learn of their parent's death (SIGTERM) and may still finish a
        # request in flight: nothing is read back before every one of them is gone, or a
        # 200 could arrive after the listing it is checked against.
        _wait_gone(workers, timeout=60)
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert 30 <= len(acknowledged) < 160, "the kill should land mid-stream"
    with served(tmp_path, key) as stack:
        listed = _instances_listed(stack, study)
        assert len(listed) == len(set(listed)), "an instance is listed twice"
        assert _study_count(stack, study) == len(listed), "counters disagree with entries"
        for data in acknowledged:
            assert _uids(data)[2] in listed, "an acknowledged instance is missing"
            assert _instance(stack, data) == data
        every = {_uids(d)[2]: d for s in streams for d in s}
        for sop in listed:  # entries of instances whose reply was lost: whole too
            assert _instance(stack, every[sop]) == every[sop]
        # The change feed equals the index: one create per listed instance, none for an
        # instance not committed, numbered 1, 2, 3... without a gap.
        feed = _feed(stack)
        assert [e["Sequence"] for e in feed] == list(range(1, len(feed) + 1))
        assert {e["Action"] for e in feed} == {"create"}
        assert sorted(e["SOPInstanceUID"] for e in feed) == sorted(listed)


def _delete(stack: Served, study: str) -> int:
    return requests.delete(
        f"{stack.base_url}/rs/studies/{study}",
        headers={"Authorization": stack.api_key},
        timeout=120,
    ).status_code


def _kill_when(stack: Served, ready: Callable[[], bool], timeout: float = 60) -> None:
    """SIGKILL the stack and its workers (they run the handlers) once ``ready()``."""
    workers = _children(stack.process.pid)
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the delete never got there"
        time.sleep(0.0005)
    for pid in [*workers, stack.process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(workers, timeout=60)


@pytest.mark.parametrize("moment", ["began", "sweeping"])
def test_kill_9_during_the_delete_of_a_large_study_leaves_it_whole_or_gone(
    tmp_path: Path, moment: str
) -> None:
    """The index part of a DELETE is one transaction on SQLite: after a SIGKILL of the
    server and its workers mid-delete (as it begins: its job record written; or while it
    moves the objects) and a restart, the study is listed whole or not at all; the DELETE
    sent again finishes (its job record lets it sweep what the killed one left), and a
    restore brings every instance back byte for byte."""
    key, _ = keys.generate("durable")
    study = "1.2.826.0.1.3680043.8.498.7003"
    datas = [
        dicom_files.with_new_uids(study=study, series=f"{study}.{s}")
        for s in range(4)
        for _ in range(75)
    ]
    with served(tmp_path, key) as stack:
        assert all(_stow(stack, d) == 200 for d in datas)
        assert _study_count(stack, study) == len(datas)
        objects = stack.data_dir / "objects"
        job = objects / "jobs" / "delete" / f"{study}.json"
        kept = objects / "deleted" / study

        def ready() -> bool:
            if moment == "began":
                return job.exists()
            return kept.exists() and any(kept.rglob("*.dcm"))

        def send() -> None:
            with contextlib.suppress(requests.RequestException):
                _delete(stack, study)  # no answer: the server is killed under it

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        _kill_when(stack, ready)
        sender.join(timeout=120)
    with served(tmp_path, key) as stack:
        listed = _instances_listed(stack, study)
        assert len(listed) in (0, len(datas)), f"half-visible: {len(listed)} of {len(datas)}"
        if moment == "sweeping":
            assert not listed, "the objects move only once the index has committed"
        if listed:
            assert _study_count(stack, study) == len(datas)
            assert all(_instance(stack, d) == d for d in datas[:: len(datas) // 10])
        assert _delete(stack, study) == 204, "the DELETE sent again finishes the killed one"
        assert _instances_listed(stack, study) == []
        left = stack.data_dir / "objects" / "dicom" / study
        assert not [p for p in left.rglob("*") if p.is_file()], "objects left under dicom/"
        assert not job.exists()
        restored = requests.post(
            f"{stack.base_url}/rs/restore/studies/{study}",
            headers={"Authorization": stack.api_key},
            timeout=120,
        )
        assert restored.status_code == 200, restored.text
        assert restored.json()["restored"] == len(datas)
        assert _study_count(stack, study) == len(datas)
        assert all(_instance(stack, d) == d for d in datas)
