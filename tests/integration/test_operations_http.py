"""Metadata update and patient merge over HTTP on the local stack, as an Azure client sends
them: ``POST rs/studies/$bulkUpdate`` answers 202 with the operation's href, which answers
its status until the Operations function (woken by the marker's object event) has given
every instance a new version; QIDO and WADO answer the new values at once, and admins read
the originals byte for byte. ``dicomweb-lifecycle merge`` does the same in one command."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from tests.support import dicom_files
from tools import audit as audit_tool
from tools import lifecycle as lifecycle_tool

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.7800"
RIGHT_STUDY = "1.2.826.0.1.3680043.8.498.7801"
WRONG, RIGHT = "UPDATE-HTTP-WRONG", "UPDATE-HTTP-RIGHT"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str]]:
    """A stack whose own key has every scope, plus a ``read``+``store`` key."""
    data_dir: Path = tmp_path_factory.mktemp("operations")
    plain, plain_entry = keys.generate("viewer", (keys.READ, keys.STORE))
    FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).add(plain_entry)
    admin, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with LocalStack(port=0, api_key=admin, data_dir=data_dir) as running:
        yield running, plain


def _h(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": key, **more}


def _stow(stack: LocalStack, data: bytes) -> None:
    reply = requests.post(
        f"{stack.base_url}/rs/studies",
        data=data,
        headers=_h(stack.api_key, **{"Content-Type": "application/dicom"}),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text


def _qido(stack: LocalStack, path: str, **params: str) -> list[dict[str, Any]]:
    reply = requests.get(
        f"{stack.base_url}/rs/{path}", params=params, headers=_h(stack.api_key), timeout=30
    )
    assert reply.status_code in (200, 204), reply.text
    return reply.json() if reply.status_code == 200 else []


def _wait(stack: LocalStack, href: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = requests.get(href, headers=_h(stack.api_key), timeout=30)
        assert reply.status_code == 200, reply.text
        if reply.json()["status"] != "running":
            return dict(reply.json())
        time.sleep(0.2)
    raise AssertionError("the operation did not finish within 60 s")


@pytest.fixture(scope="module")
def sent(keyed: tuple[LocalStack, str]) -> dict[str, bytes]:
    stack, _ = keyed
    datas = [
        dicom_files.with_new_uids(
            study=STUDY,
            series=f"{STUDY}.1",
            patient_id=WRONG,
            PatientName="Wrong^Http",
            InstanceNumber=n,
        )
        for n in (1, 2)
    ]
    datas.append(
        dicom_files.with_new_uids(study=RIGHT_STUDY, patient_id=RIGHT, PatientName="Right^Http")
    )
    found = {}
    for data in datas:
        _stow(stack, data)
        found[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = data
    return found


def test_only_admin_keys_update(keyed: tuple[LocalStack, str], sent: dict[str, bytes]) -> None:
    stack, plain = keyed
    body = {"studyInstanceUids": [STUDY], "changeDataset": {}}
    for key in (plain,):  # a store key passes the gateway (POST rs/studies/*): the function
        reply = requests.post(
            f"{stack.base_url}/rs/studies/$bulkUpdate", json=body, headers=_h(key), timeout=30
        )
        assert reply.status_code == 403, reply.text
    reply = requests.get(
        f"{stack.base_url}/operations/00000000-0000-7000-8000-000000000000",
        headers=_h(plain),
        timeout=30,
    )
    assert reply.status_code == 403


def test_an_update_answers_202_and_its_href_follows_it_to_success(
    keyed: tuple[LocalStack, str], sent: dict[str, bytes]
) -> None:
    stack, _ = keyed
    body = {
        "studyInstanceUids": [STUDY],
        "changeDataset": {"00081030": {"vr": "LO", "Value": ["UPDATED OVER HTTP"]}},
    }
    reply = requests.post(
        f"{stack.base_url}/rs/studies/$bulkUpdate",
        json=body,
        headers=_h(stack.api_key),
        timeout=30,
    )
    assert reply.status_code == 202, reply.text
    answer = reply.json()
    assert set(answer) == {"id", "href"}
    assert answer["href"] == f"{stack.base_url}/operations/{answer['id']}"
    status = _wait(stack, answer["href"])
    assert (status["status"], status["percentComplete"], status["errors"]) == ("succeeded", 100, [])
    (study,) = _qido(stack, "studies", StudyDescription="*OVER HTTP*")
    assert study["0020000D"]["Value"] == [STUDY]
    reply = requests.get(
        f"{stack.base_url}/rs/studies/{STUDY}/metadata", headers=_h(stack.api_key), timeout=30
    )
    assert {d["00081030"]["Value"][0] for d in reply.json()} == {"UPDATED OVER HTTP"}


def test_a_wrong_patient_study_is_merged_in_one_command_and_the_originals_are_kept(
    keyed: tuple[LocalStack, str], sent: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, _ = keyed
    code = lifecycle_tool.main(
        ["--url", stack.base_url, "--key", stack.api_key, "merge", STUDY, "--patient", RIGHT]
    )
    assert code == 0, capsys.readouterr().out
    assert _qido(stack, "studies", PatientID=WRONG) == []
    assert {s["0020000D"]["Value"][0] for s in _qido(stack, "studies", PatientID=RIGHT)} == {
        STUDY,
        RIGHT_STUDY,
    }
    for sop, original in sent.items():
        if pydicom.dcmread(io.BytesIO(original)).StudyInstanceUID != STUDY:
            continue
        path = f"studies/{STUDY}/series/{STUDY}.1/instances/{sop}"
        reply = requests.get(
            f"{stack.base_url}/rs/{path}",
            headers=_h(stack.api_key, Accept='multipart/related; type="application/dicom"'),
            timeout=30,
        )
        assert reply.status_code == 200
        assert b"Right^Http" in reply.content and b"Wrong^Http" not in reply.content
        listed = requests.get(
            f"{stack.base_url}/versions/{path}", headers=_h(stack.api_key), timeout=30
        ).json()["versions"]
        # The current version, then the replaced ones (the merge's, and the update's when
        # the test before it ran on this worker's stack), newest first.
        assert [v["current"] for v in listed] == [True] + [False] * (len(listed) - 1)
        assert len(listed) >= 2
        first = listed[-1]["versionId"]
        reply = requests.get(
            f"{stack.base_url}/versions/{path}/{first}", headers=_h(stack.api_key), timeout=30
        )
        assert reply.status_code == 200
        assert reply.content == original  # the bytes received, byte for byte
    audit = (stack.data_dir / "audit.jsonl").read_text()
    assert '"action": "U"' in audit or '"action":"U"' in audit
    assert "Right^Http" not in audit and RIGHT not in audit


def test_a_delete_is_audited_with_the_version_it_ends(
    keyed: tuple[LocalStack, str], sent: dict[str, bytes]
) -> None:
    stack, _ = keyed
    (sop, data) = next(
        (s, d)
        for s, d in sent.items()
        if pydicom.dcmread(io.BytesIO(d)).StudyInstanceUID == RIGHT_STUDY
    )
    series = str(pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID)
    reply = requests.delete(
        f"{stack.base_url}/rs/studies/{RIGHT_STUDY}/series/{series}/instances/{sop}",
        headers=_h(stack.api_key),
        timeout=30,
    )
    assert reply.status_code == 204, reply.text
    records = list(audit_tool.records(stack.data_dir / "audit.jsonl", RIGHT_STUDY))
    (deleted,) = [r for r in records if r["action"] == "D"]
    assert deleted["versions"] == [
        {"instance": sop, "before": hashlib.sha256(data).hexdigest(), "after": ""}
    ]

    reply = requests.post(
        f"{stack.base_url}/rs/restore/studies/{RIGHT_STUDY}/series/{series}/instances/{sop}",
        headers=_h(stack.api_key),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    records = list(audit_tool.records(stack.data_dir / "audit.jsonl", RIGHT_STUDY))
    (restored,) = [r for r in records if "/rs/restore/" in r["route"]]
    assert restored["versions"] == [
        {"instance": sop, "before": "", "after": hashlib.sha256(data).hexdigest()}
    ]
