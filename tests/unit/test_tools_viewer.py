"""tools/viewer.py without a browser or the network: the OHIF download and unpacking
(a synthetic tarball), the generated app-config.js, the static server's routes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools import viewer


def _tarball(files: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return out.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _serve_tarball(monkeypatch: pytest.MonkeyPatch, data: bytes) -> list[str]:
    fetched: list[str] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        fetched.append(request.full_url)
        return io.BytesIO(data)

    monkeypatch.setattr(viewer.urllib.request, "urlopen", urlopen)
    return fetched


def test_fetch_unpacks_only_dist_and_caches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tarball(
        {
            "package/package.json": b"{}",
            "package/dist/index.html": b"<html></html>",
            "package/dist/assets/a.js": b"a",
            "package/dist/../../evil.txt": b"x",
        },
        links=("package/dist/link",),
    )
    fetched = _serve_tarball(monkeypatch, data)
    dist = viewer.fetch_ohif(
        tmp_path, url="https://example.invalid/a.tgz", integrity=_integrity(data), version="9.9.9"
    )
    assert dist == tmp_path / "ohif-9.9.9" / "dist"
    assert sorted(str(p.relative_to(dist)) for p in dist.rglob("*")) == [
        "assets",
        "assets/a.js",
        "index.html",
    ]
    assert not (tmp_path / "evil.txt").exists()
    assert not list(tmp_path.glob("*.tgz"))  # the tarball is not kept
    viewer.fetch_ohif(
        tmp_path, url="https://example.invalid/a.tgz", integrity="sha512-x", version="9.9.9"
    )
    assert len(fetched) == 1  # second call: from the cache, integrity not even needed


def test_fetch_refuses_a_tarball_that_does_not_match_its_integrity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tarball({"package/dist/index.html": b"<html></html>"})
    _serve_tarball(monkeypatch, data)
    with pytest.raises(viewer.ViewerError, match="integrity"):
        viewer.fetch_ohif(tmp_path, integrity=_integrity(b"other"), version="9.9.9")
    assert not (tmp_path / "ohif-9.9.9").exists()


def test_fetch_reports_an_unreachable_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def urlopen(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(viewer.urllib.request, "urlopen", urlopen)
    with pytest.raises(viewer.ViewerError, match="cannot download"):
        viewer.fetch_ohif(tmp_path, version="9.9.9")


def test_pinned_version_is_a_3x_tarball_on_the_npm_registry() -> None:
    assert viewer.OHIF_VERSION.startswith("3.")
    assert (
        f"https://registry.npmjs.org/@ohif/app/-/app-{viewer.OHIF_VERSION}.tgz"
    ) == viewer.OHIF_TARBALL
    assert viewer.OHIF_INTEGRITY.startswith("sha512-")


def test_app_config_points_ohif_at_the_archive_with_the_key() -> None:
    archive = viewer.Archive("http://127.0.0.1:3000/o3-dpacs-wado", "OHIF")
    text = viewer.app_config_js(archive, "o3k_secret_dev_key_0123")
    assert 'const O3_API_KEY = "o3k_secret_dev_key_0123";' in text
    assert "setServiceImplementation" in text and "getAuthorizationHeader" in text
    assert "Authorization: key" in text and "Bearer" not in text
    assert "extensions: [o3ApiKeyExtension]" in text
    body = text[
        text.index("window.config = Object.assign(") + len("window.config = Object.assign(") :
    ]
    config = json.JSONDecoder().raw_decode(body)[0]
    (source,) = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    assert source["configuration"]["qidoRoot"] == "http://127.0.0.1:3000/o3-dpacs-wado/qido/OHIF"
    assert source["configuration"]["wadoRoot"] == "http://127.0.0.1:3000/o3-dpacs-wado/rs"
    assert source["configuration"]["wadoUriRoot"] == "http://127.0.0.1:3000/o3-dpacs-wado/wado"
    assert archive.stow_url == "http://127.0.0.1:3000/o3-dpacs-wado/stowRsListener/OHIF/studies"


def test_app_config_without_a_key_asks_the_user() -> None:
    text = viewer.app_config_js(viewer.Archive("https://x/o3-dpacs-wado"), None)
    assert 'const O3_API_KEY = "";' in text
    assert "window.prompt(" in text


def test_a_key_with_quotes_cannot_break_out_of_the_string() -> None:
    text = viewer.app_config_js(viewer.Archive("https://x/o3-dpacs-wado"), 'a"b</script>c')
    assert 'const O3_API_KEY = "a\\"b</script>c";' in text


def test_stack_overrides_add_the_viewer_origin_unless_chosen() -> None:
    origin = "http://127.0.0.1:3001"
    assert viewer.stack_overrides("", origin) == f"CorsAllowOrigin={origin}"
    assert (
        viewer.stack_overrides("KeyCacheTtl=0", origin) == f"KeyCacheTtl=0 CorsAllowOrigin={origin}"
    )
    assert viewer.stack_overrides("CorsAllowOrigin=*", origin) == "CorsAllowOrigin=*"


def test_dev_key_is_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DICOMWEB_API_KEY", raising=False)
    key = viewer.dev_api_key(tmp_path)
    assert viewer.dev_api_key(tmp_path) == key
    assert (tmp_path / viewer.KEY_FILE).stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("DICOMWEB_API_KEY", "from-the-environment-0123")
    assert viewer.dev_api_key(tmp_path) == "from-the-environment-0123"


def test_static_server_serves_dist_config_and_spa_routes(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>index</html>")
    (dist / "assets" / "app.js").write_text("app()")
    (dist / "x.wasm").write_bytes(b"\0asm")
    config = viewer.write_app_config(
        tmp_path / "app-config.js", viewer.Archive("http://a/o3-dpacs-wado"), "k" * 20
    )
    assert config.stat().st_mode & 0o777 == 0o600

    def get(url: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, "", b""

    with viewer.ViewerServer(dist, config) as site:
        assert get(site.url + "/")[2] == b"<html>index</html>"
        assert get(site.url + "/viewer?StudyInstanceUIDs=1.2.3")[2] == b"<html>index</html>"
        status, kind, body = get(site.url + "/app-config.js")
        assert (status, kind) == (200, "text/javascript") and b"O3_API_KEY" in body
        assert get(site.url + "/assets/app.js")[:2] == (200, "text/javascript")
        assert get(site.url + "/x.wasm")[:2] == (200, "application/wasm")
        assert get(site.url + "/assets/missing.js")[0] == 404
        assert get(site.url + "/assets/")[0] == 404  # no directory listings
        assert get(site.url + "/../../etc/passwd")[2] in (b"", b"<html>index</html>")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "script"},  # <script src> elsewhere
        {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page.html"},
        {"Referer": "http://127.0.0.1:1/"},
        {"Host": "rebound.evil.example:{port}"},  # DNS rebinding: same-origin for that site
    ],
)
def test_the_config_holding_the_key_is_never_served_to_another_site(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>index</html>")
    key = "o3k_" + "s" * 40
    config = viewer.write_app_config(
        tmp_path / "app-config.js", viewer.Archive("http://a/o3-dpacs-wado"), key
    )
    with viewer.ViewerServer(dist, config) as site:
        sent = {name: value.format(port=site.port) for name, value in headers.items()}
        request = urllib.request.Request(site.url + "/app-config.js", headers=sent)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        body = refused.value.read()
        assert key.encode() not in body and b"API key" in body
        # The viewer's own page, and the user opening the URL, still get it.
        for own in (
            {"Sec-Fetch-Site": "same-origin", "Referer": site.url + "/viewer"},
            {"Sec-Fetch-Site": "none"},
            {"Origin": site.url, "Sec-Fetch-Site": "same-origin"},
            {"Host": f"localhost:{site.port}", "Referer": f"http://localhost:{site.port}/"},
        ):
            request = urllib.request.Request(site.url + "/app-config.js", headers=own)
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert key.encode() in answer.read()
                assert answer.headers["Cross-Origin-Resource-Policy"] == "same-origin"
                assert answer.headers["Cache-Control"] == "no-store"
