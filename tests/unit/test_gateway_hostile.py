"""The gateway against hostile peers on a raw socket: random bytes, truncated PDUs, huge
declared lengths, unknown PDU types, garbage association requests, odd AE titles, P-DATA
before association, an abort in the middle of a data set.

Every connection is answered or closed within a few seconds (the gateway under test has a
1 s timeout), declaring a 2 GB PDU costs no memory, no gateway thread dies of an exception,
and a normal C-STORE still succeeds afterwards. The peer and the random cases are
``tests/support/gateway_peer.py``; ``bench/fuzz_gateway.py`` runs the same cases at any count.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE, AllStoragePresentationContexts, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.support import dicom_files
from tests.support.gateway_peer import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    APPLICATION_CONTEXT,
    EXPLICIT_LE,
    GATEWAY,
    HUGE,
    Case,
    associate,
    associate_rq,
    c_store_pdus,
    exchange,
    flood,
    header,
    hostile_case,
    p_data,
)
from tools.gateway import scp
from tools.gateway.guard import MAX_PDU, OTHER_PDU_MAX, GuardedServer, Limits, PduGuard
from tools.gateway.spool import Spool

TIMEOUT = 1.0  # the gateway's: a silent peer is dropped after this
ANSWER_WITHIN = TIMEOUT + 3.0  # what a connection may wait for an answer or a close


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Gateway:
    port: int
    spool: Spool
    server: GuardedServer
    crashes: list[str] = field(default_factory=list)

    def store_normally(self, calling: str = "MODALITY") -> int:
        """A C-STORE by pynetdicom as requestor; the status."""
        requestor = AE(ae_title=calling)
        requestor.add_requested_context(CTImageStorage, EXPLICIT_LE)
        assoc = requestor.associate("127.0.0.1", self.port, ae_title=GATEWAY)
        assert assoc.is_established, "a normal association was not accepted"
        try:
            import io

            import pydicom

            ds = pydicom.dcmread(io.BytesIO(dicom_files.with_new_uids("CT_small.dcm")))
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        return int(status.Status)


@pytest.fixture(autouse=True)
def _temp_dir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """``scp.start`` points this process's temporary files at the spool: undone after."""
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """The gateway's SCP on a free loopback port (1 s timeout), spooling under tmp_path;
    exceptions escaping any thread are collected."""
    spool = Spool(tmp_path / "spool")
    ae = scp.build_ae(GATEWAY, [], timeout=TIMEOUT)
    server = scp.start(ae, ("127.0.0.1", 0), spool, lambda: None)
    crashes: list[str] = []
    previous = threading.excepthook

    def record(args: Any) -> None:
        crashes.append(f"{args.exc_type.__name__} in {getattr(args.thread, 'name', '?')}")

    threading.excepthook = record
    try:
        yield Gateway(int(server.server_address[1]), spool, server, crashes)
    finally:
        threading.excepthook = previous
        server.shutdown()


def spooled(gateway: Gateway) -> list[Path]:
    return sorted(gateway.spool.ready.rglob("*.dcm"))


# ---------------------------------------------------------------- titles


@pytest.mark.parametrize(
    "title",
    [
        *(b".", b"..", b"  ..  ", b"CT/1", b"a?b", b"#1", b'"Q"', b"`x`"),
        *(b"CT\\1", b"CT\x01", b"\x00" * 16, b" " * 16, "CT\u00e9".encode()),
    ],
    ids=[
        *("dot", "dotdot", "dotdot-spaces", "slash", "question", "hash", "quote", "backtick"),
        *("backslash", "control", "nul", "spaces", "non-ascii"),
    ],
)
def test_an_unusable_calling_title_is_rejected_at_association(
    gateway: Gateway, title: bytes
) -> None:
    """A-ASSOCIATE-RJ: rejected-permanent (1), service-user (1), calling AE title not
    recognized (3); nothing spooled. Not PS3.5 AE values, or titles the archive's STOW-RS
    URL cannot carry as its {CALLING_AET}."""
    answer = exchange(gateway.port, associate_rq(title))
    assert answer.data[:10] == bytes([A_ASSOCIATE_RJ, 0, 0, 0, 0, 4, 0, 1, 1, 3])
    assert answer.seconds < ANSWER_WITHIN
    assert spooled(gateway) == []


def test_an_unusable_called_title_is_rejected_at_association(gateway: Gateway) -> None:
    answer = exchange(gateway.port, associate_rq(called=b"GW\x7f"))
    assert answer.data[:10] == bytes([A_ASSOCIATE_RJ, 0, 0, 0, 0, 4, 0, 1, 1, 7])


