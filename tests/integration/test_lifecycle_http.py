"""DELETE and restore over HTTP on the local stack: admin keys only; from the answer on,
no search or retrieval finds what was deleted; a restore brings back the same bytes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from tests.support import dicom_files
from tools import lifecycle as lifecycle_tool

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.7300"
SERIES = (f"{STUDY}.1", f"{STUDY}.2")
PATIENT = "LIFECYCLE-HTTP"
NAME = "Zyxwhttp^Lifecycle"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str, str]]:
    """A stack whose own key has every scope, plus a ``read``+``store`` key and a
    ``read-deidentified`` key."""
    data_dir: Path = tmp_path_factory.mktemp("lifecycle")
    plain, plain_entry = keys.generate("viewer", (keys.READ, keys.STORE))
    deid, deid_entry = keys.generate("research", (keys.READ_DEIDENTIFIED,))
    for entry in (plain_entry, deid_entry):
        FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).add(entry)
    admin, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with LocalStack(port=0, api_key=admin, data_dir=data_dir) as running:
        yield running, plain, deid


@pytest.fixture(scope="module")
def sent() -> dict[str, bytes]:
    datas = [
        dicom_files.with_new_uids(study=STUDY, series=s, PatientID=PATIENT, PatientName=NAME)
        for s in SERIES
        for _ in range(2)
    ]
    return {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID): d for d in datas}


def _h(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": key, **more}


def _stow(stack: LocalStack, data: bytes) -> int:
    return requests.post(
        f"{stack.base_url}/stowRsListener/LIFE/studies",
        data=data,
        headers=_h(stack.api_key, **{"Content-Type": "application/dicom"}),
        timeout=30,
    ).status_code


def _series_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID)


def _qido(stack: LocalStack, path: str, key: str | None = None, **params: str) -> list[dict]:
    response = requests.get(
        f"{stack.base_url}/qido/LIFE/{path}",
        params=params,
        headers=_h(key or stack.api_key),
        timeout=30,
    )
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def _wado_uri(stack: LocalStack, series: str, sop: str) -> requests.Response:
    return requests.get(
        f"{stack.base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": STUDY,
            "seriesUID": series,
            "objectUID": sop,
            "contentType": "application/dicom",
        },
        headers=_h(stack.api_key),
        timeout=30,
    )


def _instance_path(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data))
    return f"studies/{STUDY}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _call(stack: LocalStack, method: str, path: str, key: str | None = None) -> requests.Response:
    return requests.request(
        method, f"{stack.base_url}/rs/{path}", headers=_h(key or stack.api_key), timeout=60
    )


def _count(stack: LocalStack) -> int:
    found = _qido(
        stack, "studies", StudyInstanceUID=STUDY, includefield="NumberOfStudyRelatedInstances"
    )
    return int(found[0]["00201208"]["Value"][0]) if found else 0


def _absent_everywhere(stack: LocalStack, data: bytes, deid: str) -> None:
    series, path = _series_of(data), _instance_path(data)
    sop = path.rsplit("/", 1)[1]
    for suffix, accept in (
        ("", 'multipart/related; type="application/dicom"'),
        ("/metadata", "application/dicom+json"),
        ("/frames/1", 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
        ("/rendered", "image/jpeg"),
    ):
        response = requests.get(
            f"{stack.base_url}/rs/{path}{suffix}",
            headers=_h(stack.api_key, Accept=accept),
            timeout=30,
        )
        assert response.status_code == 404, (suffix, response.status_code)
    assert _wado_uri(stack, series, sop).status_code == 404
    assert sop not in [
        d["00080018"]["Value"][0] for d in _qido(stack, "instances", PatientID=PATIENT, limit="100")
    ]
    assert sop not in [
        d["00080018"]["Value"][0]
        for d in _qido(stack, "instances", key=deid, SOPInstanceUID=sop, limit="100")
    ]


def test_only_admin_keys_delete_or_restore(keyed, sent) -> None:
    stack, plain, deid = keyed
    data = next(iter(sent.values()))
    assert _stow(stack, data) == 200
    for key in (plain, deid):
        assert _call(stack, "DELETE", f"studies/{STUDY}", key).status_code == 403
        assert _call(stack, "POST", f"restore/studies/{STUDY}", key).status_code == 403
    assert _count(stack) >= 1


def test_bad_uids_are_400_and_unknown_ones_404(keyed) -> None:
    stack, _, _ = keyed
    response = _call(stack, "DELETE", "studies/not-a-uid")
    assert response.status_code == 400 and "UID" in response.json()["message"]
    assert _call(stack, "DELETE", "studies/1.2.3.999").status_code == 404
    assert _call(stack, "POST", "restore/studies/1.2.3.999").status_code == 404


def test_delete_hides_everywhere_and_restore_brings_back_the_same_bytes(keyed, sent) -> None:
    stack, _, deid = keyed
    assert all(_stow(stack, d) == 200 for d in sent.values())
    assert _count(stack) == 4
    substring = {"PatientName": "*yxwht*", "fuzzymatching": "false"}
    assert len(_qido(stack, "studies", **substring)) == 1

    deidentified = len(_qido(stack, "studies", key=deid, limit="100"))
    assert deidentified >= 1

    victim = next(iter(sent.values()))
    assert _call(stack, "DELETE", _instance_path(victim)).status_code == 204
    _absent_everywhere(stack, victim, deid)
    assert _count(stack) == 3

    response = _call(stack, "DELETE", f"studies/{STUDY}/series/{SERIES[1]}")
    assert response.status_code == 204
    assert _count(stack) == 1
    assert [s["0020000E"]["Value"][0] for s in _qido(stack, f"studies/{STUDY}/series")] == [
        SERIES[0]
    ]

    assert _call(stack, "DELETE", f"studies/{STUDY}").status_code == 204
    assert _call(stack, "DELETE", f"studies/{STUDY}").status_code == 404, "a repeat is harmless"
    assert _count(stack) == 0
    assert _qido(stack, "studies", **substring) == []
    assert _qido(stack, "studies", PatientID=PATIENT) == []
    assert len(_qido(stack, "studies", key=deid, limit="100")) == deidentified - 1
    for data in sent.values():
        _absent_everywhere(stack, data, deid)

    response = _call(stack, "POST", f"restore/studies/{STUDY}")
    assert response.status_code == 200, response.text
    assert response.json()["restored"] == 4
    assert _count(stack) == 4
    assert len(_qido(stack, "studies", **substring)) == 1
    assert len(_qido(stack, "studies", key=deid, limit="100")) == deidentified
    for sop, data in sent.items():
        assert _wado_uri(stack, _series_of(data), sop).content == data
    assert _call(stack, "POST", f"restore/studies/{STUDY}").status_code == 404


def test_a_stow_after_a_delete_stores_the_instance_again(keyed, sent) -> None:
    stack, _, _ = keyed
    data = list(sent.values())[-1]
    assert _stow(stack, data) == 200
    assert _call(stack, "DELETE", _instance_path(data)).status_code == 204
    assert _stow(stack, data) == 200
    sop = _instance_path(data).rsplit("/", 1)[1]
    assert _wado_uri(stack, _series_of(data), sop).content == data


def test_the_admin_tool_deletes_and_restores_through_the_api(keyed, sent) -> None:
    stack, _, _ = keyed
    data = next(iter(sent.values()))
    assert _stow(stack, data) == 200
    ds = pydicom.dcmread(io.BytesIO(data))
    target = lifecycle_tool.Target(STUDY, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    code, _ = lifecycle_tool.run("delete", target, url=stack.base_url, key=stack.api_key)
    assert code == 0
    assert _wado_uri(stack, target.series or "", target.instance or "").status_code == 404
    assert lifecycle_tool.run("delete", target, url=stack.base_url, key=stack.api_key)[0] == 1
    code, line = lifecycle_tool.run("restore", target, url=stack.base_url, key=stack.api_key)
    assert code == 0 and '"restored": 1' in line
    assert _wado_uri(stack, target.series or "", target.instance or "").content == data
