"""``dicomweb-follow`` (tools/follow.py) over a fake archive: every change handed over in
order, resumed after a crash at any point with nothing lost (at least once), stable studies
on a fake clock, a failing handler retried and then left for the next start, real commands
and a signed webhook."""

from __future__ import annotations

import contextlib
import http.server
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import follow

STUDIES = ("1.2.826.0.1.3680043.8.498.2341", "1.2.826.0.1.3680043.8.498.2342")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeArchive:
    """The feed as a list; studies with their counts (absent: deleted)."""

    def __init__(self, n: int = 0) -> None:
        self.entries: list[dict[str, Any]] = []
        self.studies: dict[str, tuple[int, int]] = {}
        for _ in range(n):
            self.add(STUDIES[len(self.entries) % 2])

    def add(self, study: str, action: str = "create") -> None:
        n = len(self.entries) + 1
        self.entries.append(
            {
                "Sequence": n,
                "StudyInstanceUID": study,
                "SeriesInstanceUID": f"{study}.1",
                "SOPInstanceUID": f"{study}.1.{n}",
                "Action": action,
                "Timestamp": _now(),
                "State": "current",
            }
        )
        series, instances = self.studies.get(study, (1, 0))
        self.studies[study] = (series, instances + 1)

    def feed(self, offset: int, limit: int = follow.PAGE) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["Sequence"] > offset][:limit]

    def counts(self, study_uid: str) -> tuple[int, int] | None:
        return self.studies.get(study_uid)


class Crash(BaseException):
    """A kill: not caught by the follower."""


