"""OHIF's time to the first image: ``python -m bench.bench_ohif`` (``python -m bench --only ohif``).

One study of 300 CT slices (``693_UNCI.dcm``, 512x512, 526 KB each, fresh UIDs, 5 mm apart)
is stored into this archive (``python -m local``, STOW-RS) and into Orthanc 1.10.1 with its
DICOMweb plugin (from Debian, installed when missing, as ``make bench-peer`` does). The same
OHIF build (3.11.1, ``tools/viewer.py``) in the same headless Chromium (Debian ``chromium`` +
``chromium-driver``, installed when missing, as the browser test does) opens
``/viewer?StudyInstanceUIDs={study}``; the clock starts at navigation (the page's
``performance.now()`` origin) and stops when the viewport's canvas first shows an image (the
standard deviation of its grey levels reaches 8, polled every 20 ms by a script the browser
runs in the page before OHIF's own). The Performance API's resource entries give the
DICOMweb requests started and the bytes received until then; Chrome's network log says
whether any failed. Every run has a fresh browser profile (no cache); one warm-up run per
archive, then ``RUNS`` runs, interleaved; medians.

Orthanc 1.10 sends no CORS headers, so OHIF served from another origin cannot read it. Each
configuration therefore gets its own small Python server (``Site``) that serves OHIF's files
and proxies the archive's paths (``/dicom-web/`` to Orthanc, ``/o3-dpacs-wado/`` to the
local stack): the browser sees one origin, no CORS. The headline ratio compares both archives
behind the same proxy; this archive is also measured direct (cross-origin, its own CORS
answers, as ``make viewer`` runs it), and the proxy's own cost is measured (QIDO and frame
p50, through it and direct).

Orthanc's plugin is configured with ``StudiesMetadata: Full`` (its default): the
``MainDicomTags`` that ``bench_peer`` uses answers ``.../metadata`` without Rows, Columns or
the pixel module, which OHIF needs to draw anything.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import http.client
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from bench import bench_peer
from tests.support import dicom_files
from tools import viewer

SOURCE = "693_UNCI.dcm"  # pydicom-data: a 512x512 CT slice, 526 KB
SLICES = 300
RUNS = 5
WARMUPS = 1
AET = "BENCH"
MIN_PIXEL_STD = 8.0  # a blank viewport is near 0 (as tests/browser/test_ohif.py)
POLL_MS = 20
RENDER_TIMEOUT_S = 180
ORTHANC_DICOMWEB = {"StudiesMetadata": "Full", "SeriesMetadata": "Full"}

# The page-side clock: runs before OHIF's scripts in every new document (CDP
# Page.addScriptToEvaluateOnNewDocument). It raises the resource-timing buffer (250 entries by
# default: OHIF's bundles and the frames would overflow it), marks the basic viewer's tour as
# seen (a returning user, as the browser test does), and polls the viewport's canvas every
# POLL_MS: drawn down to 128x128 on a scratch canvas, grey levels (ITU-R 601 luma, as PIL's
# "L"), standard deviation. The first time it reaches the threshold is kept.
PAGE_CLOCK_JS = """
(() => {
  performance.setResourceTimingBufferSize(10000);
  try {
    localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
  } catch (e) {}
  const state = { first: null, std: 0, polls: 0 };
  window.__o3bench = state;
  const scratch = document.createElement('canvas');
  scratch.width = 128;
  scratch.height = 128;
  const timer = setInterval(() => {
    state.polls += 1;
    const canvas = document.querySelector('.cornerstone-viewport-element canvas');
    if (!canvas || !canvas.width || !canvas.height) return;
    const context = scratch.getContext('2d', { willReadFrequently: true });
    context.clearRect(0, 0, 128, 128);
    context.drawImage(canvas, 0, 0, 128, 128);
    const data = context.getImageData(0, 0, 128, 128).data;
    let sum = 0, squares = 0;
    for (let i = 0; i < data.length; i += 4) {
      const grey = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += grey;
      squares += grey * grey;
    }
    const n = data.length / 4;
    state.std = Math.sqrt(Math.max(0, squares / n - (sum / n) ** 2));
    if (state.std >= THRESHOLD) {
      state.first = performance.now();
      clearInterval(timer);
    }
  }, POLL_MS);
})();
""".replace("THRESHOLD", str(MIN_PIXEL_STD)).replace("POLL_MS", str(POLL_MS))

RESOURCES_JS = """
return performance.getEntriesByType('resource').map(e => ({
  url: e.name, start: e.startTime, end: e.responseEnd, transfer: e.transferSize,
  body: e.encodedBodySize, initiator: e.initiatorType,
}));
"""


# ----------------------------------------------------------------------------- the study


def make_study(slices: int = SLICES) -> bench_peer.Study:
    """One CT series of ``slices`` slices of 693_UNCI, 5 mm apart, fresh UIDs."""
    import pydicom

    root = f"2.25.{int(time.time() * 1000)}{os.getpid()}"
    uid, series = f"{root}.1", f"{root}.1.1"
    instances = []
    for index in range(slices):
        z = 47.0 - 5.0 * index
        data = dicom_files.with_new_uids(
            SOURCE,
            study=uid,
            series=series,
            patient_id="OHIFBENCH",
            PatientName="Bench^Ohif",
            StudyDescription="OHIF time to first image",
            InstanceNumber=index + 1,
            ImagePositionPatient=[-122.5, -112.4, z],
            SliceLocation=z,
        )
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        instances.append((sop, data))
    return bench_peer.Study(uid, series, "OHIFBENCH", "Bench^Ohif", "", tuple(instances))


# ----------------------------------------------------------------------------- OHIF configs


@dataclass(frozen=True)
class DicomWebRoot(viewer.Archive):
    """An archive whose QIDO, WADO-RS and WADO-URI roots are all ``base_url`` (Orthanc)."""

    @property
    def qido_root(self) -> str:
        return self.base_url

    @property
    def wado_root(self) -> str:
        return self.base_url

    @property
    def wado_uri_root(self) -> str:
        return self.base_url


_KEY_EXTENSION = "  extensions: [o3ApiKeyExtension],\n"


def config_without_key(archive: viewer.Archive) -> str:
    """tools/viewer.py's app-config.js without the API-key extension (Orthanc has no key;
    with the extension and no key, OHIF would prompt for one)."""
    text = viewer.app_config_js(archive, None)
    if _KEY_EXTENSION not in text:
        raise RuntimeError("tools/viewer.py's app-config.js changed: update bench_ohif")
    return text.replace(_KEY_EXTENSION, "  extensions: [],\n")


# ----------------------------------------------------------------------------- the proxy

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)


def upstream_url(path: str, routes: dict[str, str]) -> str | None:
    """The upstream URL of a request path (query kept) when a route prefix matches it:
    ``routes = {"/dicom-web/": "http://127.0.0.1:8042/dicom-web/"}``. Paths with ``..``
    segments are not proxied."""
    clean = path.split("?", 1)[0]
    if ".." in clean.split("/"):
        return None
    for prefix, target in routes.items():
        if path.startswith(prefix):
            return target + path[len(prefix) :]
    return None


def forwarded(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers passed on (both ways): all but hop-by-hop ones, Host and Content-Length (set
    again for the hop)."""
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]


