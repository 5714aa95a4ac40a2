"""The gateway's spool and forwarder against the fake archive (tests/fakes/upload_archive.py):
what was acknowledged leaves the spool only once stored, refused (into failed/ with its
reason) or known to the archive; a transient failure keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pynetdicom import build_context
from pynetdicom.presentation import negotiate_as_acceptor

from tests import dicom_files
from tests.fakes.upload_archive import fake_archive
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
