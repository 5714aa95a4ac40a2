"""The upload path's service on the embedded backend's real adapters (files + SQLite):
uploads, ingestion, idempotence under repeated and out-of-order events, quarantine."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import UrlSigner
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom import failures
from shared.errors import BadRequest, Forbidden, NotFound, StorageUnavailable
from shared.services import ingest, uploads
from tests.support import dicom_files

BASE = "https://example.org/v1/o3-dpacs-wado"
ROOT = f"{BASE}/stowRsListener/MODALITY1/uploads"
LIMIT = 256 << 20
OWNER = uploads.Caller("key-a")
ADMIN = uploads.Caller("key-admin", admin=True)


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "objects", UrlSigner(b"k" * 32, "http://127.0.0.1:1"))


@pytest.fixture
def index(tmp_path: Path) -> SqliteIndex:
    return SqliteIndex(tmp_path / "index.sqlite3")


def upload(store: FileBlobStore, data: bytes, **declared: object) -> str:
    """Ask for an upload and write the object where the URL would have."""
    request = uploads.UploadRequest(size=len(data), calling_aet="MODALITY1", **declared)  # type: ignore[arg-type]
    answer = uploads.create_upload(request, caller=OWNER, store=store, upload_root=ROOT)
    store.put(f"incoming/uploads/{answer['uploadId']}", data)
    return str(answer["uploadId"])


def run(key: str, store: FileBlobStore, index: SqliteIndex) -> ingest.Outcome | None:
    return ingest.ingest(key, store=store, index=index, inflate_limit=LIMIT)


def status(upload_id: str, store: FileBlobStore) -> dict:
    return uploads.status(upload_id, caller=OWNER, store=store, base_url=BASE)


# ---------------------------------------------------------------- asking for an upload


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{}",
        b'{"size": 0}',
        b'{"size": -1}',
        b'{"size": true}',
        b'{"size": 1.5}',
        b'{"size": 6000000000}',
        b'{"size": 10, "sha256": "ABC"}',
        b'{"size": 10, "studyInstanceUID": "1.02"}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_upload_request_is_a_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        uploads.UploadRequest.from_json(body, "AET")


@given(
    st.binary(max_size=200)
    | st.from_regex(r'\{"size": *-?\d{0,12}.*\}', fullmatch=True).map(str.encode)
)
def test_any_body_is_parsed_or_refused_with_400(body: bytes) -> None:
    try:
        request = uploads.UploadRequest.from_json(body, "AET")
    except BadRequest:
        return
    assert 0 < request.size <= uploads.MAX_UPLOAD


def test_a_small_upload_is_one_presigned_put(store: FileBlobStore) -> None:
    answer = uploads.create_upload(
        uploads.UploadRequest(size=1000, calling_aet="A"),
        caller=OWNER,
        store=store,
        upload_root=ROOT,
    )
    assert answer["status"] == "pending"
    assert answer["statusUrl"] == f"{ROOT}/{answer['uploadId']}"
    assert answer["upload"]["method"] == "PUT"
    assert "method=PUT" in answer["upload"]["url"]
    assert "multipart" not in answer


def test_a_large_upload_is_multipart_with_a_url_per_part(store: FileBlobStore) -> None:
    size = 2 * uploads.PART_SIZE + 1
    answer = uploads.create_upload(
        uploads.UploadRequest(size=size, calling_aet="A"),
        caller=OWNER,
        store=store,
        upload_root=ROOT,
    )
    multipart = answer["multipart"]
    assert [p["partNumber"] for p in multipart["parts"]] == [1, 2, 3]
    assert multipart["partSize"] == uploads.PART_SIZE
    assert multipart["completeUrl"] == f"{ROOT}/{answer['uploadId']}/complete"


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multipart from 9 bytes on, in parts of 6 bytes (the service's rule, at a test's scale)."""
    monkeypatch.setattr(uploads, "SINGLE_PUT_LIMIT", 8)
    monkeypatch.setattr(uploads, "PART_SIZE", 6)


def _multipart(store: FileBlobStore, size: int) -> tuple[str, str, str]:
    """(upload id, key, multipart upload id) of a new multipart upload of ``size`` bytes."""
    answer = uploads.create_upload(
        uploads.UploadRequest(size=size, calling_aet="A"),
        caller=OWNER,
        store=store,
        upload_root=ROOT,
    )
    record = json.loads(store.read(f"uploads/{answer['uploadId']}.json") or b"")
    return str(answer["uploadId"]), record["key"], record["multipartUploadId"]


