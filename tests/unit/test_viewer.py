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

from shared import http
from shared.dicom.validate import validate
from shared.dicomweb.wado import FrameAccept, parse_rendered
from shared.errors import NotAcceptable, NotFound
from shared.ports import InstanceRow
from shared.services import retrieve, viewer
from shared.services.store import _record
from tests.fakes import FakeObjectStore, instance_row
from tests.support import dicom_files

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
    assert http.media_headers(outcome.media)["Content-Encoding"] == "gzip"
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


def _frame_bodies(outcome: retrieve.Outcome) -> list[bytes]:
    assert isinstance(outcome, retrieve.Inline)
    body = outcome.body
    boundary = body.split(b"\r\n", 1)[0]
    parts = body.split(boundary)[1:-1]
    return [p.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")] for p in parts]


@pytest.mark.parametrize(
    ("name", "ranged"),
    [
        ("emri_small.dcm", True),  # 10 frames, 16 bit, explicit VR little endian
        ("SC_rgb.dcm", True),
        ("rtdose.dcm", True),  # multi-frame 32 bit, implicit VR little endian
        ("MR_small_bigendian.dcm", False),  # big endian: the whole-file path swaps bytes
        ("emri_small_jpeg_2k_lossless.dcm", False),  # compressed: the whole-file path
        ("liver_1frame.dcm", False),  # 1-bit SEG frames: cut at bits from the whole file
    ],
)
def test_frames_of_large_native_instances_are_read_by_range(
    name: str, ranged: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bytes as the whole-file path; only the header and the frames are read."""
    store = FakeObjectStore()
    row = _stored(store, name)
    ds = pydicom.dcmread(io.BytesIO(store.get(row.blob_key)))
    numbers = tuple(range(1, min(int(ds.get("NumberOfFrames") or 1), 3) + 1))
    accept = FrameAccept(original=True)
    whole = _frame_bodies(
        viewer.frames(row, numbers, accept, anonymize=False, delivery=_delivery(store))
    )
    monkeypatch.setattr(viewer, "RANGED_MIN_BYTES", 0)
    store.ranged = 0
    by_range = _frame_bodies(
        viewer.frames(row, numbers, accept, anonymize=False, delivery=_delivery(store))
    )
    assert by_range == whole
    frames_read = store.ranged - min(row.size, 1 << 20)
    if ranged:
        assert frames_read == sum(len(f) for f in whole)
    else:
        assert frames_read <= 0  # only the header was looked at


def test_an_object_too_large_to_read_whole_is_413_with_the_numbers_but_its_frames_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.errors import PayloadTooLarge

    store = FakeObjectStore()
    row = _stored(store, "emri_small.dcm")
    tight = dataclasses.replace(_delivery(store), memory_budget=row.size)  # < 2x the object
    with pytest.raises(PayloadTooLarge, match="bytes of memory"):
        viewer.rendered(row, parse_rendered({}, "image/jpeg"), (1,), tight)
    monkeypatch.setattr(viewer, "RANGED_MIN_BYTES", 0)
    outcome = viewer.frames(row, (1,), FrameAccept(original=True), anonymize=False, delivery=tight)
    assert isinstance(outcome, retrieve.Inline)
