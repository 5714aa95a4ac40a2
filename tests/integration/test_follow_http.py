"""``dicomweb-follow`` against the local stack, as a user runs it: a script per change in
feed order, a script per stable study with its counts, and kill -9 in the middle of a run
followed by a restart that hands over every change (at least once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(port=0, data_dir=tmp_path_factory.mktemp("follow")) as running:
        yield running


def _store(running: LocalStack, *datas: bytes) -> None:
    boundary = new_boundary()
    stored = requests.post(
        f"{running.base_url}/stowRsListener/AE/studies",
        data=build_related([(d, "application/dicom") for d in datas], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Authorization": running.api_key,
        },
        timeout=60,
    )
    assert stored.status_code == 200, stored.text


def _hook(tmp_path: Path, delay_s: float = 0.0) -> tuple[Path, Path]:
    """A script appending each event's (id, type, study, counts) to a file."""
    out = tmp_path / "handled.jsonl"
    script = tmp_path / "on-event.py"
    script.write_text(
        "import json, os, sys, time\n"
        "event = json.load(sys.stdin)\n"
        f"time.sleep({delay_s})\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps([event['id'], os.environ['DICOM_EVENT'],"
        " os.environ['DICOM_STUDY_UID'], os.environ['DICOM_INSTANCE_COUNT']]) + '\\n')\n"
    )
    return script, out


def _follow(running: LocalStack, cursor: Path, script: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tools.follow",
        "--url",
        running.base_url,
        "--key",
        running.api_key,
        "--cursor",
        str(cursor),
        "--exec",
        f"{sys.executable} {script}",
        "--poll",
        "0.2",
        *options,
    ]


def _lines(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


def _latest(running: LocalStack) -> int:
    answer = requests.get(
        f"{running.base_url}/changefeed/latest",
        headers={"Authorization": running.api_key},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["Sequence"])


def test_a_script_per_change_then_per_stable_study(stack: LocalStack, tmp_path: Path) -> None:
    study = pydicom.uid.generate_uid()
    datas = [dicom_files.with_new_uids(study=study) for _ in range(3)]
    _store(stack, *datas)
    last = _latest(stack)
    script, out = _hook(tmp_path)
    cursor = tmp_path / "cursor.json"
    run = subprocess.run(
        [*_follow(stack, cursor, script), "--once"],
        cwd=CHECKOUT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    handled = _lines(out)
    assert [h[0] for h in handled] == [f"change-{n}" for n in range(1, last + 1)]
    assert [h[2] for h in handled][-3:] == [study] * 3
    assert json.loads(cursor.read_text())["sequence"] == last

    (tmp_path / "s").mkdir()
    stable_cursor = tmp_path / "stable.json"
    stable_script, stable_out = _hook(tmp_path / "s")
    options = ("--on", "stable", "--stable-seconds", "1", "--once")
    subprocess.run(
        _follow(stack, stable_cursor, stable_script, *options),
        cwd=CHECKOUT,
        timeout=120,
        check=True,
    )
    time.sleep(1.2)
    subprocess.run(
        _follow(stack, stable_cursor, stable_script, *options),
        cwd=CHECKOUT,
        timeout=120,
        check=True,
    )
    mine = [h for h in _lines(stable_out) if h[2] == study]
    assert mine == [[mine[0][0], "StudyStable", study, "3"]]


def test_kill_9_then_restart_hands_over_every_change(stack: LocalStack, tmp_path: Path) -> None:
    _store(stack, *(dicom_files.with_new_uids() for _ in range(12)))
    last = _latest(stack)
    script, out = _hook(tmp_path, delay_s=0.05)
    cursor = tmp_path / "cursor.json"
    follower = subprocess.Popen(
        _follow(stack, cursor, script), cwd=CHECKOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(_lines(out)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait(timeout=30)
    first_run = len(_lines(out))
    assert 5 <= first_run < last, "killed in the middle of the run"
    subprocess.run(
        [*_follow(stack, cursor, script), "--once"], cwd=CHECKOUT, timeout=120, check=True
    )
    ids = [h[0] for h in _lines(out)]
    expected = [f"change-{n}" for n in range(1, last + 1)]
    assert list(dict.fromkeys(ids)) == expected  # every one, first seen in order
    assert len(ids) - len(expected) <= 1  # at most the one in flight, twice