class Recorder:
    def __init__(self, crash_at: int | None = None, fail: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.calls = 0
        self.crash_at = crash_at
        self.fail = fail

    def __call__(self, event: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        if self.fail:
            self.fail -= 1
            raise follow.HandlerFailed("refused")
        self.events.append(event)


def _follower(archive: Any, path: Path, handle: Any, **options: Any) -> follow.Follower:
    return follow.Follower(
        archive=archive,
        cursor=follow.Cursor.load(path, options.pop("from_start", False)),
        handle=handle,
        sleep=lambda _: None,
        **options,
    )


def test_every_change_in_order_then_nothing_more(tmp_path: Path) -> None:
    archive, recorder = FakeArchive(250), Recorder()
    _follower(archive, tmp_path / "c.json", recorder).run(0, True, lambda: False)
    assert [e["detail"]["Sequence"] for e in recorder.events] == list(range(1, 251))
    assert recorder.events[0]["detail-type"] == "DICOM Change"
    again = Recorder()
    _follower(archive, tmp_path / "c.json", again).run(0, True, lambda: False)
    assert again.events == []
    archive.add(STUDIES[0])
    _follower(archive, tmp_path / "c.json", again).run(0, True, lambda: False)
    assert [e["detail"]["Sequence"] for e in again.events] == [251]
    replay = Recorder()
    _follower(archive, tmp_path / "c.json", replay, from_start=True).run(0, True, lambda: False)
    assert len(replay.events) == 251


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.integers(1, 150), crashes=st.lists(st.integers(1, 160), max_size=4))
def test_resumes_after_crashes_without_loss(
    tmp_path: Path, entries: int, crashes: list[int]
) -> None:
    """Killed at any event, any number of times: the events handed over, across starts,
    hold every entry, first seen in order, each at most once more than once per crash."""
    archive = FakeArchive(entries)
    path = tmp_path / f"cursor-{entries}-{'-'.join(map(str, crashes))}.json"
    path.unlink(missing_ok=True)
    handed: list[int] = []
    for crash_at in [*crashes, None]:
        recorder = Recorder(crash_at)
        with contextlib.suppress(Crash):
            _follower(archive, path, recorder).run(0, True, lambda: False)
        handed += [e["detail"]["Sequence"] for e in recorder.events]
    assert sorted(set(handed)) == list(range(1, entries + 1))
    firsts = list(dict.fromkeys(handed))
    assert firsts == list(range(1, entries + 1))
    assert len(handed) - entries <= len(crashes)


def test_stable_studies_on_a_fake_clock(tmp_path: Path) -> None:
    archive, recorder = FakeArchive(3), Recorder()
    clock = {"now": datetime.now(UTC)}
    follower = _follower(
        archive, tmp_path / "c.json", recorder, on="stable", stable_s=60, now=lambda: clock["now"]
    )
    follower.step()
    assert recorder.events == []
    clock["now"] += timedelta(seconds=61)
    follower.step()
    # the longest quiet first: the second study's last change (2) is before the first's (3)
    assert [e["detail"]["StudyInstanceUID"] for e in recorder.events] == [STUDIES[1], STUDIES[0]]
    by_study = {e["detail"]["StudyInstanceUID"]: e["detail"] for e in recorder.events}
    assert by_study[STUDIES[0]]["NumberOfStudyRelatedInstances"] == 2
    assert by_study[STUDIES[0]]["Sequence"] == 3
    assert all(e["detail-type"] == "StudyStable" for e in recorder.events)
    follower.step()
    assert len(recorder.events) == 2  # once per quiet period
    # the cursor keeps waiting studies across starts
    archive.add(STUDIES[1])
    _follower(archive, tmp_path / "c.json", Recorder(), on="stable").step()
    saved = json.loads((tmp_path / "c.json").read_text())
    assert list(saved["studies"]) == [STUDIES[1]]


def test_a_deleted_study_is_not_announced(tmp_path: Path) -> None:
    archive, recorder = FakeArchive(1), Recorder()
    del archive.studies[STUDIES[0]]
    clock = datetime.now(UTC) + timedelta(seconds=400)
    _follower(archive, tmp_path / "c.json", recorder, on="stable", now=lambda: clock).step()
    assert recorder.events == []


def test_a_refused_event_is_tried_again_then_left_for_the_next_start(tmp_path: Path) -> None:
    archive = FakeArchive(3)
    recorder = Recorder(fail=2)
    _follower(archive, tmp_path / "c.json", recorder, attempts=3).run(0, True, lambda: False)
    assert [e["detail"]["Sequence"] for e in recorder.events] == [1, 2, 3]
    stubborn = Recorder(fail=10)
    archive.add(STUDIES[0])
    with pytest.raises(follow.HandlerFailed):
        _follower(archive, tmp_path / "c.json", stubborn, attempts=3).run(0, True, lambda: False)
    assert json.loads((tmp_path / "c.json").read_text())["sequence"] == 3
    later = Recorder()
    _follower(archive, tmp_path / "c.json", later).run(0, True, lambda: False)
    assert [e["detail"]["Sequence"] for e in later.events] == [4]


def test_a_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "event = json.load(sys.stdin)\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps([event['id'], os.environ['DICOM_SEQUENCE'],"
        " os.environ['DICOM_STUDY_UID'], os.environ['DICOM_EVENT']]) + '\\n')\n"
        "sys.exit(3 if os.environ['DICOM_SEQUENCE'] == '99' else 0)\n"
    )
    handle = follow.command_handler(f"{sys.executable} {script}")
    archive = FakeArchive(2)
    _follower(archive, tmp_path / "c.json", handle).run(0, True, lambda: False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [
        ["change-1", "1", STUDIES[0], "DICOM Change"],
        ["change-2", "2", STUDIES[1], "DICOM Change"],
    ]
    failing = follow.command_handler(f"{sys.executable} -c 'import sys; sys.exit(4)'")
    with pytest.raises(follow.HandlerFailed, match="exited 4"):
        failing(follow.change_event(archive.entries[0]))
    with pytest.raises(follow.HandlerFailed):
        follow.command_handler(str(tmp_path / "no-such-command"))(
            follow.change_event(archive.entries[0])
        )


def test_a_webhook_gets_a_signed_post(tmp_path: Path) -> None:
    received: list[tuple[bytes, str]] = []
    answers = [500, 200, 200]

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0)
            if status == 200:
                received.append((body, self.headers["X-O3-Signature"]))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        handle = follow.webhook_handler(url, b"s3cret")
        _follower(FakeArchive(2), tmp_path / "c.json", handle).run(0, True, lambda: False)
    finally:
        server.shutdown()
    assert [json.loads(body)["id"] for body, _ in received] == ["change-1", "change-2"]
    for body, signature in received:
        assert signature == "sha256=" + follow.sign(b"s3cret", body)


def test_the_command_line_needs_a_key_and_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        follow.main(["--url", "http://127.0.0.1:9"])
    assert follow.main(["--url", "http://127.0.0.1:9", "--key", "", "--exec", "true"]) == 2
    code = follow.main(["--url", "http://127.0.0.1:9", "--key", "k", "--exec", "true", "--once"])
    assert code == 1
    assert "cannot be reached" in capsys.readouterr().err