def _complete_body(tags: list[tuple[int, str]]) -> bytes:
    return json.dumps({"parts": [{"partNumber": n, "etag": e} for n, e in tags]}).encode()


def test_multipart_parts_are_assembled_in_order(store: FileBlobStore, small_parts) -> None:
    upload_id, key, multipart = _multipart(store, 11)
    tags = [
        (n, store.write_part(key, multipart, n, io.BytesIO(chunk), len(chunk)))
        for n, chunk in ((2, b"world"), (1, b"hello "))
    ]
    body = _complete_body(tags)
    assert (
        uploads.complete_upload(upload_id, body, caller=OWNER, store=store)["status"] == "pending"
    )
    assert store.read(key) == b"hello world"
    # A retried complete is harmless; a wrong ETag for a new upload is a 400.
    uploads.complete_upload(upload_id, body, caller=OWNER, store=store)
    other, _, _ = _multipart(store, 11)
    with pytest.raises(BadRequest):
        uploads.complete_upload(
            other,
            b'{"parts": [{"partNumber": 1, "etag": "x"}, {"partNumber": 2, "etag": "y"}]}',
            caller=OWNER,
            store=store,
        )


def test_part_urls_are_signed_for_each_part_s_size(store: FileBlobStore, small_parts) -> None:
    answer = uploads.create_upload(
        uploads.UploadRequest(size=20, calling_aet="A"), caller=OWNER, store=store, upload_root=ROOT
    )
    lengths = [
        dict(parse_qsl(urlsplit(part["url"]).query))["length"]
        for part in answer["multipart"]["parts"]
    ]
    assert lengths == ["6", "6", "6", "2"]
    single = uploads.create_upload(
        uploads.UploadRequest(size=7, calling_aet="A"), caller=OWNER, store=store, upload_root=ROOT
    )
    assert dict(parse_qsl(urlsplit(single["upload"]["url"]).query))["length"] == "7"


@pytest.mark.parametrize(
    "chunks",
    [
        ((1, b"hello "), (2, b"world!")),  # a last part longer than the upload's remainder
        ((1, b"hell"), (2, b"world")),  # a short first part
    ],
    ids=["longer", "shorter"],
)
def test_parts_that_do_not_add_up_to_the_declared_size_are_refused_at_complete(
    store: FileBlobStore, small_parts, chunks
) -> None:
    upload_id, key, multipart = _multipart(store, 11)
    tags = [(n, store.write_part(key, multipart, n, io.BytesIO(c), len(c))) for n, c in chunks]
    with pytest.raises(BadRequest, match="declared 11"):
        uploads.complete_upload(upload_id, _complete_body(tags), caller=OWNER, store=store)
    assert store.stat(key) is None  # nothing assembled, nothing ingested


@pytest.mark.parametrize("numbers", [[1], [2], [1, 2, 3], [0, 1], [1, 1]])
def test_complete_must_list_every_part_once(store: FileBlobStore, small_parts, numbers) -> None:
    upload_id, key, multipart = _multipart(store, 11)
    for n, chunk in ((1, b"hello "), (2, b"world")):
        store.write_part(key, multipart, n, io.BytesIO(chunk), len(chunk))
    with pytest.raises(BadRequest):
        uploads.complete_upload(
            upload_id, _complete_body([(n, "e") for n in numbers]), caller=OWNER, store=store
        )
    assert store.stat(key) is None


@pytest.mark.parametrize("upload_id", ["", "x", "../../etc", "a" * 65, "0123456789abcdef"])
def test_unknown_uploads_are_404(store: FileBlobStore, upload_id: str) -> None:
    with pytest.raises(NotFound):
        status(upload_id, store)


# ---------------------------------------------------------------- ingestion


def test_an_upload_is_stored_byte_identical_and_leaves_incoming(store, index) -> None:
    data = dicom_files.with_new_uids()
    upload_id = upload(store, data, sha256=hashlib.sha256(data).hexdigest())
    assert status(upload_id, store)["status"] == "pending"
    outcome = run(f"incoming/uploads/{upload_id}", store, index)
    assert outcome is not None and outcome.status == "stored"
    answer = status(upload_id, store)
    assert answer["status"] == "stored"
    assert answer["retrieveUrl"].startswith(f"{BASE}/rs/studies/{answer['studyInstanceUID']}/")
    assert store.stat(f"incoming/uploads/{upload_id}") is None
    (final,) = [i.key for i in store.listing("dicom/")]
    assert store.read(final) == data
    assert index.references(answer["sopInstanceUID"], final)


