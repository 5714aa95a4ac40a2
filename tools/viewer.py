"""Open the archive in the OHIF Viewer: ``dicomweb-viewer`` (``make viewer``).

Downloads OHIF's prebuilt app (npm package ``@ohif/app``, its ``dist/`` folder) once into
``.viewer/`` with urllib (no node or npm needed), writes an ``app-config.js`` whose DICOMweb
data source points at the archive and whose small inline extension gives OHIF's
``userAuthenticationService`` the API key, starts the local stack (``python -m local``) and
a static file server for OHIF on 127.0.0.1, prints both URLs and the key, and runs until
Ctrl-C / SIGTERM.

Environment: ``PORT`` (the local stack, default 3000), ``VIEWER_PORT`` (OHIF, default
3001), ``DICOMWEB_API_KEY`` (the key to use; otherwise one is generated once and kept in
``.viewer/dev-api-key``), ``LOCAL_PARAMETER_OVERRIDES`` (passed on to the stack; unless it
names ``CorsAllowOrigin``, the stack allows the viewer's origin only). ``--base-url`` and
``--api-key`` point the viewer at an archive that is already running (another local stack,
or a deployment: ``https://{api}.execute-api.{region}.amazonaws.com/v1/o3-dpacs-wado``)
instead of starting one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

from shared import keys

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The OHIF release served, pinned with the registry's own integrity digest (npm's
# `dist.integrity`, SHA-512 of the tarball). 3.11.1: the newest 3.11 on registry.npmjs.org.
OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.11.1"
OHIF_TARBALL = f"https://registry.npmjs.org/{OHIF_PACKAGE}/-/app-{OHIF_VERSION}.tgz"
OHIF_INTEGRITY = (
    "sha512-"
    "0lJRyHguGuIR06PxeJ3rqnPWf1OAqsaXGuqT2kl5HkNjIOxBDnRTTMvyHnkn3ZyjcHlsIhY8gf0h7AhVORqsSQ=="
)
DIST_PREFIX = "package/dist/"
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".viewer"
DOWNLOAD_TIMEOUT_S = 300
STACK_START_TIMEOUT_S = 120
DEFAULT_AET = "OHIF"
DEFAULT_VIEWER_PORT = 3001
KEY_FILE = "dev-api-key"
CONFIG_FILE = "app-config.js"
DATA_SOURCE = "o3-dpacs"


class ViewerError(Exception):
    """A problem reported to the user without a traceback."""


# --- OHIF's prebuilt app -----------------------------------------------------------------


def dist_dir(cache_dir: Path = DEFAULT_CACHE_DIR, version: str = OHIF_VERSION) -> Path:
    """Where the unpacked ``dist/`` of an OHIF version lives in the cache."""
    return cache_dir / f"ohif-{version}" / "dist"


def fetch_ohif(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    url: str = OHIF_TARBALL,
    integrity: str = OHIF_INTEGRITY,
    version: str = OHIF_VERSION,
) -> Path:
    """Return the OHIF ``dist/`` directory, downloading and unpacking it on first use.

    The tarball is checked against the pinned integrity digest, only ``package/dist/`` is
    unpacked (regular files and directories, no links, nothing outside the target), into a
    temporary directory renamed into place, under a lock: concurrent callers (pytest-xdist
    workers) wait for the first one instead of unpacking twice."""
    target = dist_dir(cache_dir, version)
    if (target / "index.html").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        if (target / "index.html").is_file():
            return target
        tarball = cache_dir / f"ohif-app-{version}.tgz"
        if not tarball.is_file() or not _integrity_ok(tarball.read_bytes(), integrity):
            _download(url, tarball, integrity)
        _unpack_dist(tarball, target)
        tarball.unlink()  # 47 MB; the unpacked dist/ is what is kept
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _integrity_ok(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")
    return actual == expected


def _download(url: str, destination: Path, integrity: str) -> None:
    print(f"Downloading {url} ...", flush=True)
    request = urllib.request.Request(url, headers={"User-Agent": "o3-dpacs-viewer"})  # noqa: S310 - a pinned https URL
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            data = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ViewerError(f"cannot download {url}: {exc}") from exc
    if not _integrity_ok(data, integrity):
        raise ViewerError(f"{url} does not match its pinned integrity {integrity[:20]}...")
    partial = destination.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(destination)


def _unpack_dist(tarball: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dist-", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if not member.name.startswith(DIST_PREFIX) or not (
                    member.isfile() or member.isdir()
                ):
                    continue
                relative = PurePosixPath(member.name[len(DIST_PREFIX) :])
                if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                    continue
                destination = staging.joinpath(*relative.parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is not None:
                    with source, destination.open("wb") as out:
                        shutil.copyfileobj(source, out)
        if not (staging / "index.html").is_file():
            raise ViewerError(f"{tarball.name} has no {DIST_PREFIX}index.html")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- the generated app-config.js ---------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """Where OHIF finds the archive: the base URL (``.../o3-dpacs-wado``) and an AE title."""

    base_url: str
    aet: str = DEFAULT_AET

    @property
    def qido_root(self) -> str:
        return f"{self.base_url}/qido/{self.aet}"

    @property
    def wado_root(self) -> str:
        return f"{self.base_url}/rs"

    @property
    def wado_uri_root(self) -> str:
        return f"{self.base_url}/wado"

    @property
    def stow_url(self) -> str:
        return f"{self.base_url}/stowRsListener/{self.aet}/studies"


def data_source_configuration(archive: Archive, *, lazy: bool = False) -> dict[str, Any]:
    """OHIF's ``dicomweb`` data source configuration for the archive.

    ``lazy`` is OHIF's ``enableStudyLazyLoad``: opening a study then searches its series
    under the WADO-RS root (``GET {wadoRoot}/studies/{s}/series``, a QIDO request) and
    loads metadata series by series; without it OHIF loads the study's metadata in one
    request (``GET {wadoRoot}/studies/{s}/metadata``). The archive answers QIDO under
    ``/qido/{AET}`` only, so lazy loading stays off until ``/rs`` answers series searches."""
    return {
        "friendlyName": "o3-dpacs DICOMweb archive",
        "name": DATA_SOURCE,
        "qidoRoot": archive.qido_root,
        "wadoRoot": archive.wado_root,
        "wadoUriRoot": archive.wado_uri_root,
        "qidoSupportsIncludeField": True,
        "supportsReject": False,
        "supportsStow": False,  # OHIF would POST to wadoRoot; our STOW path is stowRsListener
        "dicomUploadEnabled": False,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": lazy,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,  # PatientName=*text*: the archive matches * and ?
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True,
    }


# The inline extension: OHIF registers objects in `extensions` like its own, and runs their
# preRegistration hook after its services exist. getAuthorizationHeader is what every
# DICOMweb request of OHIF 3.x asks for its Authorization header (QIDO and WADO clients of
# the dicomweb data source, Cornerstone's image loader); the key is sent as is (no scheme).
# Without a configured key the user is asked once per tab (kept in sessionStorage), and a
# 401 forgets it so that the next request asks again.
_AUTH_EXTENSION_JS = """\
const O3_KEY_STORAGE = 'o3-dpacs-api-key';
const o3ApiKeyExtension = {
  id: 'o3-dpacs-api-key',
  preRegistration({ servicesManager }) {
    const { userAuthenticationService } = servicesManager.services;
    userAuthenticationService.setServiceImplementation({
      getAuthorizationHeader: () => {
        let key = O3_API_KEY || window.sessionStorage.getItem(O3_KEY_STORAGE);
        if (!key) {
          key = (window.prompt('API key of the DICOMweb archive') || '').trim();
          if (key) {
            window.sessionStorage.setItem(O3_KEY_STORAGE, key);
          }
        }
        return key ? { Authorization: key } : {};
      },
    });
  },
};
"""


def app_config_js(archive: Archive, api_key: str | None) -> str:
    """The ``app-config.js`` OHIF loads: one DICOMweb data source, the key extension."""
    config = {
        "routerBasename": "/",
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": DATA_SOURCE,
        "investigationalUseDialog": {"option": "never"},
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": DATA_SOURCE,
                "configuration": data_source_configuration(archive),
            }
        ],
    }
    body = json.dumps(config, indent=2)
    return (
        f"/* Generated by tools/viewer.py for OHIF {OHIF_VERSION} (dicomweb-viewer): "
        "do not edit, it is rewritten on every start. */\n"
        f"const O3_API_KEY = {json.dumps(api_key or '')};\n"
        f"{_AUTH_EXTENSION_JS}"
        f"window.config = Object.assign({body}, {{\n"
        "  extensions: [o3ApiKeyExtension],\n"
        "  httpErrorHandler: error => {\n"
        "    if (error && error.status === 401 && !O3_API_KEY) {\n"
        "      window.sessionStorage.removeItem(O3_KEY_STORAGE);\n"
        "    }\n"
        "    console.warn('DICOMweb request failed', error && error.status);\n"
        "  },\n"
        "});\n"
    )


def write_app_config(path: Path, archive: Archive, api_key: str | None) -> Path:
    """Write the generated config (mode 600: it may hold the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(app_config_js(archive, api_key), encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)
    return path


# --- the static server -------------------------------------------------------------------

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}


