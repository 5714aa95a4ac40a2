"""The upload path over HTTP, as a client drives it: instances of any size in, byte-identical
out; quarantine, duplicates, bulk drops; on the embedded backend and on moto."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from local.stack import LocalStack
from shared import keys
from shared.adapters.key_store import FileKeyStore
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from shared.dicom import failures
from tests.support import dicom_files, uploads

pytestmark = pytest.mark.integration

LARGE_BYTES = 150 * 1000 * 1000


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 150 MB multi-frame CT nobody stored."""
    return uploads.large_multiframe(tmp_path_factory.mktemp("large") / "large.dcm", LARGE_BYTES)


def test_a_radiograph_over_stow_s_limit_is_stored_and_retrieved_byte_identical(
    local_stack: LocalStack,
) -> None:
    data = dicom_files.with_new_uids("RG1_UNCR.dcm")  # 7.2 MB: STOW answers 413
    stow = requests.post(
        f"{local_stack.base_url}/stowRsListener/UPLOADER/studies",
        data=data,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert stow.status_code == 413  # by API Gateway: the event would exceed Lambda's 6 MB
    just_over = requests.post(  # a body STOW's function still sees: its 413 names the path
        f"{local_stack.base_url}/stowRsListener/UPLOADER/studies",
        data=data[:4_600_000],
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert just_over.status_code == 413
    assert "/uploads" in just_over.json()["message"]
    found = uploads.send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert uploads.retrieve(local_stack, found["retrieveUrl"]) == data


def test_a_150_mb_multiframe_goes_through_multipart_byte_identical(
    local_stack: LocalStack, large_instance: Path
) -> None:
    data = large_instance.read_bytes()
    found = uploads.send(local_stack, data, sha256=hashlib.sha256(data).hexdigest())
    assert found["status"] == "stored", found
    assert uploads.retrieve(local_stack, found["retrieveUrl"]) == data
    again = uploads.send(local_stack, data)
    assert again["status"] == "duplicate"


def test_a_corrupt_upload_ends_quarantined_with_its_reason(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("MR_small.dcm")
    found = uploads.send(local_stack, data[: len(data) - 100])
    assert found["status"] == "failed"
    assert found["failureReason"] == failures.CANNOT_UNDERSTAND
    quarantined = local_stack.data_dir / "objects" / found["quarantineKey"]
    assert quarantined.read_bytes() == data[: len(data) - 100]


def test_files_dropped_under_incoming_are_ingested_and_listed(local_stack: LocalStack) -> None:
    prefix = f"drop-{generate_uid()[-12:]}/"
    folder = local_stack.data_dir / "objects" / "incoming" / prefix
    folder.mkdir(parents=True)
    names = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"]
    for i, name in enumerate(names):
        (folder / f"{i}.dcm").write_bytes(dicom_files.with_new_uids(name))
    (folder / "notes.txt").write_text("not DICOM")
    headers = {"Authorization": local_stack.api_key}
    url = f"{local_stack.base_url}/stowRsListener/ANY/uploads"
    deadline = time.monotonic() + 60
    while True:
        listed = requests.get(url, params={"prefix": prefix}, headers=headers, timeout=30).json()
        if len(listed["results"]) == 4:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)
    statuses = {r["key"].rsplit("/", 1)[1]: r["status"] for r in listed["results"]}
    assert statuses == {
        "0.dcm": "stored",
        "1.dcm": "stored",
        "2.dcm": "stored",
        "notes.txt": "failed",
    }
    assert not any(folder.iterdir())
    for result in listed["results"][:3]:
        assert (
            requests.head(result["retrieveUrl"], headers=headers, timeout=30).status_code
            in (
                200,
                405,
            )
            or requests.get(
                result["retrieveUrl"] + "/metadata", headers=headers, timeout=30
            ).status_code
            == 200
        )


def test_the_upload_path_works_on_moto(moto_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("RG1_UNCR.dcm")
    found = uploads.send(moto_stack, data)
    assert found["status"] == "stored", found
    assert uploads.retrieve(moto_stack, found["retrieveUrl"]) == data


def test_ingesting_150_mb_needs_far_less_memory_than_the_object(
    large_instance: Path, tmp_path: Path
) -> None:
    """Values stay on disk: the peak resident set grows by far less than the object."""
    found = uploads.ingest_alone(large_instance, tmp_path)
    assert found["status"] == "stored"
    assert found["added_mb"] < 48, found  # a 150 MB object


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str, str]]:
    """A stack with three keys: full access (the stack's), ``store`` only, ``admin`` only."""
    data_dir: Path = tmp_path_factory.mktemp("upload-keys")
    store_key, store_entry = keys.generate("modality", (keys.STORE,))
    admin_key, admin_entry = keys.generate("drop folders", (keys.ADMIN,))
    for entry in (store_entry, admin_entry):
        FileKeyStore(data_dir / SECRETS_DIR / API_KEYS_FILE).add(entry)
    full_key, _ = keys.generate("pytest", keys.LEGACY_SCOPES)
    with LocalStack(port=0, api_key=full_key, data_dir=data_dir) as running:
        yield running, store_key, admin_key


def _listing(stack: LocalStack, key: str, **params: str) -> requests.Response:
    return requests.get(
        f"{stack.base_url}/stowRsListener/ANY/uploads",
        params=params,
        headers={"Authorization": key},
        timeout=30,
    )


def test_each_key_sees_its_own_uploads_and_only_admin_keys_see_dropped_objects(keyed) -> None:
    stack, store_key, admin_key = keyed
    mine = uploads.send(stack, dicom_files.with_new_uids("CT_small.dcm"))
    assert mine["status"] == "stored"
    folder = stack.data_dir / "objects" / "incoming" / "DOE^JANE"
    folder.mkdir(parents=True)
    (folder / "JANE_DOE_1970.dcm").write_bytes(dicom_files.with_new_uids("MR_small.dcm"))
    deadline = time.monotonic() + 60
    while len(_listing(stack, stack.api_key, prefix="DOE^JANE/").json()["results"]) < 1:
        assert time.monotonic() < deadline, "the dropped object was not ingested"
        time.sleep(0.2)

    theirs = _listing(stack, store_key)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["results"] == []  # not the other key's upload, not the drop
    assert _listing(stack, store_key, prefix="DOE^JANE/").json()["results"] == []
    status_url = f"{stack.base_url}/stowRsListener/ANY/uploads/{mine['uploadId']}"
    other = requests.get(status_url, headers={"Authorization": store_key}, timeout=30)
    assert other.status_code == 404
    assert other.json() == {"message": "no such upload"}

    own = uploads.ask(stack, 1000, aet="MODALITY")
    own_status = requests.get(own["statusUrl"], headers={"Authorization": store_key}, timeout=30)
    assert own_status.status_code == 404  # asked for with the stack's key: not store_key's

    dropped = _listing(stack, admin_key).json()["results"]
    assert [r["key"] for r in dropped] == ["DOE^JANE/JANE_DOE_1970.dcm"]
    assert mine["sopInstanceUID"] not in json.dumps(dropped)
    full = _listing(stack, stack.api_key).json()["results"]  # admin and store: both
    assert {r.get("uploadId") for r in full} == {mine["uploadId"], None}
    refused = requests.post(
        f"{stack.base_url}/stowRsListener/ANY/uploads",
        json={"size": 10},
        headers={"Authorization": admin_key},
        timeout=30,
    )
    assert refused.status_code == 403
    for url in (status_url, f"{status_url}/complete"):
        assert requests.get(url, headers={"Authorization": admin_key}, timeout=30).status_code in (
            403,
            404,
        )


def test_a_store_key_lists_the_uploads_it_sent(keyed) -> None:
    stack, store_key, _ = keyed
    data = dicom_files.with_new_uids("SC_rgb.dcm")
    created = requests.post(
        f"{stack.base_url}/stowRsListener/MODALITY/uploads",
        json={"size": len(data)},
        headers={"Authorization": store_key},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    answer = created.json()
    uploads.put_object(answer, data, {"Authorization": store_key})
    found = uploads.wait(answer["statusUrl"], {"Authorization": store_key})
    assert found["status"] == "stored"
    listed = _listing(stack, store_key, prefix="uploads/").json()["results"]
    assert [(r["uploadId"], r["status"]) for r in listed] == [(answer["uploadId"], "stored")]
