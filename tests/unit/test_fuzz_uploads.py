"""Hostile input to the upload path, generated: the Uploads handler in-process (bodies of
create and complete, upload ids, prefixes, ``after`` and ``limit``, scopes and key ids),
ingestion of damaged, truncated and oversized objects dropped under ``incoming/``, and the
local object server's signed URLs.

Every answer is a 2xx or a clear 4xx with a JSON reason, never a 5xx or an exception; every
object ingested ends stored or quarantined with its reason, never lost; memory stays far
below the object's size.
"""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pydicom
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from local.objects import ObjectServer
from shared import bootstrap, config, keys
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.local_urls import PATH_PREFIX, UrlRefused, UrlSigner
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom import failures
from shared.services import ingest, uploads
from tests.support import dicom_files, fuzz
from tests.support.handlers import Context, json_body, load, quiet, rest_event

ROOT = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/uploads"
CLEAR_4XX = {400, 403, 404, 409, 413, 415}
SECRET = b"f" * 32
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OWNER, OTHER = "key-owner", "key-other"
DROPPED = "DOE^JANE/1970-01-01/scan.dcm"


# ---------------------------------------------------------------- the Uploads handler


@dataclass
class Audit:
    """The audit sink: the records the handler wrote."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)


@dataclass
class World:
    """The Uploads handler on a directory store holding results of two keys and a drop."""

    module: Any
    store: FileBlobStore
    upload_ids: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fuzz-uploads")
    store = FileBlobStore(root / "objects", UrlSigner(SECRET, "http://127.0.0.1:9"))
    index = SqliteIndex(root / "index.sqlite3")
    upload_ids = {}
    for key_id, name in ((OWNER, "CT_small.dcm"), (OTHER, "MR_small.dcm")):
        data = dicom_files.with_new_uids(name)
        answer = uploads.create_upload(
            uploads.UploadRequest(size=len(data), calling_aet="AE"),
            caller=uploads.Caller(key_id),
            store=store,
            upload_root="https://h/uploads",
        )
        upload_ids[key_id] = answer["uploadId"]
        store.put(f"incoming/uploads/{answer['uploadId']}", data)
    store.put(f"incoming/{DROPPED}", dicom_files.with_new_uids("rtplan.dcm"))
    for key in ingest.stale(store, older_than=0):
        ingest.ingest(key, store=store, index=index, inflate_limit=1 << 28)
    module = load("uploads")
    fakes = bootstrap.build(config.settings(), objects=store, audit=Audit())
    with module.archive.using(fakes), quiet(module):
        yield World(module, store, upload_ids)


def _call(
    world: World,
    method: str,
    suffix: str,
    *,
    body: bytes = b"",
    query: dict[str, str] | None = None,
    key_id: str = OWNER,
    scopes: str = "store",
) -> tuple[int, Any]:
    """Send one request through the handler: (status, JSON body); a crash fails the test."""
    kind = "/complete" if suffix.endswith("/complete") else ""
    resource = ROOT + ("/{UPLOAD_ID}" if suffix else "") + kind
    path = "/o3-dpacs-wado/stowRsListener/AE/uploads" + suffix
    event = rest_event(method, resource, path, body=body, path_parameters={"CALLING_AET": "AE"})
    if query is not None:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    event["requestContext"]["authorizer"] = {"keyId": key_id, "scopes": scopes}
    response = world.module.lambda_handler(event, Context())
    status = int(response["statusCode"])
    document = json_body(response)
    assert status < 500, (status, document)
    assert 200 <= status < 300 or status in CLEAR_4XX, (status, document)
    if status >= 400:
        assert isinstance(document, dict) and document["message"], document
    return status, document


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_sizes = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 1, uploads.SINGLE_PUT_LIMIT, uploads.SINGLE_PUT_LIMIT + 1, 5 << 30]),
    _json_values,
)
_create_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"size": _sizes},
        optional={
            "sha256": st.text(max_size=70) | st.just("a" * 64),
            "studyInstanceUID": st.text(max_size=70) | st.just("1.2.3"),
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.just(b"[" * 100_000),  # nesting deeper than the JSON parser goes
)
_scopes = st.lists(st.sampled_from([*keys.SCOPES, "bogus", ""]), max_size=4).map(",".join)
_key_ids = st.one_of(st.just(OWNER), st.just(OTHER), st.just(""), st.text(max_size=12))


@FUZZ
@given(body=_create_bodies, scopes=_scopes, key_id=_key_ids)
def test_any_create_request_is_a_201_or_a_clear_4xx(world, body, scopes, key_id) -> None:
    status, answer = _call(world, "POST", "", body=body, key_id=key_id, scopes=scopes)
    if status == 201:
        assert "store" in scopes.split(",") and key_id
        record = json.loads(world.store.read(f"uploads/{answer['uploadId']}.json") or b"")
        assert record["keyId"] == key_id
        if "upload" in answer:  # a single PUT signed for the declared size
            query = dict(parse_qsl(urlsplit(answer["upload"]["url"]).query))
            assert int(query["length"]) == record["size"]


_parts = st.lists(
    st.fixed_dictionaries(
        {
            "partNumber": st.integers(min_value=-3, max_value=10_002) | _json_values,
            "etag": st.text(max_size=40) | _json_values,
        }
    ),
    max_size=5,
)
_complete_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _parts.map(lambda p: json.dumps({"parts": p}).encode()),
    st.just(json.dumps({"parts": [{"partNumber": 1, "etag": "x"}] * 10_001}).encode()),
)


@FUZZ
@given(body=_complete_bodies, key_id=_key_ids)
def test_any_complete_request_is_a_202_or_a_clear_4xx(world, body, key_id) -> None:
    size = uploads.SINGLE_PUT_LIMIT + 10
    created = uploads.create_upload(
        uploads.UploadRequest(size=size, calling_aet="AE"),
        caller=uploads.Caller(OWNER),
        store=world.store,
        upload_root="https://h/uploads",
    )
    status, _ = _call(world, "POST", f"/{created['uploadId']}/complete", body=body, key_id=key_id)
    if key_id != OWNER:
        assert status == 404  # another key's upload does not exist for it
    assert world.store.stat(f"incoming/uploads/{created['uploadId']}") is None  # no part


_ids = st.one_of(
    st.text(max_size=70),
    st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True),
    st.sampled_from(["..", "%2e%2e", "a/b", "0" * 32, " ", "\x00" * 20]),
)


@FUZZ
@given(upload_id=_ids, key_id=_key_ids, scopes=_scopes)
def test_any_upload_id_is_a_200_or_a_clear_4xx(world, upload_id, key_id, scopes) -> None:
    status, _ = _call(world, "GET", f"/{quote(upload_id, safe='')}", key_id=key_id, scopes=scopes)
    assert status in {200, 403, 404}


def test_another_key_s_upload_is_404_whoever_asks(world) -> None:
    mine = world.upload_ids[OWNER]
    assert _call(world, "GET", f"/{mine}")[0] == 200
    for key_id, scopes in ((OTHER, "store"), (OTHER, "admin,read,store"), ("", "store")):
        status, answer = _call(world, "GET", f"/{mine}", key_id=key_id, scopes=scopes)
        assert (status, answer) == (404, {"message": "no such upload"})


_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "uploads/", "uploads", "DOE^JANE/", "..", "a/../b", "\x00", "u"]),
    st.text(min_size=1020, max_size=1100),
)
_limits = st.one_of(
    st.integers(min_value=-5, max_value=2000).map(str),
    st.text(max_size=8),
    st.just("9" * 5000),
)


@FUZZ
@given(
    query=st.fixed_dictionaries({}, optional={"prefix": _texts, "after": _texts, "limit": _limits}),
    key_id=_key_ids,
    scopes=_scopes,
)
def test_any_listing_query_is_a_200_or_a_clear_4xx_and_never_leaks(
    world, query, key_id, scopes
) -> None:
    status, answer = _call(world, "GET", "", query=query, key_id=key_id, scopes=scopes)
    if status != 200:
        return
    granted = set(scopes.split(","))
    assert granted & {"store", "admin"}
    text = json.dumps(answer)
    if "admin" not in granted:
        assert "DOE" not in text  # a dropped object's name
    visible = {world.upload_ids[key_id]} if key_id in world.upload_ids else set()
    assert not [u for u in world.upload_ids.values() if u not in visible and u in text]


# ---------------------------------------------------------------- ingestion


@pytest.fixture
def archive(tmp_path: Path) -> tuple[FileBlobStore, SqliteIndex]:
    store = FileBlobStore(tmp_path / "objects", UrlSigner(SECRET, "http://127.0.0.1:9"))
    return store, SqliteIndex(tmp_path / "index.sqlite3")


_REASONS = {v for k, v in vars(failures).items() if k.isupper() and isinstance(v, int)}
_SOURCES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm"]
_MUTATORS = sorted(set(fuzz.MUTATORS) - {"deflate_bomb"})  # that one: its own test below


def _assert_kept(store: FileBlobStore, key: str, data: bytes, outcome: Any) -> None:
    """Stored (byte-identical under dicom/) or quarantined with a reason; gone from incoming/."""
    assert outcome is not None and outcome.status in {"stored", "duplicate", "failed"}
    relative = key.removeprefix("incoming/")
    result = json.loads(store.read(f"results/{relative}.json") or b"")
    assert store.stat(key) is None
    if result["status"] == "failed":
        assert result["failureReason"] in _REASONS
        assert result["message"]
        assert store.read(result["quarantineKey"]) == data
    else:
        assert any(store.read(i.key) == data for i in store.listing("dicom/"))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    source=st.sampled_from(_SOURCES),
    mutator=st.sampled_from(_MUTATORS),
    seed=st.integers(min_value=0, max_value=1 << 32),
    folder=st.text(
        st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/"),
        min_size=1,
        max_size=12,
    ),
)
@example(  # a broken File Meta value, decoded only when the transfer syntax was read
    source="image_dfl.dcm", mutator="corrupt_vr", seed=28123256, folder="1"
)
def test_any_damaged_object_dropped_under_incoming_is_stored_or_quarantined(
    archive, source, mutator, seed, folder
) -> None:
    store, index = archive
    data = fuzz.MUTATORS[mutator](random.Random(seed), dicom_files.with_new_uids(source))
    key = f"incoming/{folder.strip('.') or 'x'}/{seed}.dcm"
    store.put(key, data)
    outcome = ingest.ingest(key, store=store, index=index, inflate_limit=32 << 20)
    _assert_kept(store, key, data, outcome)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    source=st.sampled_from(_SOURCES),
    cut=st.floats(min_value=0, max_value=1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=8),
    extra=st.binary(max_size=64),
)
def test_any_truncated_or_flipped_upload_ends_stored_or_quarantined(
    archive, source, cut, flips, extra
) -> None:
    store, index = archive
    original = bytearray(dicom_files.with_new_uids(source))
    for where, bit in flips:
        original[int(where * (len(original) - 1))] ^= 1 << bit
    data = bytes(original[: int(cut * len(original))]) + extra
    if not data:
        data = b"\x00"
    answer = uploads.create_upload(
        uploads.UploadRequest(size=len(data), calling_aet="AE"),
        caller=uploads.Caller(OWNER),
        store=store,
        upload_root="https://h/uploads",
    )
    key = f"incoming/uploads/{answer['uploadId']}"
    store.put(key, data)
    outcome = ingest.ingest(key, store=store, index=index, inflate_limit=32 << 20)
    _assert_kept(store, key, data, outcome)
    status = uploads.status(
        answer["uploadId"], caller=uploads.Caller(OWNER), store=store, base_url="https://h"
    )
    assert status["status"] == outcome.status


def _with_pixel_length(path: Path, length: int, written: int) -> None:
    """A CT whose pixel data element declares ``length`` bytes, of which ``written`` are on
    disk (the rest missing: a truncated file), as a sparse file."""
    ds = pydicom.dcmread(dicom_files.path("CT_small.dcm"))
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = length // (512 * 512 * 2)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with path.open("r+b") as out:
        out.seek(0, 2)
        out.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00" + struct.pack("<I", length))
        out.truncate(out.tell() + written)  # zeros, not written: a sparse file


@pytest.mark.parametrize(
    ("written", "stored"), [(256 << 20, True), (1 << 20, False)], ids=["whole", "truncated"]
)
def test_a_large_object_is_ingested_in_bounded_memory(archive, written, stored) -> None:
    store, index = archive
    key = "incoming/big/frames.dcm"
    path = store.path(key)
    path.parent.mkdir(parents=True)
    _with_pixel_length(path, 256 << 20, written)
    tracemalloc.start()
    try:
        outcome = ingest.ingest(key, store=store, index=index, inflate_limit=32 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome is not None and outcome.status == ("stored" if stored else "failed")
    assert peak < 24 << 20, f"{peak / (1 << 20):.0f} MB for a 256 MB object"
    if not stored:
        result = json.loads(store.read("results/big/frames.dcm.json") or b"")
        assert result["failureReason"] == failures.CANNOT_UNDERSTAND
        assert store.stat("quarantine/big/frames.dcm") is not None


def test_a_deflate_bomb_is_quarantined_within_the_budget(archive) -> None:
    store, index = archive
    data = fuzz.deflated_data_set(64)  # the 64 MB bomb, built once per process
    store.put("incoming/bomb.dcm", data)
    tracemalloc.start()
    try:
        outcome = ingest.ingest(
            "incoming/bomb.dcm", store=store, index=index, inflate_limit=8 << 20
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _assert_kept(store, "incoming/bomb.dcm", data, outcome)
    result = json.loads(store.read("results/bomb.dcm.json") or b"")
    assert result["failureReason"] == failures.TOO_LARGE
    assert peak < 48 << 20, f"{peak / (1 << 20):.0f} MB"


# ---------------------------------------------------------------- signed URLs


_queries = st.dictionaries(
    st.sampled_from(
        ["expires", "type", "name", "method", "uploadId", "partNumber", "length", "signature", "x"]
    ),
    st.text(max_size=30) | st.from_regex(r"-?\d{1,20}", fullmatch=True),
    max_size=9,
)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=30), query=_queries, method=st.sampled_from(["GET", "HEAD", "PUT"]))
def test_any_query_is_a_grant_or_a_refusal_with_a_reason(key, query, method) -> None:
    signer = UrlSigner(SECRET, "http://h")
    with pytest.raises(UrlRefused) as refused:  # only a URL this signer signed grants
        signer.verify(key, query, method)
    assert refused.value.code in {"AccessDenied", "SignatureDoesNotMatch"}
    assert refused.value.message


@pytest.fixture(scope="module")
def object_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    server = ObjectServer(("127.0.0.1", 0), UrlSigner(SECRET, ""), tmp_path_factory.mktemp("srv"))
    server.start()
    yield server
    server.stop()


_raw = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="#"), max_size=40
)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT"]),
    key=_raw,
    query=_raw,
    body=st.binary(max_size=64),
)
def test_the_object_server_answers_any_url_with_a_status(
    object_server, method, key, query, body
) -> None:
    url = f"{object_server.base_url}{PATH_PREFIX}{quote(key)}?{quote(query, safe='=&%')}"
    reply = requests.request(method, url, data=body if method == "PUT" else None, timeout=10)
    assert reply.status_code in {403, 404}, reply.text
    if method != "HEAD":
        assert reply.json()["message"]
