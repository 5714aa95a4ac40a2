"""The edge (``shared.http``): one log line per request, whatever its outcome, with the
fields the route added; headers written from the values services return; the request read
through Powertools' event."""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from shared import bootstrap, config, http
from shared.services.retrieve import Media
from tests.fakes import FakeBlobStore, FakeIndex
from tests.support import dicom_files
from tests.support.handlers import Context, load, rest_event

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


def test_concurrent_invocations_in_one_process_each_read_their_own_request() -> None:
    """Powertools keeps the current event on a class shared by every resolver in the process.
    Lambda runs one invocation per process; the local stack runs several in threads (each
    in a container of its own): each must read its own request, or a STOW stores one client's
    instance under another's reply."""
    fakes = bootstrap.build(config.settings(), objects=FakeBlobStore(), index=FakeIndex())
    both_inside = threading.Barrier(2, timeout=10)

    def container() -> Any:
        app = http.make_resolver(lambda: fakes, transaction="STOW-RS")

        @app.post("/o3-dpacs-wado/stowRsListener/<calling_aet>/studies")
        def echo(calling_aet: str) -> Response[str]:
            both_inside.wait()  # the other invocation has started meanwhile
            body = http.body_bytes(app.current_event).decode()
            name = app.lambda_context.function_name
            return Response(200, "text/plain", f"{calling_aet} {body} {name}")

        return app

    answers: dict[str, str] = {}

    def invoke(app: Any, name: str) -> None:
        event = rest_event(
            "POST",
            RESOURCE,
            f"/o3-dpacs-wado/stowRsListener/{name}/studies",
            body=name.encode(),
            headers={"Content-Type": "text/plain"},
            path_parameters={"CALLING_AET": name},
        )
        context = Context()
        context.function_name = name
        response = app.resolve(event, context)
        answers[name] = (
            base64.b64decode(response["body"]).decode()
            if response.get("isBase64Encoded")
            else response["body"]
        )

    threads = [threading.Thread(target=invoke, args=(container(), n)) for n in ("AE1", "AE2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert answers == {"AE1": "AE1 AE1 AE1", "AE2": "AE2 AE2 AE2"}