@pytest.mark.parametrize("title", ["%2E%2E", "ae=x", " CT ", "a b&(c)!*", "[x]{y}|^<>"])
def test_odd_but_usable_titles_are_spooled_inside_the_spool(gateway: Gateway, title: str) -> None:
    assert gateway.store_normally(title) == 0x0000
    [path] = spooled(gateway)
    assert path.parent.parent == gateway.spool.ready
    assert list(gateway.spool.pending()) == [title.strip()]


def test_any_title_may_store_when_the_source_is_fixed(tmp_path: Path) -> None:
    """With ``--forward-aet`` the calling title is not a URL segment: ``..`` and ``/`` may
    store, each into a folder of ``ready/``."""
    spool = Spool(tmp_path / "spool")
    ae = scp.build_ae(GATEWAY, [], timeout=TIMEOUT)
    server = scp.start(ae, ("127.0.0.1", 0), spool, lambda: None, calling_in_url=False)
    titles = ["..", ".", "/", "../..", "a?b"]
    try:
        stored = Gateway(int(server.server_address[1]), spool, server)
        assert [stored.store_normally(title) for title in titles] == [0x0000] * len(titles)
    finally:
        server.shutdown()
    assert sorted(spool.pending()) == sorted(titles)
    assert len(list(tmp_path.rglob("*.dcm"))) == len(titles)
    assert all(p.parent.parent == spool.ready for p in tmp_path.rglob("*.dcm"))


# ---------------------------------------------------------------- lengths


def test_the_gateway_advertises_its_maximum_pdu_length(gateway: Gateway) -> None:
    sock, accept = associate(gateway.port)
    sock.close()
    assert accept.find(struct.pack(">BBHL", 0x51, 0, 4, MAX_PDU)) > 0


@pytest.mark.parametrize(
    ("pdu_type", "length"),
    [(0x01, HUGE), (0x04, HUGE), (0x05, HUGE), (0x01, OTHER_PDU_MAX + 1), (0x04, MAX_PDU + 1)],
    ids=["associate-2GB", "p-data-2GB", "release-2GB", "associate-over-cap", "p-data-over-max"],
)
def test_a_pdu_longer_than_allowed_is_aborted_before_it_is_read(
    gateway: Gateway, pdu_type: int, length: int
) -> None:
    """A-ABORT, source service-provider (2), invalid PDU parameter value (6), as soon as the
    header is in: the body is never read."""
    answer = exchange(gateway.port, header(pdu_type, length) + b"\0" * 1000, hold=True)
    assert answer.data[:10] == bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert answer.seconds < 1.0


def test_the_largest_sensible_association_request_is_accepted(gateway: Gateway) -> None:
    """128 presentation contexts, each proposing every transfer syntax the gateway takes, and
    a 65,000-byte user identity token: about 200 KB, under the 256 KiB cap."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = "MODALITY"
    primitive.called_ae_title = GATEWAY
    length = MaximumLengthNotification()
    length.maximum_length_received = 0
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 3  # a JSON web token... of 65,000 bytes
    identity.primary_field = b"x" * 65_000
    primitive.user_information = [length, identity]
    contexts = []
    for number, context in enumerate(AllStoragePresentationContexts[:128]):
        proposed = build_context(context.abstract_syntax, scp.TRANSFER_SYNTAXES)
        proposed.context_id = 2 * number + 1
        contexts.append(proposed)
    primitive.presentation_context_definition_list = contexts
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    request = pdu.encode()
    assert 190_000 < len(request) < OTHER_PDU_MAX
    assert exchange(gateway.port, request, hold=True).first_type == A_ASSOCIATE_AC


def test_a_p_data_over_the_maximum_inside_an_association_is_aborted(gateway: Gateway) -> None:
    sock, _ = associate(gateway.port)
    with sock:
        sock.sendall(header(0x04, MAX_PDU + 1))
        data = sock.recv(100)
    assert data[:10] == bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, 6])


def test_declaring_a_2gb_pdu_costs_no_memory(gateway: Gateway) -> None:
    """The peer declares 2 GB and keeps sending: the gateway closes at the header, so
    sending fails quickly, and the process does not grow."""
    before = rss_mb()
    started = time.monotonic()
    for pdu_type in (0x01, 0x04):
        sent = flood(gateway.port, pdu_type)
        assert sent < 64 << 20, f"the gateway kept reading: {sent:,} bytes accepted"
    assert time.monotonic() - started < ANSWER_WITHIN
    assert rss_mb() - before < 16


# ---------------------------------------------------------------- time


def test_a_silent_peer_is_dropped_after_the_timeout(gateway: Gateway) -> None:
    """Nothing, half a header, or half an association request, then silence: closed after
    the timeout (and the thread serving it ends), not held forever."""
    for payload in (b"\x01\x00\x00", associate_rq()[:50], b""):
        answer = exchange(gateway.port, payload, hold=True)
        assert answer.first_type == 0
        assert TIMEOUT - 0.5 < answer.seconds < ANSWER_WITHIN
    deadline = time.monotonic() + ANSWER_WITHIN
    while gateway.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.server.active_associations == []
    assert gateway.server.open_connections == 0


def test_reads_leave_the_socket_with_the_full_timeout_for_sends() -> None:
    """A read waits at most what is left of its deadline; pynetdicom's sends on the same
    socket then wait the whole timeout, not the last read's remainder."""
    ours, peer = socket.socketpair()
    with ours, peer:
        guard = PduGuard(ours, "peer", Limits(timeout=5.0), lambda _title: True)
        peer.sendall(header(0x05, 4) + b"\0\0\0\0")  # an A-RELEASE-RQ
        assert guard.recv(6) == header(0x05, 4)
        assert guard.recv(4) == b"\0\0\0\0"
        assert ours.gettimeout() == 5.0


