"""The change feed end to end over HTTP on the local stack (emulator -> TOKEN authorizer
and its policy -> the QIDO function -> SQLite): a store, a DELETE, the entries in order,
Azure's bounds, ``latest``, and the read-deidentified view (its UIDs, no Metadata)."""

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
from shared.adapters.local_secrets import secret
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from shared.dicom.uid_map import map_uid
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str, str]]:
    data_dir: Path = tmp_path_factory.mktemp("changefeed-http")
    store = FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE)
    deid_key, deid = keys.generate("research partner", (keys.READ_DEIDENTIFIED,))
    store_key, stores = keys.generate("modality", (keys.STORE,))
    store.add(deid)
    store.add(stores)
    full_key, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with LocalStack(port=0, api_key=full_key, data_dir=data_dir) as running:
        yield running, deid_key, store_key


def _store(running: LocalStack, data: bytes) -> None:
    boundary = new_boundary()
    stored = requests.post(
        f"{running.base_url}/stowRsListener/AE/studies",
        data=build_related([(data, "application/dicom")], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Authorization": running.api_key,
        },
        timeout=60,
    )
    assert stored.status_code == 200, stored.text


def _feed(running: LocalStack, key: str, path: str = "", **params: str) -> requests.Response:
    return requests.get(
        f"{running.base_url}/changefeed{path}",
        params=params,
        headers={"Authorization": key},
        timeout=60,
    )


def test_the_change_feed_over_http(stack) -> None:
    running, deid_key, store_key = stack
    first, second = (dicom_files.with_new_uids() for _ in range(2))
    uids = [pydicom.dcmread(io.BytesIO(d)) for d in (first, second)]
    _store(running, first)
    _store(running, second)
    gone = uids[1]
    deleted = requests.delete(
        f"{running.base_url}/rs/studies/{gone.StudyInstanceUID}",
        headers={"Authorization": running.api_key},
        timeout=120,
    )
    assert deleted.status_code in (200, 202, 204), deleted.text

    page = _feed(running, running.api_key, offset="0", limit="100")
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("application/json")
    entries = page.json()
    assert [(e["Action"], e["SOPInstanceUID"], e["State"]) for e in entries] == [
        ("create", uids[0].SOPInstanceUID, "current"),
        ("create", gone.SOPInstanceUID, "deleted"),
        ("delete", gone.SOPInstanceUID, "deleted"),
    ]
    assert [e["Sequence"] for e in entries] == [1, 2, 3]
    assert entries[0]["Metadata"]["00080018"]["Value"] == [uids[0].SOPInstanceUID]
    assert [e["Sequence"] for e in _feed(running, running.api_key, offset="1").json()] == [2, 3]
    assert len(_feed(running, running.api_key).json()) == 3  # limit 10 by default

    latest = _feed(running, running.api_key, "/latest", includeMetadata="false")
    assert latest.status_code == 200, latest.text
    assert latest.json() == {k: v for k, v in entries[-1].items() if k != "Metadata"}

    too_many = _feed(running, running.api_key, limit="101")
    assert too_many.status_code == 400
    assert "limit" in too_many.text

    key = secret(running.data_dir / SECRETS_DIR / "anonymization.key")
    seen = _feed(running, deid_key, limit="100")
    assert seen.status_code == 200, seen.text
    assert [e["SOPInstanceUID"] for e in seen.json()] == [
        map_uid(e["SOPInstanceUID"], key) for e in entries
    ]
    assert all("Metadata" not in e for e in seen.json())
    for uid in (uids[0].StudyInstanceUID, uids[0].SOPInstanceUID):
        assert uid not in seen.text
    assert _feed(running, deid_key, includeMetadata="true").status_code == 403
    assert _feed(running, store_key).status_code == 403  # no read scope: the gateway's policy


def test_four_clients_storing_into_one_study_each_instance_once_in_commit_order(stack) -> None:
    """Each client's STOWs commit one after the other: the feed lists every instance once,
    and each client's instances in the order they were acknowledged."""
    import threading

    running, _, _ = stack
    study = pydicom.uid.generate_uid(prefix="1.2.826.0.1.3680043.8.498.", entropy_srcs=["4x8"])[:40]
    clients = [
        [dicom_files.with_new_uids(study=study, series=f"{study}.{c}") for _ in range(8)]
        for c in range(4)
    ]
    errors: list[BaseException] = []

    def send(datas: list[bytes]) -> None:
        try:
            for data in datas:
                _store(running, data)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(datas,)) for datas in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    entries: list[dict] = []
    while page := _feed(
        running,
        running.api_key,
        offset=str(entries[-1]["Sequence"] if entries else 0),
        limit="100",
        includeMetadata="false",
    ).json():
        entries += page
    mine = [e for e in entries if e["StudyInstanceUID"] == study]
    sops = [e["SOPInstanceUID"] for e in mine]
    assert len(sops) == len(set(sops)) == 32
    for datas in clients:
        sent = [pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in datas]
        assert [s for s in sops if s in set(sent)] == sent
    sequences = [e["Sequence"] for e in entries]
    assert sequences == list(range(1, len(entries) + 1))
