"""The gateway's spool and forwarder against the fake archive (tests/fakes/upload_archive.py):
what was acknowledged leaves the spool only once stored, refused (into failed/ with its
reason) or known to the archive; a transient failure keeps it."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aws_lambda_powertools.event_handler import api_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import build_context
from pynetdicom.presentation import negotiate_as_acceptor

from tests.fakes.upload_archive import fake_archive
from tests.support import dicom_files
from tools.gateway import aetitle, cli
from tools.gateway.forwarder import Forwarder
from tools.gateway.scp import TRANSFER_SYNTAXES, build_ae
from tools.gateway.spool import Spool
from tools.importer.sender import Retry, Sender


def _sender_for(base: str) -> object:
    return lambda aet: Sender(base, "k", aet, retry=Retry(2, 0.0, 0.0), sleep=lambda _s: None)


def test_spool_put_recover_and_fail(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.put("CT/1", b"one")
    spool.put("MR", b"two")
    (spool.incoming / "half-written.dcm").write_bytes(b"t")
    assert Spool(tmp_path / "spool").recover() == 2
    assert not list(spool.incoming.iterdir())
    assert {aet: len(paths) for aet, paths in spool.pending().items()} == {"CT/1": 1, "MR": 1}
    spool.fail(first, {"reason": "refused"})
    assert (spool.failed / first.name).read_bytes() == b"one"
    assert json.loads((spool.failed / f"{first.name}.json").read_text()) == {"reason": "refused"}
    assert list(spool.pending()) == ["MR"]


def test_forwarder_empties_the_spool_and_sets_refused_files_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good = [dicom_files.with_new_uids() for _ in range(5)]
    for data in good:
        spool.put("MODALITY", data)
    spool.put("MODALITY", b"\0" * 128 + b"DICM" + b"garbage")
    with fake_archive() as archive:
        forwarder = Forwarder(spool, _sender_for(archive.base), workers=2)  # type: ignore[arg-type]
        assert forwarder.forward_once() == 0
    assert sorted(archive.stored.values()) == sorted(good)
    assert spool.pending() == {}
    [reason] = spool.failed.glob("*.json")
    assert json.loads(reason.read_text())["failureReason"] == 0xC000


def test_forwarder_keeps_what_the_archive_could_not_take_yet(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put("MODALITY", dicom_files.with_new_uids())
    with fake_archive() as archive:
        archive.throttle = [503] * 2  # both attempts of the first pass
        forwarder = Forwarder(spool, _sender_for(archive.base))  # type: ignore[arg-type]
        assert forwarder.forward_once() == 1
        assert len(spool.pending()["MODALITY"]) == 1
        assert forwarder.forward_once() == 0
    assert len(archive.stored) == 1
    assert not list(spool.failed.iterdir())


def test_the_scp_offers_every_storage_class_with_every_stored_syntax() -> None:
    ae = build_ae("GW", ["MODALITY"])
    contexts = ae.supported_contexts
    assert len(contexts) > 100
    assert all(set(c.transfer_syntax) == set(TRANSFER_SYNTAXES) for c in contexts)
    assert "1.2.840.10008.1.2.4.90" in TRANSFER_SYNTAXES
    assert ae.require_calling_aet == ["MODALITY"]


@pytest.mark.parametrize(
    ("proposed", "accepted"),
    [
        (["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"], "1.2.840.10008.1.2.1"),
        (["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"], "1.2.840.10008.1.2.1"),
        (["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90"], "1.2.840.10008.1.2.4.90"),
        (["1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"], "1.2.840.10008.1.2.4.81"),
        (["1.2.840.10008.1.2.4.102"], "1.2.840.10008.1.2.4.102"),
    ],
    ids=[
        "explicit-over-implicit",
        "never-lossy-if-lossless",
        "keep-lossless-compression",
        "lossy-only",
        "video",
    ],
)
def test_negotiation_prefers_lossless_and_never_asks_for_loss(
    proposed: list[str], accepted: str
) -> None:
    ae = build_ae("GW", [])
    context = build_context("1.2.840.10008.5.1.4.1.1.2", proposed)  # CT Image Storage
    context.context_id = 1
    [result], _roles = negotiate_as_acceptor([context], ae.supported_contexts)
    assert result.result == 0x00
    assert result.transfer_syntax == [accepted]


def test_an_instance_received_into_a_file_is_spooled_whole_and_durably(tmp_path: Path) -> None:
    """pynetdicom's chunked receive hands over a file; the spool copies it (a megabyte at a
    time) into ready/, and the source stays for pynetdicom to remove."""
    received = tmp_path / "received.dcm"
    data = dicom_files.data("RG1_UNCR.dcm")  # 7.2 MB
    received.write_bytes(data)
    spool = Spool(tmp_path / "spool")
    path = spool.put_file("CT1", received)
    assert path.read_bytes() == data
    assert received.exists()
    assert spool.pending() == {"CT1": [path]}
    assert list((tmp_path / "spool" / "incoming").iterdir()) == []


# ---------------------------------------------------------------- spool folders per calling AE

AE_TITLES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=16,
).filter(str.strip)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=AE_TITLES | st.sampled_from([".", "..", "/", "../..", " .. ", "%2E", "a/b", "ae=x"]))
def test_no_calling_title_leaves_the_spool(tmp_path: Path, title: str) -> None:
    """Whatever the calling AE title, the instance lands in one folder of ``ready/`` and is
    found again under that title."""
    root = tmp_path / f"spool-{uuid.uuid4().hex}"
    spool = Spool(root)
    path = spool.put(title, b"data")
    assert path.parent.parent == spool.ready
    assert path.parent.name not in {".", ".."}
    assert spool.pending() == {title.strip(): [path]}
    assert Spool(root).recover() == 1


def test_spool_folders_are_readable_and_old_ones_still_found(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.put("CT_SCANNER-2", b"new")
    assert path.parent.name.endswith("CT_SCANNER-2")
    legacy = spool.ready / "CT%2F1"  # the percent-encoded folder of earlier versions
    legacy.mkdir()
    (legacy / "0001.dcm").write_bytes(b"old")
    assert Spool(tmp_path / "spool").recover() == 2
    assert {aet: len(paths) for aet, paths in spool.pending().items()} == {
        "CT_SCANNER-2": 1,
        "CT/1": 1,
    }


def test_files_spooled_outside_any_folder_are_set_aside_with_a_reason(tmp_path: Path) -> None:
    """Instances an earlier version spooled for the calling AE titles ``.`` (into ``ready/``)
    and ``..`` (into the spool root) are never forwarded: on start they move to ``failed/``,
    each with a JSON reason, instead of staying unseen."""
    root = tmp_path / "spool"
    spool = Spool(root)
    (spool.ready / "00000000000000000001-a.dcm").write_bytes(b"dot")
    (root / "00000000000000000002-b.dcm").write_bytes(b"dotdot")
    assert Spool(root).recover() == 0
    assert sorted(p.read_bytes() for p in spool.failed.glob("*.dcm")) == [b"dot", b"dotdot"]
    reasons = [json.loads(p.read_text()) for p in spool.failed.glob("*.json")]
    assert len(reasons) == 2
    assert all("calling AE title" in r["reason"] for r in reasons)
    assert not list(spool.ready.glob("*.dcm"))
    assert not list(root.glob("*.dcm"))


def test_titles_refused_in_the_url_are_those_the_archive_cannot_route() -> None:
    """A calling AE title is refused as the STOW-RS {CALLING_AET} exactly when the archive's
    route (Powertools' path parameter pattern) would not match it, or it is a dot segment."""
    rule = re.sub(
        api_gateway._DYNAMIC_ROUTE_PATTERN,
        api_gateway._NAMED_GROUP_BOUNDARY_PATTERN,
        "/stowRsListener/<aet>/studies",
    )
    for code in range(0x20, 0x7F):
        title = f"A{chr(code)}B"
        if aetitle.problem(title):
            continue
        routed = re.fullmatch(rule, f"/stowRsListener/{title}/studies") is not None
        assert routed == (aetitle.path_problem(title) == ""), repr(title)
    assert aetitle.path_problem("..") and aetitle.path_problem(" . ")
    assert aetitle.path_problem("...") == ""


# ---------------------------------------------------------------- one AE's failure is its own


@contextmanager
def refusing_archive(status: int) -> Iterator[str]:
    """An HTTP server answering every request with ``status``; yields its base URL."""

    class Refuse(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _refuse(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"message": "not for this AE"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _refuse

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_ae_the_archive_refuses_does_not_stop_the_others(tmp_path: Path) -> None:
    """The archive answers 403 for one calling AE (its key may not store as that AE): that
    AE's files stay spooled, marked as stalled and retried later, and the other AEs are
    forwarded in the same pass."""
    spool = Spool(tmp_path / "spool")
    locked = [spool.put("AAA_LOCKED", dicom_files.with_new_uids()) for _ in range(2)]
    good = [dicom_files.with_new_uids() for _ in range(3)]
    for data in good:
        spool.put("ZZZ_OPEN", data)
    now = [1000.0]
    with fake_archive() as archive, refusing_archive(403) as refusing:

        def sender_for(aet: str) -> Sender:
            base = refusing if aet == "AAA_LOCKED" else archive.base
            return Sender(base, "k", aet, retry=Retry(1, 0.0, 0.0), sleep=lambda _s: None)

        forwarder = Forwarder(spool, sender_for, retry_every=5.0, clock=lambda: now[0])
        assert forwarder.forward_once() == 2
        assert sorted(archive.stored.values()) == sorted(good)
        assert sorted(spool.pending()["AAA_LOCKED"]) == sorted(locked)
        assert "403" in forwarder.stalled["AAA_LOCKED"]
        assert not list(spool.failed.iterdir())


def test_an_exception_for_one_ae_does_not_stop_the_others(tmp_path: Path) -> None:
    """Anything raised while forwarding one AE's folder (a bug, a broken archive answer)
    leaves that folder spooled and backs off; the next AE is still forwarded, and the
    stalled AE is tried again once its delay has passed, not on every pass."""
    spool = Spool(tmp_path / "spool")
    spool.put("AAA_BROKEN", dicom_files.with_new_uids())
    good = dicom_files.with_new_uids()
    spool.put("ZZZ_FINE", good)
    now = [1000.0]
    asked: list[str] = []
    with fake_archive() as archive:

        def sender_for(aet: str) -> Sender:
            asked.append(aet)
            if aet == "AAA_BROKEN":
                raise RuntimeError("boom")
            return Sender(archive.base, "k", aet, retry=Retry(1, 0.0, 0.0))

        forwarder = Forwarder(spool, sender_for, retry_every=5.0, clock=lambda: now[0])
        assert forwarder.forward_once() == 1
        assert list(archive.stored.values()) == [good]
        assert forwarder.forward_once() == 1  # too soon: AAA_BROKEN is not asked again
        assert asked.count("AAA_BROKEN") == 1
        now[0] += 5.1
        forwarder.forward_once()
        assert asked.count("AAA_BROKEN") == 2
        now[0] += 5.1  # the delay doubles after a second failure
        forwarder.forward_once()
        assert asked.count("AAA_BROKEN") == 2
    assert "RuntimeError" in forwarder.stalled["AAA_BROKEN"]


# ---------------------------------------------------------------- command line


@pytest.fixture
def temp_dir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway points this process's temporary files at its spool: undone after."""
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


def test_the_gateway_listens_on_loopback_unless_told_otherwise() -> None:
    assert cli.parser().parse_args([]).bind == "127.0.0.1"


@pytest.mark.usefixtures("temp_dir_restored")
def test_no_allow_list_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    stop.set()
    argv = ["--key", "k", "--port", "0", "--spool", str(tmp_path / "spool")]
    with caplog.at_level(logging.WARNING, logger="dicomweb-gateway"):
        assert cli.main(argv, stopped=stop) == 0
    assert "any calling AE title" in caplog.text
    assert "listening on 127.0.0.1:" in capsys.readouterr().out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicomweb-gateway"):
        assert cli.main([*argv, "--allow", "CT"], stopped=stop) == 0
    assert "any calling AE title" not in caplog.text


@pytest.mark.parametrize(
    "argv",
    [
        ["--ae-title", "BAD\\AE"],
        ["--ae-title", "A" * 17],
        ["--allow", "  "],
        ["--allow", "CT\x01"],
        ["--forward-aet", ".."],
        ["--allow", "CT/1"],
        ["--max-pdu", "100"],
    ],
    ids=["backslash", "too-long", "spaces", "control", "dot-segment", "slash", "tiny-pdu"],
)
def test_unusable_settings_are_refused_at_start(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    stop.set()
    assert cli.main(["--key", "k", "--spool", str(tmp_path / "s"), *argv], stopped=stop) == 2
    assert "dicomweb-gateway:" in capsys.readouterr().err
