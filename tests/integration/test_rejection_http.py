"""IOCM rejection notes over HTTP on the local stack: a note sent by STOW-RS with a store
key hides what it names from every answer; a rejection of an instance not yet stored waits
for it; admins list rejections and restore; 113039 deletes once."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from tests.support import dicom_files, notes
from tests.support.served import Served, served
from tools import lifecycle as lifecycle_tool

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.7310"
SERIES = f"{STUDY}.1"
PATIENT = "IOCM-HTTP"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, str]]:
    """A stack of its own (``python -m local``, a process apart: no other stack of this
    worker shares its environment) whose own key has every scope, a ``read``+``store`` key
    and a ``read-deidentified`` key."""
    workdir: Path = tmp_path_factory.mktemp("iocm")
    plain, plain_entry = keys.generate("modality", (keys.READ, keys.STORE))
    deid, deid_entry = keys.generate("research", (keys.READ_DEIDENTIFIED,))
    for entry in (plain_entry, deid_entry):
        FileKeyStore(workdir / "data" / SECRETS_DIR / API_KEYS_FILE).add(entry)
    admin, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with served(workdir, admin) as running:
        yield running, plain, deid


def _new() -> bytes:
    return dicom_files.with_new_uids(study=STUDY, series=SERIES, PatientID=PATIENT)


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _stow(stack: Served, data: bytes, key: str) -> requests.Response:
    return requests.post(
        f"{stack.base_url}/stowRsListener/IOCM/studies",
        data=data,
        headers={"Authorization": key, "Content-Type": "application/dicom"},
        timeout=30,
    )


def _visible(stack: Served, key: str | None = None, *, everywhere: bool = False) -> set[str]:
    """SOP Instance UIDs an instance search finds (of STUDY, or of every study: a
    de-identified key sees other UIDs, and searches without the study's)."""
    response = requests.get(
        f"{stack.base_url}/rs/instances",
        params={"limit": "1000"} if everywhere else {"StudyInstanceUID": STUDY, "limit": "100"},
        headers={"Authorization": key or stack.api_key},
        timeout=30,
    )
    assert response.status_code in (200, 204), response.text
    found = response.json() if response.status_code == 200 else []
    return {d["00080018"]["Value"][0] for d in found}


def _rejected(stack: Served, key: str | None = None) -> requests.Response:
    return requests.get(
        f"{stack.base_url}/iocm/rejected",
        params={"StudyInstanceUID": STUDY},
        headers={"Authorization": key or stack.api_key},
        timeout=30,
    )


def _state(stack: Served) -> dict[str, tuple[str, str]]:
    response = _rejected(stack)
    assert response.status_code == 200, response.text
    return {
        r["sopInstanceUID"]: (r["code"]["value"], r["state"]) for r in response.json()["rejected"]
    }


def _answered(stack: Served, data: bytes) -> list[int]:
    """Status of each way to read the instance: WADO-RS instance, metadata, frames,
    rendered, and WADO-URI."""
    base = f"{stack.base_url}/rs/studies/{STUDY}/series/{SERIES}/instances/{_sop(data)}"
    headers = {"Authorization": stack.api_key}
    statuses = [
        requests.get(base + suffix, headers={**headers, "Accept": accept}, timeout=30).status_code
        for suffix, accept in (
            ("", 'multipart/related; type="application/dicom"'),
            ("/metadata", "application/dicom+json"),
            ("/frames/1", 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
            ("/rendered", "image/jpeg"),
        )
    ]
    uri = requests.get(
        f"{stack.base_url}/wado",
        params={"requestType": "WADO", "studyUID": STUDY, "seriesUID": SERIES,
                "objectUID": _sop(data), "contentType": "application/dicom"},
        headers=headers,
        timeout=30,
    )  # fmt: skip
    return [*statuses, uri.status_code]


def test_a_note_from_a_store_key_hides_what_it_names_from_every_answer(keyed) -> None:
    stack, plain, deid = keyed
    rejected, kept = _new(), _new()
    for data in (rejected, kept):
        assert _stow(stack, data, plain).status_code == 200
    assert all(s == 200 for s in _answered(stack, rejected))
    note = notes.rejection_note([rejected], "113001")
    response = _stow(stack, note, plain)
    assert response.status_code == 200, response.text
    assert _answered(stack, rejected) == [404] * 5
    assert _sop(rejected) not in _visible(stack)
    assert {_sop(kept), _sop(note)} <= _visible(stack)
    everything = _visible(stack, everywhere=True)
    assert _sop(rejected) not in everything
    assert len(_visible(stack, deid, everywhere=True)) == len(everything), "de-identified too"
    assert _state(stack)[_sop(rejected)] == ("113001", "applied")
    # The note's STOW is audited with the version it hid (no names, no IDs).
    trail = [
        json.loads(line)
        for line in (stack.data_dir / "audit.jsonl").read_text().split("\n")
        if line
    ]
    (stored,) = [r for r in trail if r["transaction"] == "STOW-RS" and r.get("versions")]
    assert stored["versions"] == [
        {"instance": _sop(rejected), "before": hashlib.sha256(rejected).hexdigest(), "after": ""}
    ]
    assert _stow(stack, rejected, plain).status_code == 200, "sent again: stored, hidden"
    assert _answered(stack, rejected) == [404] * 5


def test_only_admin_keys_list_rejections_and_bad_parameters_are_400(keyed) -> None:
    stack, plain, deid = keyed
    for key in (plain, deid):
        assert _rejected(stack, key).status_code == 403
    response = requests.get(
        f"{stack.base_url}/iocm/rejected",
        params={"limit": "0"},
        headers={"Authorization": stack.api_key},
        timeout=30,
    )
    assert response.status_code == 400 and "limit" in response.json()["message"]


def test_a_rejection_waits_for_its_instance_and_an_admin_restores_it(keyed) -> None:
    stack, plain, _ = keyed
    early = _new()
    assert _stow(stack, notes.rejection_note([early], "113038"), plain).status_code == 200
    assert _state(stack)[_sop(early)] == ("113038", "pending")
    assert _stow(stack, early, plain).status_code == 200
    assert _sop(early) not in _visible(stack)
    assert _state(stack)[_sop(early)] == ("113038", "applied")
    code, lines = lifecycle_tool.rejected(STUDY, url=stack.base_url, key=stack.api_key)
    assert code == 0 and any(_sop(early) in line for line in lines)
    restore = requests.post(
        f"{stack.base_url}/rs/restore/studies/{STUDY}/series/{SERIES}/instances/{_sop(early)}",
        headers={"Authorization": stack.api_key},
        timeout=60,
    )
    assert restore.status_code == 200 and restore.json()["restored"] == 1, restore.text
    assert _sop(early) in _visible(stack)
    assert _sop(early) not in _state(stack)


def test_retention_expired_deletes_once_and_the_instance_may_be_stored_again(keyed) -> None:
    stack, plain, _ = keyed
    expired = _new()
    assert _stow(stack, expired, plain).status_code == 200
    assert _stow(stack, notes.rejection_note([expired], "113039"), plain).status_code == 200
    assert _sop(expired) not in _visible(stack)
    assert _stow(stack, expired, plain).status_code == 200
    assert _sop(expired) in _visible(stack)
