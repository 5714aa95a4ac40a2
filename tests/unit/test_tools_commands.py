"""The commands a user runs: each a console script of the virtual environment, working from
any directory, reading the local stack's data where the server keeps it; the environment
gains one importable name of ours beyond what it had (tools/commands/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from local import settings
from shared import bootstrap, config
from shared.adapters.audit_log import FileAuditSink
from tools import audit, commands

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["scripts"]
BIN = Path(sys.executable).parent
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _command_environment(**variables: str) -> dict[str, str]:
    """This process's environment without what would point a command at the checkout or at
    another stack's data."""
    unset = ("PYTHONPATH", "DICOMWEB_DATA_DIR", "LOCAL_STACK_STATE")
    return {**{k: v for k, v in os.environ.items() if k not in unset}, **variables}


def _run(name: str, *args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    script = BIN / name
    assert script.is_file(), f"no {script}: reinstall with pip install -e '.[dev]' (make does)"
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env=_command_environment(**variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _audit_trail(data_dir: Path) -> None:
    """Two requests recorded by the embedded backend's sink, one of them naming STUDY."""
    sink = FileAuditSink(data_dir / bootstrap.AUDIT_FILE)
    for study in (STUDY, "1.2.826.0.1.3680043.8.498.2"):
        sink.write({"audit": True, "keyId": "0a1b2c3d", "studies": [study], "status": 200})


def test_every_console_script_runs_its_command_through_the_launcher() -> None:
    # GIVEN the console scripts of pyproject.toml and the launcher's commands
    # THEN they are the same set, each script naming the launcher's function for it
    assert set(SCRIPTS) == set(commands.COMMANDS)
    for name, target in SCRIPTS.items():
        package, _, function = target.partition(":")
        assert package == "o3_dpacs", f"{name} runs {target}, not the launcher"
        assert (getattr(commands, function).__doc__ or "").startswith(f"``{name}``")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_answers_help_from_any_directory(name: str, tmp_path: Path) -> None:
    # GIVEN a directory outside the checkout, and no PYTHONPATH
    # WHEN the console script is asked for its help there
    done = _run(name, "--help", cwd=tmp_path)
    # THEN it runs its command, which names itself as the user typed it
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {name}"), done.stdout[:200]


def test_the_environment_gains_one_importable_name_of_ours(tmp_path: Path) -> None:
    # GIVEN the virtual environment's Python, started outside the checkout
    probe = (
        "import importlib.util as u; "
        "print(' '.join(n for n in ('o3_dpacs', 'shared', 'local', 'tools', 'functions', "
        "'bench') if u.find_spec(n)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=_command_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # THEN the launcher is importable and no generic name of the checkout is
    assert done.stdout.split() == ["o3_dpacs"]


def test_the_server_and_the_commands_default_to_the_checkouts_data() -> None:
    assert settings.data_dir({}) == ROOT / ".local-data"
    assert settings.state_file({}) == ROOT / ".local-stack.json"
    assert settings.data_dir({"DICOMWEB_DATA_DIR": "/srv/pacs"}) == Path("/srv/pacs")
    assert settings.state_file({"LOCAL_STACK_STATE": "/run/s.json"}) == Path("/run/s.json")


def test_audit_reads_the_trail_of_the_data_directory_the_environment_names(
    tmp_path: Path,
) -> None:
    # GIVEN a server's data directory named by DICOMWEB_DATA_DIR, elsewhere than .local-data
    data_dir = tmp_path / "pacs-data"
    _audit_trail(data_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # WHEN dicomweb-audit runs from another directory with that environment
    done = _run(
        "dicomweb-audit", "--study", STUDY, "--json", cwd=elsewhere, DICOMWEB_DATA_DIR=str(data_dir)
    )
    # THEN it reads that directory's trail: the one record naming the study
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["studies"] for line in done.stdout.splitlines()] == [[STUDY]]


def test_audit_defaults_to_the_data_directory_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _audit_trail(tmp_path)
    monkeypatch.setenv("DICOMWEB_DATA_DIR", str(tmp_path))
    assert audit.main(["--study", STUDY]) == 0
    assert "0a1b2c3d" in capsys.readouterr().out


def test_apikeys_local_finds_the_stack_named_by_local_stack_state(tmp_path: Path) -> None:
    # GIVEN a running stack's state file at LOCAL_STACK_STATE (the local backend's data)
    data_dir = tmp_path / "data"
    state_file = tmp_path / "state.json"
    state_file.write_text(
        json.dumps({"storage": "local", "data_dir": str(data_dir)}), encoding="utf-8"
    )
    # WHEN dicomweb-apikeys --local creates a key, from another directory
    done = _run(
        "dicomweb-apikeys",
        "--local",
        "create",
        "--label",
        "from elsewhere",
        cwd=tmp_path,
        LOCAL_STACK_STATE=str(state_file),
    )
    # THEN the key is in that stack's key store
    assert done.returncode == 0, done.stderr
    local = config.Settings(storage="local", data_dir=str(data_dir))
    assert [e.label for e in bootstrap.build(local).key_store.load()] == ["from elsewhere"]
