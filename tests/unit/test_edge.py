"""The edge (``shared.http``): one log line per request, whatever its outcome, with the
fields the route added; headers written from the values services return; the request read
through Powertools' event."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from shared import bootstrap, config, http
from shared.services.retrieve import Media
from tests import dicom_files
from tests.fakes import FakeBlobStore, FakeIndex
from tests.handlers import Context, load, rest_event

RESOURCE = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies"


def _post(module: Any, body: bytes, content_type: str) -> dict[str, Any]:
    event = rest_event(
        "POST",
        RESOURCE,
        "/o3-dpacs-wado/stowRsListener/AE/studies",
        body=body,
        headers={"Content-Type": content_type},
        path_parameters={"CALLING_AET": "AE"},
    )
    response: dict[str, Any] = module.lambda_handler(event, Context())
    return response


def test_each_request_leaves_one_line_with_the_route_s_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = load("stow")
    fakes = bootstrap.build(config.settings(), objects=FakeBlobStore(), index=FakeIndex())
    caplog.set_level(logging.INFO)
    with module.archive.using(fakes):
        assert _post(module, dicom_files.with_new_uids(), "application/dicom")["statusCode"] == 200
        assert _post(module, b"x", "text/plain")["statusCode"] == 415
    stored, refused = [vars(r) for r in caplog.records if r.getMessage() == "stow"]
    assert stored["transaction"] == "STOW-RS"
    assert stored["outcome"] == 200
    assert (stored["instances"], stored["stored"], stored["failed"]) == (1, 1, 0)
    assert stored["duration_ms"] >= 0
    assert refused["outcome"] == 415
    assert "instances" not in refused  # the route never ran


def test_headers_are_written_from_what_the_body_is() -> None:
    media = Media(
        "application/dicom",
        boundary="b1",
        filename="x.dcm",
        attachment=True,
        etag='"e"',
        gzipped=True,
        varies_by_encoding=True,
    )
    assert media.content_type == 'multipart/related; type="application/dicom"; boundary=b1'
    assert http.media_headers(media) == {
        "Content-Disposition": 'attachment; filename="x.dcm"',
        "ETag": '"e"',
        "Vary": "Accept-Encoding",
        "Content-Encoding": "gzip",
    }
    plain = Media("image/jpeg", filename="image.jpg")
    assert plain.content_type == "image/jpeg"
    assert http.media_headers(plain) == {}


def test_headers_are_read_case_insensitively_repeated_ones_joined() -> None:
    event = rest_event("GET", "/r", "/r", headers={"Accept": "a"})
    event["multiValueHeaders"]["Accept"] = ["a", "b"]
    request = APIGatewayProxyEvent(event)
    assert http.header(request, "accept") == "a, b"
    assert http.header(request, "HOST") == "example.execute-api.us-east-1.amazonaws.com"
    assert http.header(request, "x-none") is None
    assert http.body_bytes(APIGatewayProxyEvent(rest_event("POST", "/r", "/r", body=b"\0"))) == (
        b"\0"
    )