def test_a_repeated_event_stores_once_and_the_first_result_stands(store, index) -> None:
    data = dicom_files.with_new_uids()
    upload_id = upload(store, data)
    key = f"incoming/uploads/{upload_id}"
    assert run(key, store, index).status == "stored"
    assert run(key, store, index) is None  # the event again: nothing left to do
    # Crash after the result, before the delete: the object is ingested a second time.
    store.put(key, data)
    assert run(key, store, index).status == "stored"
    assert status(upload_id, store)["status"] == "stored"
    assert len(list(store.listing("dicom/"))) == 1


def test_an_event_for_an_object_never_written_does_nothing(store, index) -> None:
    assert run("incoming/uploads/0123456789abcdef0123", store, index) is None
    assert run("incoming/site/a.dcm", store, index) is None
    assert run("dicom/x.dcm", store, index) is None  # not under incoming/
    assert list(store.listing("results/")) == []


def test_an_object_under_uploads_without_an_upload_is_quarantined(store, index) -> None:
    data = dicom_files.with_new_uids()
    key = "incoming/uploads/0123456789abcdef0123"
    store.put(key, data)
    assert run(key, store, index).status == "failed"
    assert store.read("quarantine/uploads/0123456789abcdef0123") == data
    assert list(store.listing("dicom/")) == []
    assert run(key, store, index) is None  # the event again


def test_the_same_instance_uploaded_again_is_a_duplicate(store, index) -> None:
    data = dicom_files.with_new_uids()
    first, second = upload(store, data), upload(store, data)
    run(f"incoming/uploads/{first}", store, index)
    run(f"incoming/uploads/{second}", store, index)
    assert status(first, store)["status"] == "stored"
    assert status(second, store)["status"] == "duplicate"


