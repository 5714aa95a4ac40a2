"""Handlers stop their own work before API Gateway's 29 s: our 503 with
Retry-After, or the part of the answer the protocol allows, never a bare 504."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from shared import bootstrap, config, deadline
from shared.deadline import Deadline
from shared.dicom import failures
from shared.dicomweb import wado
from shared.dicomweb.multipart import Part
from shared.errors import OutOfTime
from shared.ports import InstanceRow
from shared.services import retrieve, viewer
from shared.services.anonymizer import Anonymizer
from shared.services.store import StoreRequest, store
from tests.fakes import FakeCatalog, FakeIndex, FakeObjectStore
from tests.support import dicom_files
from tests.support.handlers import Context, json_body, load, quiet, rest_event


@dataclass
class Clock:
    """A clock that moves only when told."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class _Remaining:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


# ------------------------------------------------------------------------------ the helper


def test_the_deadline_keeps_a_margin_before_the_function_timeout() -> None:
    clock = Clock()
    found = deadline.from_context(_Remaining(20_000), clock)
    assert found.remaining() == pytest.approx(20.0 - deadline.STOP_MARGIN_S)


def test_the_deadline_never_passes_api_gateways_29_s_less_a_cold_start() -> None:
    clock = Clock()
    found = deadline.from_context(_Remaining(900_000), clock)  # a 15-minute function
    gateway = deadline.API_GATEWAY_TIMEOUT_S - deadline.COLD_START_ALLOWANCE_S
    assert found.remaining() == pytest.approx(gateway - deadline.STOP_MARGIN_S)
    assert deadline.from_context(object(), clock).remaining() == found.remaining()


def test_check_raises_out_of_time_once_passed_with_a_retry_after() -> None:
    clock = Clock()
    found = Deadline.after(1.0, clock)
    found.check("the work")
    clock.now += 1.0
    assert found.expired()
    with pytest.raises(OutOfTime, match="the work did not finish") as raised:
        found.check("the work")
    assert raised.value.status == 503
    assert raised.value.retry_after == 5


def test_never_does_not_expire() -> None:
    assert not Deadline.never().expired()


# ------------------------------------------------------------------------------ WADO


