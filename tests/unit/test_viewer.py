"""The viewer resources' use cases on in-memory adapters: validators, compression, the
representative image, fallbacks."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from datetime import UTC, datetime

import pydicom
import pytest

from shared.dicom.validate import validate
from shared.dicomweb.wado import FrameAccept
from shared.errors import NotAcceptable, NotFound
from shared.ports import InstanceRow
from shared.services import retrieve, viewer
from shared.services.store import _record
from tests import dicom_files
from tests.fakes import FakeObjectStore, instance_row

BASE = "https://h/v1/o3-dpacs-wado"


class _Anonymizer:
    def __call__(self, data: bytes) -> bytes:
        return data

    def uid(self, uid: str) -> str:
        return uid


def _stored(store: FakeObjectStore, name: str = "CT_small.dcm", **changes: object) -> InstanceRow:
    data = dicom_files.with_new_uids(name, **changes)  # type: ignore[arg-type]
    record = _record(validate(data), "AE", datetime.now(UTC))
    store.put(record.blob_key, data)
    return instance_row(record)


def _delivery(store: FakeObjectStore, inline_limit: int = 4_500_000) -> retrieve.Delivery:
    return retrieve.Delivery(store, inline_limit, 300, _Anonymizer())


def test_metadata_from_the_index_and_from_the_file_are_the_same() -> None:
    store = FakeObjectStore()
    row = _stored(store)
    request = viewer.MetadataRequest(BASE)
    indexed = viewer.metadata([row], request, _delivery(store))
    rebuilt = viewer.metadata([dataclasses.replace(row, metadata=b"")], request, _delivery(store))
    assert isinstance(indexed, retrieve.Inline)
    assert isinstance(rebuilt, retrieve.Inline)
    assert json.loads(indexed.body) == json.loads(rebuilt.body)


def test_the_etag_names_the_content_and_if_none_match_gives_not_modified() -> None:
    store = FakeObjectStore()
    rows = [_stored(store), _stored(store)]
    tag = viewer.etag(rows, anonymize=False)
    assert tag == viewer.etag(list(reversed(rows)), anonymize=False)
    assert tag != viewer.etag(rows, anonymize=True)
    assert tag != viewer.etag(rows[:1], anonymize=False)
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        outcome = viewer.metadata(
            rows, viewer.MetadataRequest(BASE, if_none_match=header), _delivery(store)
        )
        assert outcome == retrieve.NotModified(tag)
    outcome = viewer.metadata(
        rows, viewer.MetadataRequest(BASE, if_none_match='"x"'), _delivery(store)
    )
    assert isinstance(outcome, retrieve.Inline)


def test_gzip_is_decided_before_the_inline_limit() -> None:
    store = FakeObjectStore()
    rows = [_stored(store) for _ in range(20)]
    plain = viewer.metadata(rows, viewer.MetadataRequest(BASE), _delivery(store))
    assert isinstance(plain, retrieve.Inline)
    size = len(plain.body)
    packed = gzip.compress(plain.body, 6)
    limit = (size + len(packed)) // 2  # the plain body is over it, the compressed one under
    request = viewer.MetadataRequest(BASE, accepts_gzip=True)
    outcome = viewer.metadata(rows, request, _delivery(store, limit))
    assert isinstance(outcome, retrieve.Inline)
    assert outcome.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(outcome.body) == plain.body
    tiny = viewer.metadata(rows, request, _delivery(store, 100))
    assert isinstance(tiny, retrieve.Redirect)


def test_the_representative_image_is_the_middle_one_of_the_first_series() -> None:
    store = FakeObjectStore()
    study = pydicom.uid.generate_uid()
    first = [_stored(store, study=study, series="1.2.3.1") for _ in range(3)]
    second = [_stored(store, study=study, series="1.2.3.2") for _ in range(5)]
    assert viewer.representative(first + second) == first[1]
    text = _stored(store, "rtplan.dcm", study=study)
    with pytest.raises(NotAcceptable):
        viewer.representative([text])


def test_frames_beyond_the_instance_are_404_and_objects_without_pixels_406() -> None:
    store = FakeObjectStore()
    row = _stored(store)
    with pytest.raises(NotFound):
        viewer.frames(
            row, (2,), FrameAccept(original=True), anonymize=False, delivery=_delivery(store)
        )
    plan = _stored(store, "rtplan.dcm")
    with pytest.raises(NotAcceptable):
        viewer.frames(
            plan, (1,), FrameAccept(original=True), anonymize=False, delivery=_delivery(store)
        )


def test_bulk_data_of_a_path_that_names_nothing_is_404() -> None:
    store = FakeObjectStore()
    row = _stored(store)
    with pytest.raises(NotFound):
        viewer.bulk(row, "00100010", anonymize=False, delivery=_delivery(store))
    outcome = viewer.bulk(row, "7FE00010", anonymize=False, delivery=_delivery(store))
    assert isinstance(outcome, retrieve.Inline)
    ds = pydicom.dcmread(io.BytesIO(store.get(row.blob_key)))
    assert ds.PixelData in outcome.body