class _SiteHandler(viewer._Handler):  # the viewer's static handler, extended
    """OHIF's files as ``make viewer`` serves them, plus the proxied archive paths. HTTP/1.1
    with keep-alive on both sides (the browser's 6 connections, one upstream connection
    per browser connection), response bodies buffered whole (a frame is 526 KB)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, a kept-alive client
    # waits for its delayed ACK (40 ms) before the body.
    disable_nagle_algorithm = True
    server: Site

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser quit
            super().handle()

    def do_GET(self) -> None:
        target = upstream_url(self.path, self.server.routes)
        if target is None:
            super().do_GET()
        else:
            self._proxy(target)

    def do_HEAD(self) -> None:
        target = upstream_url(self.path, self.server.routes)
        if target is None:
            super().do_HEAD()
        else:
            self._proxy(target)

    def _proxy(self, target: str) -> None:
        url = urllib.parse.urlsplit(target)
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = dict(forwarded(self.headers.items()))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            connection = self.server.upstream(url.netloc)
            try:
                connection.request(self.command, path, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                self.server.drop(url.netloc)
                if attempt == 2:
                    self.send_error(502, f"upstream: {exc}")
                    return
        self.send_response_only(answer.status, answer.reason)
        for name, value in forwarded(answer.getheaders()):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        BaseHTTPRequestHandler.end_headers(self)  # no Cache-Control of the static handler
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_request(answer.status, len(body))


class Site(viewer.ViewerServer):
    """OHIF's ``dist/`` and the generated config, as ``tools.viewer.ViewerServer``, and the
    archive's paths proxied to it: one origin for the browser."""

    def __init__(self, dist: Path, config_file: Path, routes: dict[str, str]) -> None:
        super().__init__(dist, config_file)
        self.routes = routes
        self.RequestHandlerClass = functools.partial(_SiteHandler, directory=str(dist))
        self._local = threading.local()

    def upstream(self, netloc: str) -> http.client.HTTPConnection:
        """This thread's (this browser connection's) kept-alive connection to ``netloc``."""
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        if netloc not in pool:
            pool[netloc] = http.client.HTTPConnection(netloc, timeout=120)
        return pool[netloc]

    def drop(self, netloc: str) -> None:
        pool = self._local.__dict__.get("pool", {})
        connection = pool.pop(netloc, None)
        if connection is not None:
            connection.close()