def test_connections_over_the_limit_are_closed_at_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ae = scp.build_ae(GATEWAY, [], timeout=TIMEOUT)
    server = scp.start(ae, ("127.0.0.1", 0), spool, lambda: None, connections=3)
    port = int(server.server_address[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        answer = exchange(port, associate_rq(), hold=True, wait=5)
        assert answer.first_type == 0  # closed, not answered
        assert answer.seconds < 1.0
        held.pop().close()
        time.sleep(0.3)
        assert exchange(port, associate_rq(), hold=True, wait=5).first_type == A_ASSOCIATE_AC
    finally:
        for sock in held:
            sock.close()
        server.shutdown()


# ---------------------------------------------------------------- sequences


def test_a_request_pynetdicom_cannot_turn_into_a_primitive_is_aborted(gateway: Gateway) -> None:
    """An even presentation context ID decodes, but pynetdicom's state machine raises on it
    in a thread of its own; the guard aborts the request instead."""
    request = bytearray(associate_rq())
    item = request.index(bytes([0x20, 0]), 74)  # the first presentation context item
    request[item + 4] = 2
    answer = exchange(gateway.port, bytes(request), hold=True)
    assert answer.data[:10] == bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert answer.seconds < 1.0
    assert gateway.crashes == []


def test_a_pdu_sent_before_the_answer_ends_the_connection_without_a_crash(
    gateway: Gateway,
) -> None:
    """A requestor waits for the A-ASSOCIATE-AC; one that sends P-DATA right behind its
    request makes pynetdicom abort while still negotiating, and unguarded it then fails on
    its own accept ("Invalid event 'Evt7' for the current state 'Sta13'") in the
    connection's thread."""
    pdus = c_store_pdus(dicom_files.with_new_uids("CT_small.dcm"), max_pdu=4096)
    for _ in range(10):
        answer = exchange(gateway.port, [associate_rq() + b"".join(pdus[:2])], hold=True)
        assert answer.first_type in {A_ASSOCIATE_AC, A_ABORT, 0}
        assert answer.seconds < ANSWER_WITHIN
    time.sleep(0.5)
    assert gateway.crashes == []


@pytest.mark.parametrize(
    "fragments",
    [[(0x03, b"\xff" * 50)], [(0x03, b"\x00" * 12)], [(0x02, b"\x08\x00" * 20)]],
    ids=["garbage-command", "empty-command", "data-set-without-command"],
)
def test_a_dimse_message_pynetdicom_cannot_decode_aborts_the_association(
    gateway: Gateway, fragments: list[tuple[int, bytes]]
) -> None:
    """pynetdicom decodes DIMSE messages inside its state machine, where garbage raises and
    would end the connection's thread with a traceback: the gateway answers A-ABORT instead
    and goes on."""
    answer = exchange(gateway.port, [associate_rq(), p_data(1, fragments)], handshake=True)
    assert answer.first_type in {A_ABORT, 0}
    assert answer.seconds < ANSWER_WITHIN
    time.sleep(0.3)
    assert gateway.crashes == []
    assert gateway.store_normally() == 0x0000


def test_p_data_before_association_is_aborted(gateway: Gateway) -> None:
    answer = exchange(gateway.port, p_data(1, [(0x03, b"\0" * 20)]))
    assert answer.first_type in {A_ABORT, 0}
    assert answer.seconds < ANSWER_WITHIN


def wait_empty(folder: Path) -> list[Path]:
    deadline = time.monotonic() + ANSWER_WITHIN
    while list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(folder.iterdir())


@pytest.mark.parametrize(
    "ending",
    [b"", bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 0, 0]), p_data(3, [(0x03, b"\xff" * 50)])],
    ids=["connection-dropped", "a-abort", "garbage-pynetdicom-fails-on"],
)
def test_a_data_set_cut_off_spools_nothing_and_leaves_no_file(
    gateway: Gateway, ending: bytes
) -> None:
    """Command and half the data set, then the connection drops, an A-ABORT comes, or a
    PDU pynetdicom fails on: no instance is spooled and pynetdicom's file of the partial
    data set (patient data, in the spool's receiving/) is gone."""
    receiving = gateway.spool.receiving
    pdus = c_store_pdus(dicom_files.with_new_uids("CT_small.dcm"), max_pdu=4096)
    assert len(pdus) > 4
    sock, _ = associate(gateway.port)
    with sock:
        for pdu in pdus[: len(pdus) // 2]:
            sock.sendall(pdu)
        deadline = time.monotonic() + ANSWER_WITHIN
        while not list(receiving.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(receiving.iterdir()), "pynetdicom did not receive into receiving/"
        sock.sendall(ending)
        time.sleep(0.3)
    assert wait_empty(receiving) == []
    assert spooled(gateway) == []
    assert gateway.crashes == []
    assert gateway.store_normally() == 0x0000


def test_a_data_set_pynetdicom_lost_track_of_is_swept(gateway: Gateway) -> None:
    """A command fragment in the middle of a data set makes pynetdicom start a second file
    for the same message and forget the first; that file goes once no connection open when
    it was written is left."""
    receiving = gateway.spool.receiving
    pdus = c_store_pdus(dicom_files.with_new_uids("CT_small.dcm"), max_pdu=4096)
    exchange(gateway.port, [associate_rq(), pdus[0], pdus[1], *pdus], handshake=True)
    time.sleep(0.3)
    assert gateway.store_normally() == 0x0000  # a connection that closes after
    assert wait_empty(receiving) == []
    assert gateway.crashes == []


def test_requests_left_unserved_when_the_connection_ends_leave_no_file(tmp_path: Path) -> None:
    """A C-STORE received whole that no handler saw when the connection closes (pynetdicom's
    association thread saw the abort first, a race under load, or returned early on a
    context or SOP class it does not take) never got its response, so the requestor sends
    it again; its temporary file is removed, not left in the temp dir."""

    class Association:  # what the handlers read of pynetdicom's
        is_acceptor = True
        requestor = SimpleNamespace(primitive=object())
        dimse = SimpleNamespace(message=None)
        dul = SimpleNamespace(to_user_queue=queue.Queue())

    assoc = Association()
    files = [tmp_path / f"received-{n}.dcm" for n in range(3)]
    for path in files:
        path.write_bytes(b"instance")
        message = SimpleNamespace(_data_set_path=path)  # as pynetdicom's chunked receive
        scp._received_whole(SimpleNamespace(assoc=assoc, message=message))
    files[0].unlink()  # this one a handler saw (pynetdicom removed it)
    scp._closed(SimpleNamespace(assoc=assoc))
    assert [path.exists() for path in files] == [False, False, False]


# ---------------------------------------------------------------- random


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), raw=st.binary(max_size=300))
def test_hostile_connections_are_answered_or_closed_in_time(
    gateway: Gateway, seed: int, raw: bytes
) -> None:
    """A random hostile connection and raw bytes from hypothesis: each answered or closed
    within the limit, no thread crashes."""
    case = hostile_case(random.Random(seed))
    for sent in (case, Case("hypothesis-bytes", [raw])):
        answer = sent.run(gateway.port, ANSWER_WITHIN)
        assert answer.ended, sent.kind
        assert answer.seconds < ANSWER_WITHIN, sent.kind
    time.sleep(0.1)
    assert gateway.crashes == []


def test_after_all_that_a_normal_store_succeeds(gateway: Gateway) -> None:
    rng = random.Random(7)
    for _ in range(20):
        case = hostile_case(rng)
        assert case.run(gateway.port, ANSWER_WITHIN).seconds < ANSWER_WITHIN, case.kind
    assert gateway.store_normally() == 0x0000
    assert len(spooled(gateway)) == 1
    assert gateway.crashes == []
