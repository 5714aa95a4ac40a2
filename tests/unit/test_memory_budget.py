"""Bounded memory for every request: what a file declares is checked before anything is
decoded, inflated or transcoded, and the handler's peak (tracemalloc) stays under the budget.

Handlers run in-process on in-memory adapters with the function memory a Lambda context
gives; ``shared.budget`` derives the budget from it (60 %).
"""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import pydicom
import pytest

from shared import bootstrap, budget, config
from shared.dicomweb import stow_result
from shared.dicomweb.multipart import Part
from shared.ports import InstanceRow
from shared.services.anonymizer import Anonymizer
from shared.services.store import StoreRequest, store
from tests.fakes import FakeCatalog, FakeIndex, FakeObjectStore
from tests.support import dicom_files, fuzz
from tests.support.handlers import Context, json_body, load, quiet, rest_event

MB = 1 << 20


class SizedContext(Context):
    def __init__(self, memory_mb: int) -> None:
        self.memory_limit_in_mb = memory_mb


def _peak(call: Callable[[], Any]) -> tuple[Any, int]:
    call()  # warm: imports and caches are not the request's memory
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# ------------------------------------------------------------------------------ STOW


def _stow(data: bytes, memory_mb: int) -> dict[str, Any]:
    module = load("stow")
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    event = rest_event(
        "POST",
        "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
        "/o3-dpacs-wado/stowRsListener/MEM/studies",
        body=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        path_parameters={"CALLING_AET": "MEM"},
    )
    fakes = bootstrap.build(config.settings(), objects=FakeObjectStore(), index=FakeIndex())
    with module.archive.using(fakes), quiet(module):
        response: dict[str, Any] = module.lambda_handler(event, SizedContext(memory_mb))
    return response


@pytest.mark.parametrize("inflates_to_mb", [64, 256, 1024])
def test_a_deflate_bomb_at_stow_is_refused_within_the_budget(inflates_to_mb: int) -> None:
    bomb = fuzz.deflated_data_set(inflates_to_mb)
    memory = 128  # the smallest Lambda: budget 76 MB, inflated data sets up to 25 MB
    response, peak = _peak(lambda: _stow(bomb, memory))
    assert response["statusCode"] == 409
    failed = json_body(response)["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [stow_result.TOO_LARGE]
    assert peak < budget.request_budget(memory), f"peak {peak:,} B"
    assert peak < 8 * len(bomb) + 4 * MB, f"peak {peak:,} B for a {len(bomb):,} B body"


# ------------------------------------------------------------------------------ WADO-URI


def _stored(data: bytes) -> tuple[FakeObjectStore, FakeCatalog, InstanceRow]:
    objects, index = FakeObjectStore(), FakeIndex()
    request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "MEM", "h")
    assert store(request, objects=objects, index=index).status == 200
    (record,) = index.instances.values()
    row = InstanceRow(
        record.study_uid,
        record.series_uid,
        record.sop_instance_uid,
        attrs=json.loads(record.instance_json),
        series_attrs=json.loads(record.series_json),
        study_attrs=json.loads(record.study_json),
        transfer_syntax=record.transfer_syntax,
        blob_key=record.blob_key,
        size=record.size,
    )
    return objects, FakeCatalog([row]), row


def _wado_uri(data: bytes, memory_mb: int, **params: str) -> dict[str, Any]:
    objects, catalog, row = _stored(data)
    module = load("wado_uri")
    query = {
        "requestType": "WADO",
        "studyUID": row.study_uid,
        "seriesUID": row.series_uid,
        "objectUID": row.sop_instance_uid,
        **params,
    }
    event = rest_event("GET", "/o3-dpacs-wado/wado", "/o3-dpacs-wado/wado")
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    fakes = bootstrap.build(
        config.settings(), objects=objects, catalog=catalog, anonymizer=Anonymizer(lambda: b"k")
    )
    with module.archive.using(fakes), quiet(module):
        response: dict[str, Any] = module.lambda_handler(event, SizedContext(memory_mb))
    return response


BOMBS = {
    "40k x 40k native": lambda: fuzz.declared_image(rows=40000, columns=40000),
    "65535 x 65535 x 1000 frames": lambda: fuzz.declared_image(
        rows=65535, columns=65535, frames=1000
    ),
    "40k x 40k J2K": lambda: fuzz.declared_image(rows=40000, columns=40000, codestream=True),
}
ASKS = {
    "render": {"contentType": "image/jpeg", "rows": "256"},
    "native": {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2"},
    "j2k": {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.90"},
}


# A J2K file asked for as J2K is served as stored: nothing is decoded, nothing to refuse.
DECODING = [
    (b, a) for b in sorted(BOMBS) for a in sorted(ASKS) if (b, a) != ("40k x 40k J2K", "j2k")
]


@pytest.mark.parametrize(("bomb", "ask"), DECODING)
def test_tiny_files_declaring_huge_images_are_413_with_the_numbers(bomb: str, ask: str) -> None:
    data = BOMBS[bomb]()
    memory = 1769
    response, peak = _peak(lambda: _wado_uri(data, memory, **ASKS[ask]))
    assert response["statusCode"] == 413, json_body(response)
    message = json_body(response)["message"]
    assert "bytes of memory" in message and f"{budget.request_budget(memory):,}" in message
    assert peak < 16 * MB, f"peak {peak:,} B while refusing"


def test_a_codestream_declaring_more_than_its_attributes_is_406() -> None:
    data = fuzz.declared_image(rows=40000, columns=40000, codestream=True)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = 64, 64  # the attributes are modest, the SIZ segment is not
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    response, peak = _peak(lambda: _wado_uri(out.getvalue(), 1769, contentType="image/jpeg"))
    assert response["statusCode"] == 406
    assert "declares a larger image" in json_body(response)["message"]
    assert peak < 16 * MB


def test_a_fragment_table_that_lies_is_answered_without_a_server_error() -> None:
    for seed in range(6):
        data = fuzz.lying_fragments(random.Random(seed), b"")
        for ask in ASKS.values():
            response, peak = _peak(lambda ask=ask, data=data: _wado_uri(data, 1769, **ask))
            assert response["statusCode"] < 500, response
            assert peak < budget.request_budget(1769)


@pytest.mark.skipif(not dicom_files.available(), reason="needs pydicom-data")
def test_a_large_real_image_renders_and_transcodes_within_the_budget() -> None:
    data = dicom_files.data("RG1_UNCI.dcm")  # CR 1841 x 1955 x 16 bit, 7.2 MB
    memory = 1769
    for ask in ASKS.values():
        response, peak = _peak(lambda ask=ask: _wado_uri(data, memory, **ask))
        assert response["statusCode"] in (200, 303), json_body(response)
        assert peak < budget.request_budget(memory), f"{ask}: peak {peak:,} B"


@pytest.mark.skipif(not dicom_files.available(), reason="needs pydicom-data")
def test_the_same_image_is_refused_by_a_small_function() -> None:
    data = dicom_files.data("RG1_UNCI.dcm")
    response = _wado_uri(data, 128, contentType="image/jpeg")  # 7.2 MB x 12 > 76 MB
    assert response["statusCode"] == 413