# A browser names where a request comes from (Fetch Metadata): "same-origin" for OHIF's own
# page, "none" when the user opens the URL. A `<script src>` on another site's page sends
# "cross-site" (another port of 127.0.0.1 is "same-site"), and no Origin header.
_OWN_FETCH_SITES = ("same-origin", "none")


class _Handler(SimpleHTTPRequestHandler):
    """Files of OHIF's dist/; ``/app-config.js`` from the generated file, only to OHIF's own
    pages; any other path without a file extension gets index.html (OHIF's client-side
    routes: /viewer, /)."""

    server: ViewerServer

    def send_head(self) -> io.BytesIO | Any:
        if self._path_name() == CONFIG_FILE and not self._from_own_origin():
            self._refuse(
                "app-config.js holds the archive's API key: served to this viewer's pages only"
            )
            return None
        return super().send_head()

    def _from_own_origin(self) -> bool:
        """Whether the request comes from this server's own pages (or no page at all).

        Refused: another site's page (Sec-Fetch-Site, Origin or Referer of another origin),
        and a Host other than the address the server listens on (a name rebound to
        127.0.0.1 by another site's DNS would make its page same-origin)."""
        host = (self.headers.get("Host") or "").lower()
        if host not in (f"127.0.0.1:{self.server.port}", f"localhost:{self.server.port}"):
            return False
        own = f"http://{host}"
        site = (self.headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site and site not in _OWN_FETCH_SITES:
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin != own:
            return False
        referer = self.headers.get("Referer")
        return referer is None or referer == own or referer.startswith(own + "/")

    def _refuse(self, reason: str) -> None:
        body = json.dumps({"message": reason}).encode("utf-8")
        self.send_response(HTTPStatus.FORBIDDEN)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _path_name(self) -> str:
        return PurePosixPath(self.path.split("?", 1)[0].split("#", 1)[0]).name

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return _TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean == "/" + CONFIG_FILE:
            return str(self.server.config_file)
        translated = super().translate_path(path)
        if not Path(translated).exists() and "." not in PurePosixPath(clean).name:
            return str(self.server.dist / "index.html")
        return translated

    def end_headers(self) -> None:
        name = self._path_name()
        if name == CONFIG_FILE:
            self.send_header("Cache-Control", "no-store")
            self.send_header("Vary", "Origin, Sec-Fetch-Site, Referer")
        elif name in ("", "index.html", "sw.js") or "." not in name:
            self.send_header("Cache-Control", "no-cache")
        # Other sites' pages may not embed what this server answers (a no-cors <script src>
        # included): browsers drop the response.
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def list_directory(self, path: str | os.PathLike[str]) -> io.BytesIO | None:
        self.send_error(HTTPStatus.NOT_FOUND)
        return None

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


class ViewerServer(ThreadingHTTPServer):
    """OHIF's ``dist/`` on 127.0.0.1, in a thread: ``with ViewerServer(...) as s: s.url``."""

    daemon_threads = True

    def __init__(
        self, dist: Path, config_file: Path, port: int = 0, *, log_requests: bool = False
    ) -> None:
        self.dist = dist
        self.config_file = config_file
        self.log_requests = log_requests
        super().__init__(("127.0.0.1", port), functools.partial(_Handler, directory=str(dist)))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ViewerServer:
        self._thread = threading.Thread(target=self.serve_forever, name="ohif", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ViewerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the local stack ---------------------------------------------------------------------


def dev_api_key(cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """``DICOMWEB_API_KEY`` if set; else the key kept in ``.viewer/dev-api-key`` (made once,
    so that an open viewer tab and the archive's key list survive a restart)."""
    from_env = os.environ.get("DICOMWEB_API_KEY")
    if from_env:
        return from_env
    path = cache_dir / KEY_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    key, _ = keys.generate("viewer")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def stack_overrides(existing: str, viewer_origin: str) -> str:
    """``LOCAL_PARAMETER_OVERRIDES`` for the stack: the viewer's origin as the CORS origin
    unless the caller chose one."""
    if "CorsAllowOrigin=" in existing:
        return existing
    return f"{existing} CorsAllowOrigin={viewer_origin}".strip()


def start_stack(port: int, api_key: str, overrides: str) -> subprocess.Popen[bytes]:
    """``python -m local`` on ``port``; its output goes to this terminal."""
    env = {
        **os.environ,
        "PORT": str(port),
        "DICOMWEB_API_KEY": api_key,
        "LOCAL_PARAMETER_OVERRIDES": overrides,
    }
    return subprocess.Popen([sys.executable, "-m", "local"], cwd=PROJECT_ROOT, env=env)


def wait_for_archive(
    archive: Archive,
    api_key: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = STACK_START_TIMEOUT_S,
) -> None:
    """Wait until a QIDO search with the key answers 200."""
    url = f"{archive.qido_root}/studies?limit=1"
    request = urllib.request.Request(url, headers={"Authorization": api_key})  # noqa: S310
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ViewerError(f"the local stack exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                if response.status == HTTPStatus.OK:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                raise ViewerError(f"{url} refused the API key ({last})") from exc
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ViewerError(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


# --- command line ------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dicomweb-viewer", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument(
        "--viewer-port",
        type=int,
        default=int(os.environ.get("VIEWER_PORT", str(DEFAULT_VIEWER_PORT))),
    )
    parser.add_argument("--aet", default=DEFAULT_AET, help="AE title in the QIDO path")
    parser.add_argument(
        "--base-url", help="an archive already running (.../o3-dpacs-wado): start no stack"
    )
    parser.add_argument("--api-key", help="the key for --base-url (else: asked in the browser)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--log-requests", action="store_true", help="log OHIF's file requests")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fetch OHIF, start the stack and the viewer, print how to use them, wait, stop."""
    args = _arguments(argv)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack: list[subprocess.Popen[bytes]] = []
    try:
        _run(args, stopping, stack)
    except (ViewerError, OSError) as exc:  # OSError: e.g. the viewer's port is taken
        print(f"dicomweb-viewer: {exc}", file=sys.stderr)
        return 1
    finally:
        for process in stack:
            _stop(process)
    return 0


def _run(
    args: argparse.Namespace, stopping: threading.Event, stack: list[subprocess.Popen[bytes]]
) -> None:
    dist = fetch_ohif(args.cache_dir)
    viewer = ViewerServer(
        dist, args.cache_dir / CONFIG_FILE, args.viewer_port, log_requests=args.log_requests
    )
    process: subprocess.Popen[bytes] | None = None
    if args.base_url:
        archive, api_key = Archive(args.base_url.rstrip("/"), args.aet), args.api_key
    else:
        archive = Archive(f"http://127.0.0.1:{args.port}/o3-dpacs-wado", args.aet)
        api_key = dev_api_key(args.cache_dir)
        overrides = stack_overrides(os.environ.get("LOCAL_PARAMETER_OVERRIDES", ""), viewer.url)
        process = start_stack(args.port, api_key, overrides)
        stack.append(process)
    write_app_config(viewer.config_file, archive, api_key)
    if api_key:
        wait_for_archive(archive, api_key, process)
    with viewer:
        print(
            f"\nOHIF Viewer {OHIF_VERSION}: {viewer.url}/\n"
            f"DICOMweb base URL: {archive.base_url}\n"
            f"  QIDO-RS {archive.qido_root}\n  WADO-RS {archive.wado_root}\n"
            f"  STOW-RS {archive.stow_url}\n"
            f"API key: {api_key or '(asked in the browser)'}\n"
            f"Config: {viewer.config_file}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        while not stopping.wait(1):
            if process is not None and process.poll() is not None:
                raise ViewerError(f"the local stack exited with status {process.returncode}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
