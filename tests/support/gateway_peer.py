"""A DICOM peer of the C-STORE gateway on a raw socket, and hostile connections.

PDUs are encoded here (with pynetdicom where it can, by hand where it would refuse): an
association request with any AE titles, P-DATA-TF PDUs, a whole C-STORE. :func:`exchange`
sends pieces and reads one PDU or the close; :func:`flood` declares a 2 GB PDU and keeps
sending. :func:`hostile_case` draws one hostile connection from a seeded ``random.Random``.
The gateway's tests (``tests/unit/test_gateway_hostile.py``) and ``python -m
bench.fuzz_gateway`` use them.
"""

from __future__ import annotations

import io
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pydicom
from pynetdicom import build_context
from pynetdicom.dimse_messages import C_STORE_RQ as C_STORE_MESSAGE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.support import dicom_files
from tools.gateway.guard import MAX_PDU

GATEWAY = "GATEWAY"  # the called AE title
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ABORT = 0x02, 0x03, 0x07
HUGE = 2**31  # a 2 GB PDU


def associate_rq(
    calling: bytes = b"MODALITY",
    called: bytes = GATEWAY.encode(),
    *,
    contexts: tuple[str, ...] = (Verification, CTImageStorage),
    max_length: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom, with the title fields written as given
    (16 bytes, space padded), so that titles pynetdicom would refuse can be sent."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = "PLACEHOLDER"
    primitive.called_ae_title = "PLACEHOLDER"
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.10.1"
    primitive.user_information = [length, implementation]
    proposed = []
    for number, uid in enumerate(contexts):
        context = build_context(uid, [EXPLICIT_LE])
        context.context_id = 2 * number + 1
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    data = bytearray(pdu.encode())
    data[10:26] = called[:16].ljust(16)
    data[26:42] = calling[:16].ljust(16)
    return bytes(data)


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def p_data(context_id: int, fragments: list[tuple[int, bytes]]) -> bytes:
    """A P-DATA-TF PDU of PDVs ``(control header, data)``."""
    items = b"".join(
        struct.pack(">LBB", len(data) + 2, context_id, control) + data
        for control, data in fragments
    )
    return header(0x04, len(items)) + items


def c_store_pdus(data: bytes, context_id: int = 3, max_pdu: int = 16384) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ of the Part 10 file ``data`` (pynetdicom encodes)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encode(ds, False, True))  # explicit VR little endian
    message = C_STORE_MESSAGE()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


@dataclass
class Answer:
    """What a connection got back: the first PDU type (0 if none), how long the gateway took
    to answer or close once everything was sent, and whether it did (False: still waiting
    when the client gave up)."""

    first_type: int
    seconds: float
    data: bytes
    ended: bool = True


def exchange(
    port: int,
    payload: bytes | list[bytes],
    *,
    hold: bool = False,
    handshake: bool = False,
    wait: float = 10.0,
) -> Answer:
    """Send ``payload`` (pieces in turn), then half-close (or, with ``hold``, keep the
    connection open as a silent peer does) and read until the gateway answers or closes.
    With ``handshake``, the first piece is an association request: the rest is sent only
    once the gateway has accepted it, and the answer is what comes after."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        pieces = payload if isinstance(payload, list) else [payload]
        if handshake:
            sock.sendall(pieces[0])
            accept = _read_pdu(sock)
            if accept.first_type != A_ASSOCIATE_AC:
                return accept
            pieces = pieces[1:]
        try:
            for piece in pieces:
                sock.sendall(piece)
            if not hold:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the gateway closed first: what it sent is still readable
        return _read_pdu(sock)


def _read_pdu(sock: socket.socket) -> Answer:
    """Read one whole PDU, or until the gateway closes, or until the socket's timeout."""
    started = time.monotonic()
    received = b""
    ended = True
    try:
        while len(received) < 6 or len(received) < 6 + struct.unpack(">L", received[2:6])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        ended = False
    except OSError:
        pass  # reset: closed
    seconds = time.monotonic() - started
    return Answer(received[0] if received else 0, seconds, received, ended)