@dataclass(frozen=True)
class Setup:
    """One configuration: which archive, how the browser reaches it, OHIF's data roots."""

    name: str
    site: Site
    roots: tuple[str, ...]  # DICOMweb URL prefixes (QIDO root, WADO root) as OHIF uses them


# ----------------------------------------------------------------------------- one run


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed as the browser test does when missing."""
    import pytest

    from tests.support.debian_tools import require_debian_tool

    try:
        return (
            require_debian_tool("chromium", "chromium"),
            require_debian_tool("chromedriver", "chromium-driver"),
        )
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise SystemExit(f"bench_ohif: {exc}") from None


def chrome(profile: Path) -> Any:
    """Headless Chromium as tests/browser/test_ohif.py starts it, with its own fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--use-angle=swiftshader",  # WebGL (Cornerstone3D) without a GPU
        "--enable-unsafe-swiftshader",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_CLOCK_JS})
    return driver


def request_kind(url: str) -> str:
    """What an OHIF request to a DICOMweb root is for."""
    path = urllib.parse.urlsplit(url).path
    if re.search(r"/frames/\d", path):
        return "frame"
    if path.endswith("/metadata"):
        return "metadata"
    if path.endswith(("/rendered", "/thumbnail")):
        return "rendered"
    if path.endswith(("/studies", "/series", "/instances")):
        return "qido"
    return "other"


def grey_std(png: bytes) -> float:
    """Standard deviation of an image's grey levels (PIL's "L"): the Python twin of the
    page's canvas check, applied to the canvas once the page reports an image."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(pixels.std()) if pixels.size else 0.0


def network_log(driver: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """From Chrome's performance log: per URL (CORS preflights left out), method, status,
    bytes on the wire, failure; and the URLs of the preflights (OPTIONS)."""
    by_id: dict[str, dict[str, Any]] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params, method = message.get("params", {}), message.get("method")
        request_id = params.get("requestId")
        if method == "Network.requestWillBeSent":
            request = params["request"]
            by_id[f"{request_id} {request['method']}"] = {
                "url": request["url"],
                "method": request["method"],
            }
            continue
        seen = by_id.get(f"{request_id} GET")
        if seen is None:
            continue
        if method == "Network.responseReceived":
            seen["status"] = params["response"]["status"]
        elif method == "Network.loadingFinished":
            seen["bytes"] = params.get("encodedDataLength", 0)
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            seen["failed"] = params.get("errorText") or "failed"
    requests_ = {r["url"]: r for r in by_id.values() if r["method"] != "OPTIONS"}
    return requests_, [r["url"] for r in by_id.values() if r["method"] == "OPTIONS"]


_OHIF_TIMING = re.compile(r'"(\w+): ([0-9.]+) ms"')


def ohif_timings(driver: Any) -> dict[str, float]:
    """OHIF's own performance log lines ("scriptToView: 6501.8 ms", "studyToFirstImage")."""
    timings = {}
    for entry in driver.get_log("browser"):
        for name, value in _OHIF_TIMING.findall(entry.get("message", "")):
            timings.setdefault(name, round(float(value), 1))
    return timings