@pytest.mark.parametrize(
    ("mutate", "declared", "reason"),
    [
        (lambda d: d[: len(d) // 2], {}, failures.CANNOT_UNDERSTAND),
        (lambda d: b"not dicom at all" * 20, {}, failures.CANNOT_UNDERSTAND),
        (lambda d: d, {"sha256": "0" * 64}, failures.CANNOT_UNDERSTAND),
        (lambda d: d, {"study_uid": "1.2.3.4"}, failures.STUDY_UID_MISMATCH),
    ],
    ids=["truncated", "not-dicom", "sha256-differs", "other-study"],
)
def test_a_refused_upload_is_quarantined_with_its_reason(
    store, index, mutate, declared, reason
) -> None:
    data = mutate(dicom_files.with_new_uids())
    upload_id = upload(store, data, **declared)
    assert run(f"incoming/uploads/{upload_id}", store, index).status == "failed"
    answer = status(upload_id, store)
    assert answer["status"] == "failed"
    assert answer["failureReason"] == reason
    assert answer["message"]
    assert store.read(answer["quarantineKey"]) == data  # kept, never dropped
    assert store.stat(f"incoming/uploads/{upload_id}") is None
    assert list(store.listing("dicom/")) == []


def test_an_object_of_another_size_than_declared_is_quarantined(store, index) -> None:
    data = dicom_files.with_new_uids()
    request = uploads.UploadRequest(size=len(data) + 1, calling_aet="A")
    upload_id = uploads.create_upload(request, caller=OWNER, store=store, upload_root=ROOT)[
        "uploadId"
    ]
    store.put(f"incoming/uploads/{upload_id}", data)
    run(f"incoming/uploads/{upload_id}", store, index)
    assert "declared" in status(upload_id, store)["message"]


def test_a_storage_outage_keeps_the_object_for_a_retry(store, index, monkeypatch) -> None:
    data = dicom_files.with_new_uids()
    upload_id = upload(store, data)
    key = f"incoming/uploads/{upload_id}"

    def down(record, **options):
        raise StorageUnavailable("down")

    monkeypatch.setattr(index, "add", down)
    with pytest.raises(StorageUnavailable):
        run(key, store, index)
    assert store.read(key) == data
    assert status(upload_id, store)["status"] == "pending"
    monkeypatch.undo()
    assert run(key, store, index).status == "stored"


def test_expired_uploads_without_an_object_fail(store) -> None:
    answer = uploads.create_upload(
        uploads.UploadRequest(size=10, calling_aet="A"), caller=OWNER, store=store, upload_root=ROOT
    )
    later = datetime.now(UTC) + timedelta(seconds=uploads.UPLOAD_URL_TTL + 60)
    found = uploads.status(
        answer["uploadId"], caller=OWNER, store=store, base_url=BASE, clock=lambda: later
    )
    assert found["status"] == "failed"


def test_dropped_objects_are_ingested_and_listed_per_prefix(store, index, tmp_path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
    for i, name in enumerate(names):
        store.put(f"incoming/site1/{i}.dcm", dicom_files.with_new_uids(name))
    store.put("incoming/site1/readme.txt", b"a note, not DICOM")
    store.put("incoming/site2/x.dcm", dicom_files.with_new_uids())
    for key in ingest.stale(store, older_than=0):
        run(key, store, index)
    listed = uploads.results("site1/", caller=ADMIN, store=store, base_url=BASE)["results"]
    assert [r["key"] for r in listed] == [
        "site1/0.dcm",
        "site1/1.dcm",
        "site1/2.dcm",
        "site1/readme.txt",
    ]
    assert [r["status"] for r in listed] == ["stored", "stored", "stored", "failed"]
    page = uploads.results("site1/", caller=ADMIN, store=store, base_url=BASE, limit=2)
    assert page["next"] == "site1/1.dcm"
    rest = uploads.results(
        "site1/", caller=ADMIN, store=store, base_url=BASE, after=page["next"], limit=2
    )
    assert [r["key"] for r in rest["results"]] == ["site1/2.dcm", "site1/readme.txt"]
    assert list(ingest.stale(store, older_than=0)) == []
    with sqlite3.connect(tmp_path / "index.sqlite3") as connection:
        aets = {row[0] for row in connection.execute("SELECT aet FROM instances")}
    assert aets == {ingest.DROP_AET}


def test_the_sweeper_takes_only_objects_older_than_its_age(store) -> None:
    store.put("incoming/a.dcm", b"x")
    assert list(ingest.stale(store)) == []
    assert list(ingest.stale(store, now=datetime.now(UTC).timestamp() + ingest.SWEEP_AGE_S)) == [
        "incoming/a.dcm"
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0, max_value=3000), junk=st.binary(max_size=64))
def test_any_damaged_upload_ends_stored_or_quarantined_never_lost(store, index, cut, junk) -> None:
    data = dicom_files.with_new_uids()
    damaged = data[: len(data) - cut] + junk
    upload_id = upload(store, damaged)
    outcome = run(f"incoming/uploads/{upload_id}", store, index)
    assert outcome is not None and outcome.status in {"stored", "failed"}
    answer = status(upload_id, store)
    if answer["status"] == "failed":
        assert store.read(answer["quarantineKey"]) == damaged
    else:
        assert any(store.read(i.key) == damaged for i in store.listing("dicom/"))
    assert store.stat(f"incoming/uploads/{upload_id}") is None


# ---------------------------------------------------------------- who sees what

OTHER = uploads.Caller("key-b")
ADMIN_ONLY = uploads.Caller("key-c", admin=True)


def _uploaded_by(caller: uploads.Caller, store, index, data: bytes) -> str:
    request = uploads.UploadRequest(size=len(data), calling_aet="MODALITY1")
    upload_id = str(
        uploads.create_upload(request, caller=caller, store=store, upload_root=ROOT)["uploadId"]
    )
    store.put(f"incoming/uploads/{upload_id}", data)
    run(f"incoming/uploads/{upload_id}", store, index)
    return upload_id


def _listed(caller: uploads.Caller, store, prefix: str = "", limit: int = 1000) -> list[dict]:
    """Every result the caller is answered, following ``next`` page after page."""
    found, after = [], ""
    while True:
        page = uploads.results(
            prefix, caller=caller, store=store, base_url=BASE, after=after, limit=limit
        )
        found += page["results"]
        if "next" not in page:
            return found
        after = page["next"]


@pytest.fixture
def archive(store, index) -> dict[str, str]:
    """Uploads of two keys (one refused), a drop folder named for a patient, and an object
    put under incoming/uploads/ outside the upload API."""
    uploads = {
        "a": _uploaded_by(OWNER, store, index, dicom_files.with_new_uids("CT_small.dcm")),
        "a-bad": _uploaded_by(OWNER, store, index, b"not DICOM" * 20),
        "b": _uploaded_by(OTHER, store, index, dicom_files.with_new_uids("MR_small.dcm")),
    }
    store.put("incoming/DOE^JANE/scan.dcm", dicom_files.with_new_uids())
    store.put("incoming/uploads/DOE_JOHN.dcm", dicom_files.with_new_uids())
    for key in ingest.stale(store, older_than=0):
        run(key, store, index)
    return uploads


def test_a_key_follows_its_own_uploads_and_others_are_told_there_is_none(
    store, index, archive
) -> None:
    found = uploads.status(archive["a"], caller=OWNER, store=store, base_url=BASE)
    assert found["status"] == "stored"
    for caller in (OTHER, ADMIN_ONLY, uploads.Caller("")):
        with pytest.raises(NotFound, match="no such upload"):
            uploads.status(archive["a"], caller=caller, store=store, base_url=BASE)
    pending = uploads.create_upload(
        uploads.UploadRequest(size=uploads.SINGLE_PUT_LIMIT + 1, calling_aet="A"),
        caller=OWNER,
        store=store,
        upload_root=ROOT,
    )["uploadId"]
    with pytest.raises(NotFound):
        uploads.status(pending, caller=OTHER, store=store, base_url=BASE)
    with pytest.raises(NotFound):
        uploads.complete_upload(
            pending, b'{"parts": [{"partNumber": 1, "etag": "x"}]}', caller=OTHER, store=store
        )


def test_a_store_key_lists_only_the_results_of_its_own_uploads(store, archive) -> None:
    mine = _listed(OWNER, store)
    assert sorted(r["uploadId"] for r in mine) == sorted([archive["a"], archive["a-bad"]])
    assert {r["status"] for r in mine} == {"stored", "failed"}
    theirs = _listed(OTHER, store)
    assert [r["uploadId"] for r in theirs] == [archive["b"]]
    everything = json.dumps(mine + theirs)
    assert "DOE" not in everything  # no dropped object's name, in any field
    assert theirs[0]["sopInstanceUID"] not in json.dumps(mine)
    assert _listed(OWNER, store, prefix="DOE^JANE/") == []
    assert _listed(OWNER, store, prefix=f"uploads/{archive['a'][:4]}") == [
        r for r in mine if r["uploadId"].startswith(archive["a"][:4])
    ]
    assert all("keyId" not in r for r in mine)


def test_dropped_objects_are_listed_to_admin_keys_only_with_their_names(store, archive) -> None:
    listed = _listed(ADMIN_ONLY, store)
    assert sorted(r["key"] for r in listed) == ["DOE^JANE/scan.dcm", "uploads/DOE_JOHN.dcm"]
    statuses = {r["key"]: r["status"] for r in listed}
    assert statuses == {"DOE^JANE/scan.dcm": "stored", "uploads/DOE_JOHN.dcm": "failed"}
    # An admin key that also stores sees its own uploads besides, never another key's.
    both = uploads.Caller(OWNER.key_id, admin=True)
    keys_seen = sorted(r["key"] for r in _listed(both, store))
    own = [f"uploads/{archive['a']}", f"uploads/{archive['a-bad']}"]
    assert keys_seen == sorted(["DOE^JANE/scan.dcm", "uploads/DOE_JOHN.dcm", *own])


@pytest.mark.parametrize("caller", [OWNER, ADMIN_ONLY], ids=["store", "admin"])
def test_pages_of_one_result_add_up_to_the_whole_listing(store, archive, caller) -> None:
    assert _listed(caller, store, limit=1) == _listed(caller, store)


def test_an_upload_needs_a_key_to_belong_to(store) -> None:
    with pytest.raises(Forbidden):
        uploads.create_upload(
            uploads.UploadRequest(size=10, calling_aet="A"),
            caller=uploads.Caller(""),
            store=store,
            upload_root=ROOT,
        )
    assert list(store.listing("")) == []


@pytest.mark.parametrize(
    "prefix", ["a/../b", "..", "x\x00y", "tab\there", "\ud800", "é" * 600, "line\n"]
)
def test_a_prefix_that_cannot_name_objects_is_a_400(store, prefix) -> None:
    with pytest.raises(BadRequest):
        uploads.results(prefix, caller=ADMIN, store=store, base_url=BASE)
    with pytest.raises(BadRequest):
        uploads.results("", caller=ADMIN, store=store, base_url=BASE, after=prefix)


def test_a_file_meta_value_that_cannot_be_decoded_is_quarantined_not_a_crash(store, index):
    data = bytearray(dicom_files.with_new_uids())
    at = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID, its VR
    data[at + 4 : at + 6] = b"FD"  # 8-byte values: its length is not a multiple of 8
    store.put("incoming/site/broken.dcm", bytes(data))
    assert run("incoming/site/broken.dcm", store, index).status == "failed"
    assert store.read("quarantine/site/broken.dcm") == bytes(data)