class _SlowStore(FakeObjectStore):
    """Each read takes ``seconds`` of the fake clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def get(self, key: str) -> bytes:
        self.clock.now += self.seconds
        return super().get(key)


def _stored_study(store_: FakeObjectStore, count: int) -> list[InstanceRow]:
    study = "1.2.826.0.1.3680043.8.498.77"
    index = FakeIndex()
    for _ in range(count):
        data = dicom_files.with_new_uids(study=study)
        request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "T", "h")
        assert store(request, objects=store_, index=index).status == 200
    return [
        InstanceRow(
            r.study_uid,
            r.series_uid,
            r.sop_instance_uid,
            transfer_syntax=r.transfer_syntax,
            blob_key=r.blob_key,
            size=r.size,
        )
        for r in index.instances.values()
    ]


def _delivery(objects: FakeObjectStore, found: Deadline, limit: int) -> retrieve.Delivery:
    return retrieve.Delivery(
        store=objects,
        inline_limit=limit,
        presign_ttl=300,
        anonymizer=lambda data: data,
        deadline=found,
    )


@pytest.mark.parametrize("inline_limit", [4_500_000, 100], ids=["inline", "assembled"])
def test_a_study_retrieve_stops_between_instances_and_leaves_no_assembled_body(
    inline_limit: int,
) -> None:
    clock = Clock()
    objects = _SlowStore(clock, seconds=0.0)
    rows = _stored_study(objects, 4)
    stored = set(objects.objects)
    objects.seconds = 4.0  # 4 s per instance read, 10 s allowed: the 4th is not begun
    found = Deadline.after(10.0, clock)
    with pytest.raises(OutOfTime, match="series or an instance at a time"):
        retrieve.retrieve_rs(
            rows,
            transfer_syntax=None,
            anonymize=False,
            delivery=_delivery(objects, found, inline_limit),
        )
    assert set(objects.objects) == stored, "a partly assembled body was left behind"
    assert clock.now - 1000.0 == 12.0, "an instance was read after the deadline"


def test_a_study_retrieve_within_the_deadline_is_whole() -> None:
    clock = Clock()
    objects = _SlowStore(clock, seconds=1.0)
    rows = _stored_study(objects, 3)
    outcome = retrieve.retrieve_rs(
        rows,
        transfer_syntax=None,
        anonymize=False,
        delivery=_delivery(objects, Deadline.after(10.0, clock), 4_500_000),
    )
    assert isinstance(outcome, retrieve.Inline)
    assert outcome.body.count(b"DICM") == 3


def test_several_frames_stop_between_renderings() -> None:
    clock = Clock()
    objects = _SlowStore(clock, seconds=0.0)
    data = dicom_files.with_new_uids("emri_small.dcm")  # 10 frames
    request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "T", "h")
    index = FakeIndex()
    assert store(request, objects=objects, index=index).status == 200
    (record,) = index.instances.values()
    row = InstanceRow(
        record.study_uid, record.series_uid, record.sop_instance_uid, blob_key=record.blob_key
    )
    asked = wado.parse_rendered(None, "image/png")
    found = Deadline.after(1.0, clock)
    delivery = _delivery(objects, found, 4_500_000)
    outcome = viewer.rendered(row, asked, (1, 2, 3), delivery)
    assert isinstance(outcome, retrieve.Inline)
    assert outcome.body.count(b"\x89PNG") == 3
    clock.now += 2.0
    with pytest.raises(OutOfTime, match="decoding these frames"):
        viewer.rendered(row, asked, (1, 2, 3), delivery)


# ------------------------------------------------------------------------------ STOW


class _SlowBlobs(FakeObjectStore):
    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def put(self, key: str, data: bytes) -> None:
        self.clock.now += self.seconds
        super().put(key, data)


def _parts(count: int) -> list[Part]:
    return [
        Part(dicom_files.with_new_uids(), {"content-type": "application/dicom"})
        for _ in range(count)
    ]


def test_stow_out_of_time_answers_what_it_stored_and_fails_the_rest_retryably() -> None:
    clock = Clock()
    blobs, index = _SlowBlobs(clock, seconds=3.0), FakeIndex()
    request = StoreRequest(_parts(5), "T", "h", deadline=Deadline.after(5.0, clock))
    result = store(request, objects=blobs, index=index)
    assert result.status == 202
    assert len(result.stored) == 2  # 0 s and 3 s began in time; 6 s did not
    assert [f.reason for f in result.failed] == [failures.OUT_OF_RESOURCES] * 3
    assert len(index.instances) == 2


def test_stow_out_of_time_before_anything_is_stored_is_503() -> None:
    clock = Clock()
    request = StoreRequest(_parts(2), "T", "h", deadline=Deadline.after(0.0, clock))
    blobs, index = FakeObjectStore(), FakeIndex()
    with pytest.raises(OutOfTime):
        store(request, objects=blobs, index=index)
    assert blobs.objects == {}
    assert index.instances == {}


# ------------------------------------------------------------------------------ handlers


class _NearlyOut(Context):
    """A Lambda context with less time left than the stop margin."""

    def get_remaining_time_in_millis(self) -> int:
        return int(deadline.STOP_MARGIN_S * 1000) - 500


def test_the_wado_rs_handler_answers_503_with_retry_after_not_a_timeout() -> None:
    objects = FakeObjectStore()
    rows = _stored_study(objects, 2)
    module = load("wado_rs")
    study = rows[0].study_uid
    event = rest_event(
        "GET",
        "/o3-dpacs-wado/rs/studies/{STUDY}",
        f"/o3-dpacs-wado/rs/studies/{study}",
        path_parameters={"STUDY": study},
    )
    fakes = bootstrap.build(
        config.settings(),
        objects=objects,
        catalog=FakeCatalog(rows),
        anonymizer=Anonymizer(lambda: b"k"),
    )
    with module.archive.using(fakes), quiet(module):
        response = module.lambda_handler(event, _NearlyOut())
        in_time = module.lambda_handler(event, Context())
    assert response["statusCode"] == 503
    assert response["multiValueHeaders"]["Retry-After"] == ["5"]
    assert "did not finish" in json_body(response)["message"]
    assert in_time["statusCode"] == 200


def test_the_stow_handler_answers_503_with_retry_after_not_a_timeout() -> None:
    module = load("stow")
    body = b"".join(
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p.content + b"\r\n" for p in _parts(2)
    )
    event = rest_event(
        "POST",
        "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
        "/o3-dpacs-wado/stowRsListener/T/studies",
        body=body + b"--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        path_parameters={"CALLING_AET": "T"},
    )
    fakes = bootstrap.build(config.settings(), objects=FakeObjectStore(), index=FakeIndex())
    with module.archive.using(fakes), quiet(module):
        response = module.lambda_handler(event, _NearlyOut())
    assert response["statusCode"] == 503
    assert response["multiValueHeaders"]["Retry-After"] == ["5"]
    assert json.loads(response["body"])["message"].startswith("no instance could be stored")