def failures(log: dict[str, dict[str, Any]], roots: tuple[str, ...]) -> list[str]:
    """DICOMweb requests that failed or answered 4xx/5xx."""
    return [
        f"{r['method']} {url} -> {r.get('status', '')} {r.get('failed', '')}".strip()
        for url, r in log.items()
        if url.startswith(roots) and (r.get("failed") or r.get("status", 0) >= 400)
    ]


def one_run(setup: Setup, study: str) -> dict[str, Any]:
    """Open the study in a fresh browser; time to the first image and what was loaded."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    profile = Path(tempfile.mkdtemp(prefix="ohif-bench-profile-"))
    driver = chrome(profile)
    try:
        driver.get(f"{setup.site.url}/viewer?StudyInstanceUIDs={study}")
        try:
            first = WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.1).until(
                lambda d: d.execute_script("return window.__o3bench && window.__o3bench.first")
            )
        except TimeoutException:
            first = None
        resources = driver.execute_script(RESOURCES_JS)
        canvas = driver.execute_script(
            "const c = document.querySelector('.cornerstone-viewport-element canvas');"
            "return c && c.width > 0 ? c.toDataURL('image/png') : null;"
        )
        log, preflights = network_log(driver)
        timings = ohif_timings(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    failed = failures(log, setup.roots)
    if first is None:
        raise RuntimeError(f"{setup.name}: no image within {RENDER_TIMEOUT_S} s; {failed}")
    std = grey_std(base64.b64decode(canvas.split(",", 1)[1])) if canvas else 0.0
    return summarize(float(first), resources, log, setup.roots, preflights) | {
        "canvas_std": round(std, 1),
        "failures": failed,
        "ohif_timings_ms": timings,
    }


def summarize(
    first: float,
    resources: list[dict[str, Any]],
    log: dict[str, dict[str, Any]],
    roots: tuple[str, ...],
    preflights: Iterable[str] = (),
) -> dict[str, Any]:
    """The run's figures: ms to the first image, the DICOMweb requests started, bytes
    received and CORS preflights sent for them until then, and when the app asked for its
    first data, got the metadata and the first frame (ms since navigation)."""
    dicomweb = [r for r in resources if r["url"].startswith(roots) and r["start"] <= first]
    done = [r for r in dicomweb if 0 < r["end"] <= first]

    def size(r: dict[str, Any]) -> int:
        # transferSize is 0 for cross-origin entries without Timing-Allow-Origin: the
        # network log's bytes on the wire stand in.
        return int(r["transfer"] or log.get(r["url"], {}).get("bytes", 0))

    def when(kind: str, pick: Any) -> float | None:
        ends = [r["end"] for r in done if request_kind(r["url"]) == kind]
        return round(pick(ends), 1) if ends else None

    start = min((r["start"] for r in dicomweb), default=0.0)
    kinds: dict[str, int] = {}
    for r in dicomweb:
        kinds[request_kind(r["url"])] = kinds.get(request_kind(r["url"]), 0) + 1
    return {
        "first_image_ms": round(first, 1),
        "requests": len(dicomweb),
        "completed": len(done),
        "bytes": sum(size(r) for r in done),
        "preflights": len({r["url"] for r in dicomweb} & set(preflights)),
        "by_kind": kinds,
        "first_request_ms": round(start, 1),
        "metadata_ms": when("metadata", max),
        "first_frame_ms": when("frame", min),
        # From OHIF's first DICOMweb request on: the part the archive can change (the ~2 s
        # before it are OHIF's own start-up, the same for both archives).
        "image_after_first_request_ms": round(first - start, 1),
        "requests_detail": [
            {
                "url": r["url"],
                "start_ms": round(r["start"], 1),
                "duration_ms": round(r["end"] - r["start"], 1) if r["end"] else None,
                "status": log.get(r["url"], {}).get("status"),
                "bytes": size(r),
            }
            for r in dicomweb
        ],
    }


# ----------------------------------------------------------------------------- the proxy's cost


def proxy_cost(
    direct: tuple[str, str],
    proxied: tuple[str, str],
    study: bench_peer.Study,
    headers: dict[str, str],
) -> dict[str, float]:
    """QIDO ``studies?StudyInstanceUID=`` and one frame, p50 of bench_peer.REPEATS, direct
    and through the site; ``direct`` and ``proxied`` are (QIDO root, WADO-RS root)."""
    session = requests.Session()
    sop = study.instances[0][0]
    frame = f"studies/{study.uid}/series/{study.series}/instances/{sop}/frames/1"
    accept = {**headers, "Accept": "multipart/related; type=application/octet-stream"}
    figures = {}
    for label, (qido_root, wado_root) in (("direct", direct), ("proxied", proxied)):
        figures[f"qido_{label}_ms"] = bench_peer.p50(
            session, f"{qido_root}/studies", headers, params={"StudyInstanceUID": study.uid}
        )
        figures[f"frame_{label}_ms"] = bench_peer.p50(session, f"{wado_root}/{frame}", accept)
    return figures


# ----------------------------------------------------------------------------- the runs


def _store(target: bench_peer.Target, study: bench_peer.Study) -> None:
    print(f"storing {len(study.instances)} slices into {target.name} ...", flush=True)
    bench_peer.stow(target, [study])


@contextlib.contextmanager
def setups(workdir: Path, study: bench_peer.Study) -> Iterator[tuple[list[Setup], dict[str, Any]]]:
    """Both archives loaded, and the three sites: Orthanc and ours behind the proxy, ours
    direct (cross-origin). Also yields the proxy's measured cost."""
    dist = viewer.fetch_ohif()
    (workdir / "orthanc").mkdir()
    (workdir / "ours").mkdir()
    with (
        bench_peer.orthanc(workdir / "orthanc", ORTHANC_DICOMWEB) as peer,
        bench_peer.ours(workdir / "ours") as mine,
    ):
        base = mine.rs.removesuffix("/rs")  # http://127.0.0.1:{port}/o3-dpacs-wado
        key = mine.headers["Authorization"]
        archive = viewer.Archive(base, AET)
        _store(dataclasses.replace(mine, stow=archive.stow_url), study)
        _store(peer, study)
        peer_base = peer.rs  # http://127.0.0.1:{port}/dicom-web
        with (
            Site(dist, workdir / "orthanc.js", {"/dicom-web/": f"{peer_base}/"}) as theirs,
            Site(dist, workdir / "ours-proxied.js", {"/o3-dpacs-wado/": f"{base}/"}) as proxied,
            Site(dist, workdir / "ours-direct.js", {}) as direct,
        ):
            site_peer = DicomWebRoot(f"{theirs.url}/dicom-web")
            (workdir / "orthanc.js").write_text(config_without_key(site_peer))
            proxied_archive = viewer.Archive(f"{proxied.url}/o3-dpacs-wado", AET)
            viewer.write_app_config(proxied.config_file, proxied_archive, key)
            viewer.write_app_config(direct.config_file, archive, key)
            cost = {
                "Orthanc": proxy_cost(
                    (peer_base, peer_base), (site_peer.qido_root, site_peer.wado_root), study, {}
                ),
                "ours": proxy_cost(
                    (archive.qido_root, archive.wado_root),
                    (proxied_archive.qido_root, proxied_archive.wado_root),
                    study,
                    {"Authorization": key},
                ),
            }
            yield (
                [
                    Setup("Orthanc (proxied)", theirs, (site_peer.base_url,)),
                    Setup(
                        "ours (proxied)",
                        proxied,
                        (proxied_archive.qido_root, proxied_archive.wado_root),
                    ),
                    Setup("ours (direct, CORS)", direct, (archive.qido_root, archive.wado_root)),
                ],
                cost,
            )


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def measure(runs: int = RUNS, slices: int = SLICES) -> dict[str, Any]:
    """Warm-ups, then ``runs`` interleaved runs of every setup; medians and the ratio."""
    chromium_paths()  # install before the clock matters
    study = make_study(slices)
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="ohif-bench-") as work,
        setups(Path(work), study) as (
            all_setups,
            cost,
        ),
    ):
        results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in all_setups}
        for round_number in range(WARMUPS + runs):
            for setup in all_setups:
                run = one_run(setup, study.uid)
                label = "warm-up" if round_number < WARMUPS else f"run {round_number}"
                print(
                    f"{setup.name:22} {label:8} first image {run['first_image_ms']:8.1f} ms, "
                    f"{run['requests']} requests, {run['bytes'] / 1e6:.2f} MB, "
                    f"failures {len(run['failures'])}",
                    flush=True,
                )
                if round_number >= WARMUPS:
                    results[setup.name].append(run)
    load_after = os.getloadavg()
    return report(results, cost, study, load_before, load_after)


