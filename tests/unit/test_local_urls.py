"""Signed object URLs of the embedded backend: valid while unexpired and unaltered."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from shared.adapters.local_urls import PATH_PREFIX, UrlSigner


def _parts(url: str) -> tuple[str, dict[str, str]]:
    split = urlsplit(url)
    return split.path[len(PATH_PREFIX) :], dict(parse_qsl(split.query, keep_blank_values=True))


def test_a_signed_url_grants_its_object_with_its_headers() -> None:
    now = [1000.0]
    signer = UrlSigner(b"secret", "http://127.0.0.1:9", clock=lambda: now[0])
    url = signer.url(
        "dicom/a b/x.dcm", expires=60, content_type="application/dicom; x=1", filename="x.dcm"
    )
    assert url.startswith(f"http://127.0.0.1:9{PATH_PREFIX}dicom/a%20b/x.dcm?")
    _, query = _parts(url)
    granted = signer.check("dicom/a b/x.dcm", query)
    assert granted is not None
    assert (granted.content_type, granted.filename) == ("application/dicom; x=1", "x.dcm")


def test_an_expired_or_altered_url_is_refused() -> None:
    now = [1000.0]
    signer = UrlSigner(b"secret", "http://h", clock=lambda: now[0])
    _, query = _parts(signer.url("k", expires=60, content_type="t", filename=None))
    assert signer.check("other", query) is None
    assert signer.check("k", {**query, "type": "text/html"}) is None
    assert signer.check("k", {**query, "expires": str(int(query["expires"]) + 1)}) is None
    assert signer.check("k", {**query, "expires": "soon"}) is None
    assert UrlSigner(b"another", "http://h", clock=lambda: now[0]).check("k", query) is None
    now[0] += 61
    assert signer.check("k", query) is None
