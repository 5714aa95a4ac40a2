"""The gateway's SCP with TLS (``--tls-cert``, ``--tls-key``, ``--tls-ca``): pynetdicom peers
over TLS store and echo; a peer speaking plain DICOM or staying silent in the handshake is
dropped within the timeout and holds up nobody else. A self-signed certificate is made
with the openssl command."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.support import dicom_files
from tests.support.debian_tools import require_debian_tool
from tools.gateway import cli, scp
from tools.gateway.spool import Spool

GATEWAY = "GATEWAY"
TIMEOUT = 1.0


@dataclass
class Tls:
    port: int
    cert: Path
    spool: Spool


@pytest.fixture(autouse=True)
def _temp_dir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


def self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = require_debian_tool("openssl", "openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    cert, key = self_signed(tmp_path)
    spool = Spool(tmp_path / "spool")
    ae = scp.build_ae(GATEWAY, [], timeout=TIMEOUT)
    server = scp.start(
        ae, ("127.0.0.1", 0), spool, lambda: None, ssl_context=scp.tls_context(cert, key)
    )
    try:
        yield Tls(int(server.server_address[1]), cert, spool)
    finally:
        server.shutdown()


def client_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    context.check_hostname = False
    return context


def test_echo_and_store_over_tls(tls: Tls) -> None:
    requestor = AE(ae_title="MODALITY")
    requestor.add_requested_context(Verification)
    requestor.add_requested_context(CTImageStorage)
    assoc = requestor.associate(
        "127.0.0.1", tls.port, ae_title=GATEWAY, tls_args=(client_context(tls.cert), None)
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        ds = pydicom.dcmread(io.BytesIO(dicom_files.with_new_uids("CT_small.dcm")))
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert len(list(tls.spool.ready.rglob("*.dcm"))) == 1


def test_plain_dicom_to_a_tls_port_is_dropped(tls: Tls) -> None:
    requestor = AE(ae_title="MODALITY")
    requestor.add_requested_context(Verification)
    requestor.acse_timeout = requestor.network_timeout = 5
    started = time.monotonic()
    assoc = requestor.associate("127.0.0.1", tls.port, ae_title=GATEWAY)
    assert not assoc.is_established
    assert time.monotonic() - started < TIMEOUT + 5


def test_a_silent_handshake_holds_up_nobody(tls: Tls) -> None:
    silent = [socket.create_connection(("127.0.0.1", tls.port)) for _ in range(3)]
    try:
        started = time.monotonic()
        requestor = AE(ae_title="MODALITY")
        requestor.add_requested_context(Verification)
        assoc = requestor.associate(
            "127.0.0.1", tls.port, ae_title=GATEWAY, tls_args=(client_context(tls.cert), None)
        )
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert time.monotonic() - started < TIMEOUT
        for sock in silent:
            sock.settimeout(TIMEOUT + 3)
            assert sock.recv(1) == b""  # dropped after the timeout
    finally:
        for sock in silent:
            sock.close()


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    base = ["--key", "k"]
    assert cli.refusal(cli.parser().parse_args([*base, "--tls-cert", str(cert)]))
    wrong = cli.parser().parse_args([*base, "--tls-cert", str(cert), "--tls-key", str(cert)])
    assert "unusable" in cli.refusal(wrong)
    good = cli.parser().parse_args([*base, "--tls-cert", str(cert), "--tls-key", str(key)])
    assert cli.refusal(good) == ""
