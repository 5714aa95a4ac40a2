"""The pure helpers of bench/bench_ohif.py and its same-origin proxy (no browser, no OHIF)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from bench import bench_ohif
from tools import viewer

ROUTES = {"/dicom-web/": "http://127.0.0.1:8042/dicom-web/"}


def test_upstream_url_keeps_the_rest_of_the_path_and_the_query() -> None:
    assert (
        bench_ohif.upstream_url("/dicom-web/studies?StudyInstanceUID=1.2&limit=1", ROUTES)
        == "http://127.0.0.1:8042/dicom-web/studies?StudyInstanceUID=1.2&limit=1"
    )
    assert bench_ohif.upstream_url("/dicom-web/", ROUTES) == "http://127.0.0.1:8042/dicom-web/"


@pytest.mark.parametrize(
    "path",
    [
        "/viewer?StudyInstanceUIDs=1.2",  # OHIF's route: the static server's
        "/app-config.js",
        "/dicom-webx/studies",  # the prefix ends with its slash
        "/dicom-web",
        "/dicom-web/../system",  # no way out of the proxied root
        "/x/dicom-web/studies",
    ],
)
def test_other_paths_are_not_proxied(path: str) -> None:
    assert bench_ohif.upstream_url(path, ROUTES) is None


def test_forwarded_drops_hop_by_hop_headers_host_and_length() -> None:
    headers = [
        ("Host", "127.0.0.1:3001"),
        ("Connection", "keep-alive"),
        ("Authorization", "o3k_key"),
        ("Accept", "multipart/related; type=application/octet-stream"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "12"),
        ("Accept-Encoding", "gzip"),
    ]
    assert bench_ohif.forwarded(headers) == [
        ("Authorization", "o3k_key"),
        ("Accept", "multipart/related; type=application/octet-stream"),
        ("Accept-Encoding", "gzip"),
    ]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://h/rs/studies/1/series/2/instances/3/frames/1", "frame"),
        ("http://h/rs/studies/1/metadata", "metadata"),
        ("http://h/rs/studies/1/series/2/metadata", "metadata"),
        ("http://h/qido/BENCH/studies?StudyInstanceUID=1", "qido"),
        ("http://h/dicom-web/studies/1/series", "qido"),
        ("http://h/rs/studies/1/series/2/instances/3/rendered", "rendered"),
        ("http://h/rs/studies/1/series/2/thumbnail", "rendered"),
        ("http://h/rs/studies/1/series/2/instances/3", "other"),
    ],
)
def test_request_kind(url: str, kind: str) -> None:
    assert bench_ohif.request_kind(url) == kind


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_grey_std_tells_a_blank_canvas_from_an_image() -> None:
    assert bench_ohif.grey_std(_png(np.zeros((64, 64, 4)))) == 0.0
    ramp = np.tile(np.arange(256, dtype=np.uint8), (32, 1))
    assert bench_ohif.grey_std(_png(ramp)) > bench_ohif.MIN_PIXEL_STD


def test_the_page_clock_has_its_threshold_and_period() -> None:
    assert "THRESHOLD" not in bench_ohif.PAGE_CLOCK_JS
    assert f"state.std >= {bench_ohif.MIN_PIXEL_STD}" in bench_ohif.PAGE_CLOCK_JS
    assert f"}}, {bench_ohif.POLL_MS});" in bench_ohif.PAGE_CLOCK_JS


def test_orthanc_config_has_no_key_extension_and_its_roots() -> None:
    text = bench_ohif.config_without_key(bench_ohif.DicomWebRoot("http://127.0.0.1:9/dicom-web"))
    assert "extensions: []," in text
    assert "[o3ApiKeyExtension]" not in text
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert f'"{root}": "http://127.0.0.1:9/dicom-web"' in text


def test_summarize_counts_what_started_before_the_first_image() -> None:
    roots = ("http://a/qido/BENCH", "http://a/rs")
    frame = "http://a/rs/studies/1/series/2/instances/3/frames/1"
    resources = [
        {"url": "http://a/app.bundle.js", "start": 10.0, "end": 900.0, "transfer": 5_000_000},
        {"url": "http://a/qido/BENCH/studies?x=1", "start": 1000.0, "end": 1010.0, "transfer": 0},
        {"url": "http://a/rs/studies/1/metadata", "start": 1100.0, "end": 1150.0, "transfer": 900},
        {"url": frame, "start": 2000.0, "end": 2050.0, "transfer": 0},
        {"url": frame + "0", "start": 2900.0, "end": 3100.0, "transfer": 0},  # still loading
        {"url": frame + "1", "start": 3500.0, "end": 3600.0, "transfer": 0},  # after
    ]
    log = {
        "http://a/qido/BENCH/studies?x=1": {"status": 200, "bytes": 700},
        frame: {"status": 200, "bytes": 524_751},
    }
    preflights = [frame, frame + "1", "http://a/qido/BENCH/studies?x=1"]
    summary = bench_ohif.summarize(3000.0, resources, log, roots, preflights)
    assert summary["first_image_ms"] == 3000.0
    assert summary["requests"] == 4
    assert summary["completed"] == 3
    assert summary["bytes"] == 700 + 900 + 524_751  # cross-origin entries: the network log
    assert summary["preflights"] == 2  # the one after the first image is not counted
    assert summary["by_kind"] == {"qido": 1, "metadata": 1, "frame": 2}
    assert summary["first_request_ms"] == 1000.0
    assert summary["metadata_ms"] == 1150.0
    assert summary["first_frame_ms"] == 2050.0
    assert summary["image_after_first_request_ms"] == 2000.0


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as the local stack (and Orthanc) answer

    def do_GET(self) -> None:
        body = f"{self.path} {self.headers.get('Authorization')}".encode()
        self.send_response(200 if "missing" not in self.path else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "index.html").write_text("<html>OHIF</html>")
    config = tmp_path / viewer.CONFIG_FILE
    config.write_text("window.config = {};")
    routes = {"/dicom-web/": f"http://127.0.0.1:{upstream.server_address[1]}/dicom-web/"}
    try:
        with bench_ohif.Site(tmp_path, config, routes) as served:
            yield served.url
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_the_site_serves_ohif_and_proxies_the_archive(site: str) -> None:
    with requests.Session() as session:
        assert session.get(f"{site}/viewer?StudyInstanceUIDs=1").text == "<html>OHIF</html>"
        assert session.get(f"{site}/app-config.js").text == "window.config = {};"
        answer = session.get(
            f"{site}/dicom-web/studies?StudyInstanceUID=1.2", headers={"Authorization": "k"}
        )
        assert answer.status_code == 200
        assert answer.text == "/dicom-web/studies?StudyInstanceUID=1.2 k"
        assert "Connection" not in answer.headers or answer.headers["Connection"] != "close"
        assert session.get(f"{site}/dicom-web/missing").status_code == 404


def test_the_site_answers_kept_alive_requests_without_a_delayed_ack(site: str) -> None:
    """Nagle's algorithm off: a kept-alive connection gets each answer in well under the
    40 ms of a delayed ACK."""
    with requests.Session() as session:
        session.get(f"{site}/dicom-web/studies")
        times = []
        for _ in range(10):
            started = time.perf_counter()
            session.get(f"{site}/dicom-web/studies")
            times.append(time.perf_counter() - started)
    assert sorted(times)[len(times) // 2] < 0.03