def report(
    results: dict[str, list[dict[str, Any]]],
    cost: dict[str, Any],
    study: bench_peer.Study,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    """Medians per setup, the ratios, the proxy's cost, one run's request list per setup."""
    figures: dict[str, Any] = {}
    for name, runs in results.items():
        figures[name] = {
            key: _median(runs, key)
            for key in (
                "first_image_ms",
                "requests",
                "completed",
                "bytes",
                "first_request_ms",
                "metadata_ms",
                "first_frame_ms",
                "image_after_first_request_ms",
            )
        } | {
            "runs_ms": [r["first_image_ms"] for r in runs],
            "by_kind": runs[-1]["by_kind"],
            "preflights": _median(runs, "preflights"),
            "failures": sorted({f for r in runs for f in r["failures"]}),
            "ohif_timings_ms": [r["ohif_timings_ms"] for r in runs],
            "requests_per_run": [r["requests_detail"] for r in runs],
        }
    theirs = figures["Orthanc (proxied)"]["first_image_ms"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "ohif": viewer.OHIF_VERSION,
        "slices": len(study.instances),
        "runs": len(next(iter(results.values()))),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "setups": figures,
        "ratio": round(figures["ours (proxied)"]["first_image_ms"] / theirs, 2),
        "ratio_direct": round(figures["ours (direct, CORS)"]["first_image_ms"] / theirs, 2),
        "ratio_after_first_request": round(
            figures["ours (proxied)"]["image_after_first_request_ms"]
            / figures["Orthanc (proxied)"]["image_after_first_request_ms"],
            2,
        ),
        "proxy_cost_p50_ms": cost,
    }


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per setup, then the proxy's cost."""
    rows = [
        "| Setup | First image, median (runs) | DICOMweb requests started (completed) | Bytes "
        "received | CORS preflights | First DICOMweb request at | Metadata in | First frame in | "
        "Image after first request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in result["setups"].items():
        runs = ", ".join(f"{ms:.0f}" for ms in f["runs_ms"])
        rows.append(
            f"| {name} | {f['first_image_ms']:.0f} ms ({runs}) | {f['requests']:.0f} "
            f"({f['completed']:.0f}) | {f['bytes'] / 1e6:.2f} MB | {f['preflights']:.0f} | "
            f"{f['first_request_ms']} ms | {f['metadata_ms']} ms | {f['first_frame_ms']} ms | "
            f"{f['image_after_first_request_ms']} ms |"
        )
    rows += [
        "",
        f"Ratio ours / Orthanc, both proxied: **{result['ratio']:.2f}x** (target <= 1.0); "
        f"ours direct (CORS) / Orthanc proxied: {result['ratio_direct']:.2f}x; from OHIF's "
        "first DICOMweb request to the image, proxied: "
        f"{result['ratio_after_first_request']:.2f}x.",
        "",
        "| Proxy cost, p50 | QIDO direct | QIDO proxied | frame direct | frame proxied |",
        "|---|---|---|---|---|",
    ]
    for name, c in result["proxy_cost_p50_ms"].items():
        rows.append(
            f"| {name} | {c['qido_direct_ms']} ms | {c['qido_proxied_ms']} ms | "
            f"{c['frame_direct_ms']} ms | {c['frame_proxied_ms']} ms |"
        )
    rows.append(
        f"\nload average before {result['loadavg_before']}, after {result['loadavg_after']} "
        f"({result['cpus']} CPUs)"
    )
    return "\n".join(rows)


def run(runs: int = RUNS, slices: int = SLICES) -> dict[str, Any]:
    """The bench part ``ohif`` of ``python -m bench``."""
    result = measure(runs, slices)
    print(table(result))
    for name, figures in result["setups"].items():
        if figures["failures"]:
            print(f"{name}: failed DICOMweb requests: {figures['failures']}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--slices", type=int, default=SLICES, help="a smaller study: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ohif.json"))
    args = parser.parse_args()
    result = run(args.runs, args.slices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