def flood(port: int, pdu_type: int, up_to: int = 256 << 20) -> int:
    """Declare a 2 GB PDU and send zeros until the gateway closes (or ``up_to`` bytes went);
    returns how many bytes the connection took."""
    chunk = b"\0" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(header(pdu_type, HUGE))
            while sent < up_to:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    return sent


def associate(port: int, calling: bytes = b"MODALITY") -> tuple[socket.socket, bytes]:
    """A raw connection with an accepted association (the A-ASSOCIATE-AC is returned)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(associate_rq(calling))
    answer = b""
    while len(answer) < 6 or len(answer) < 6 + struct.unpack(">L", answer[2:6])[0]:
        chunk = sock.recv(65536)
        assert chunk, "closed before the A-ASSOCIATE-AC"
        answer += chunk
    assert answer[0] == A_ASSOCIATE_AC, answer[:10].hex()
    return sock, answer


@dataclass(frozen=True)
class Case:
    """One hostile connection: what to send, whether to keep the connection open and silent
    afterwards, and whether to wait for the A-ASSOCIATE-AC after the first piece."""

    kind: str
    pieces: list[bytes]
    hold: bool = False
    handshake: bool = False

    def run(self, port: int, wait: float) -> Answer:
        """Send it; ``wait`` is how long to wait for an answer or a close."""
        return exchange(port, self.pieces, hold=self.hold, handshake=self.handshake, wait=wait)


@cache
def _c_store() -> list[bytes]:
    """The PDUs of a C-STORE of ``CT_small.dcm`` (4 KB each), mutated by some cases."""
    return c_store_pdus(dicom_files.data("CT_small.dcm"), max_pdu=4096)


def hostile_case(rng: random.Random) -> Case:
    """A random hostile connection (a tenth of them held open and silent)."""
    c_store = _c_store()
    rq = associate_rq(
        bytes(rng.choice([b".", b"..", b"/", b"\\", b"\x01", b"A" * 17, b" " * 16, b"CT"]))
    )
    kinds: dict[str, Callable[[], bytes]] = {
        "random-bytes": lambda: rng.randbytes(rng.randint(0, 2000)),
        "truncated-rq": lambda: rq[: rng.randint(0, len(rq) - 1)],
        "huge-length": lambda: header(rng.randint(1, 7), rng.randint(MAX_PDU + 1, 2**32 - 1)),
        "unknown-type": lambda: header(rng.choice([0, 8, 9, 0x41, 0xFF]), rng.randint(0, 99)),
        "mutated-rq": lambda: bytes(
            b if rng.random() > 0.02 else rng.randrange(256) for b in associate_rq()
        ),
        "odd-title-rq": lambda: rq,
        "garbage-items-rq": lambda: (
            header(0x01, 68 + 200) + associate_rq()[6:74] + rng.randbytes(200)
        ),
        "p-data-first": lambda: p_data(rng.randint(0, 255), [(rng.randrange(4), b"\0" * 30)]),
        "release-first": lambda: header(0x05, 4) + b"\0\0\0\0",
        "rq-then-garbage": lambda: associate_rq() + rng.randbytes(rng.randint(1, 500)),
        "rq-then-p-data-at-once": lambda: associate_rq() + b"".join(c_store[:2]),
    }
    # sent once the association is accepted
    established: dict[str, Callable[[], list[bytes]]] = {
        "garbage-p-data": lambda: [
            p_data(
                rng.choice([1, 3, 5, rng.randrange(256)]),
                [(rng.randrange(4), rng.randbytes(rng.randint(0, 400)))],
            )
        ],
        "garbage-after-accept": lambda: [rng.randbytes(rng.randint(1, 500))],
        "c-store-cut-short": lambda: c_store[: rng.randint(1, len(c_store) - 1)],
        "c-store-mutated": lambda: [
            bytes(b if rng.random() > 0.01 else rng.randrange(256) for b in pdu) for pdu in c_store
        ],
        "p-data-over-max": lambda: [header(0x04, MAX_PDU + 1) + b"\0" * 100],
        "second-rq": lambda: [associate_rq()],
    }
    kind = rng.choice(sorted([*kinds, *established]))
    hold = rng.random() < 0.1
    if kind in established:
        return Case(kind, [associate_rq(), *established[kind]()], hold, handshake=True)
    return Case(kind, [kinds[kind]()], hold)
