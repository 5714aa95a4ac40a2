"""Checks on each PDU a peer sends, made from its 6-byte header before pynetdicom reads the
rest (pynetdicom reads a PDU whole, whatever length the header declares).

:class:`GuardedServer` is pynetdicom's threaded association server (``AE.make_server``
with ``server_class``) that hands pynetdicom each connection wrapped in a
:class:`PduGuard`. The guard follows the DICOM Upper Layer framing (PS3.8 §9.3: type,
reserved byte, 32-bit length) and:

* aborts (A-ABORT, source service-provider) a P-DATA-TF longer than the Maximum Length the
  gateway advertises, any other PDU longer than ``other_pdu`` (an A-ASSOCIATE-RQ comes
  before negotiation: nothing was advertised yet), and an unknown PDU type;
* reads the first A-ASSOCIATE-RQ whole and rejects it (A-ASSOCIATE-RJ, rejected-permanent,
  service-user, "calling AE title not recognized" or "called AE title not recognized") when
  a title is not a PS3.5 AE value or the calling title is not usable, and aborts it when
  pynetdicom cannot decode it (rather than let pynetdicom fail on it in its own thread);
* gives each PDU header, and the whole first A-ASSOCIATE-RQ, ``timeout`` seconds to arrive,
  and any read inside a PDU ``timeout`` seconds; a peer slower than that is disconnected;
* keeps at most ``connections`` connections at a time; more are closed when accepted.

What it refuses, pynetdicom never reads: it sees a closed connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.pdu import A_ASSOCIATE_RQ as A_ASSOCIATE_RQ_PDU
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from tools.gateway import aetitle, statemachine

log = logging.getLogger("dicomweb-gateway")

MAX_PDU = 1 << 20  # 1 MiB: the Maximum Length advertised (PS3.8 Annex D.1)
OTHER_PDU_MAX = 256 << 10  # 128 presentation contexts with every syntax + user identity fit
TIMEOUT = 30.0
MAX_CONNECTIONS = 32

HEADER = struct.Struct(">BBL")
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
# A-ABORT reasons with source 2, DICOM UL service-provider (PS3.8 Table 9-26)
UNRECOGNIZED_PDU, INVALID_PARAMETER_VALUE = 0x01, 0x06
# A-ASSOCIATE-RJ reasons with source 1, DICOM UL service-user (PS3.8 Table 9-21)
CALLING_NOT_RECOGNIZED, CALLED_NOT_RECOGNIZED = 0x03, 0x07
# A-ASSOCIATE-RQ fixed fields (PS3.8 Table 9-11), as offsets in the PDU after its header
CALLED, CALLING, RQ_FIXED = slice(4, 20), slice(20, 36), 68


@dataclass(frozen=True)
class Limits:
    """What one connection may send, and how slowly."""

    max_pdu: int = MAX_PDU
    other_pdu: int = OTHER_PDU_MAX
    timeout: float = TIMEOUT
    connections: int = MAX_CONNECTIONS


class PduGuard:
    """A connected socket, as pynetdicom uses it, that checks every PDU header first."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        limits: Limits,
        calling_usable: Callable[[str], bool],
    ) -> None:
        self._sock = sock
        self._peer = peer
        self._limits = limits
        self._calling_usable = calling_usable
        self._pending = b""  # bytes read ahead, handed out before the socket is read again
        self._left = 0  # bytes of the current PDU's body not yet read
        self._first = True
        self._closed = False
        self.opened = time.time()
        sock.settimeout(limits.timeout)

    # ------------------------------------------------------------ what pynetdicom calls

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes, never past a PDU the guard has not checked; b'' once the
        connection is closed or refused."""
        if self._pending:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        if self._closed:
            return b""
        if self._left:
            data = self._read(min(size, self._left), time.monotonic() + self._limits.timeout)
            self._left -= len(data)
            return data
        return self._next_pdu(size)

    def send(self, data: bytes) -> int:
        """Send as a socket does."""
        return self._sock.send(data)

    def sendall(self, data: bytes) -> None:
        """Send all of ``data`` as a socket does."""
        self._sock.sendall(data)

    def pending(self) -> int:
        """Bytes read from the peer that ``select`` cannot see: the guard's read-ahead and
        what TLS decrypted but nobody read yet."""
        buffered = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._pending) + buffered

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by the guard, pynetdicom or the server)."""
        return self._closed

    def fileno(self) -> int:
        """The socket's descriptor (for ``select``); -1 once closed."""
        return self._sock.fileno()

    def shutdown(self, how: int) -> None:
        """Shut the socket down as a socket does."""
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close the socket."""
        self._closed = True
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # ------------------------------------------------------------ checks

    def _next_pdu(self, size: int) -> bytes:
        deadline = time.monotonic() + self._limits.timeout
        header = self._read_exactly(HEADER.size, deadline)
        if len(header) < HEADER.size:
            return self._drop("")  # closed by _read
        pdu_type, _, length = HEADER.unpack(header)
        name = NAMES.get(pdu_type)
        if name is None:
            return self._abort(UNRECOGNIZED_PDU, f"unknown PDU type 0x{pdu_type:02X}")
        limit = self._limits.max_pdu if pdu_type == P_DATA_TF else self._limits.other_pdu
        if length > limit:
            return self._abort(
                INVALID_PARAMETER_VALUE, f"{name} of {length:,} bytes declared, over {limit:,}"
            )
        first, self._first = self._first, False
        if pdu_type == A_ASSOCIATE_RQ and first:
            self._pending = self._first_request(header, length, deadline)
        else:
            self._pending, self._left = header, length
        return self.recv(size)

    def _first_request(self, header: bytes, length: int, deadline: float) -> bytes:
        """The whole first A-ASSOCIATE-RQ, read by ``deadline`` and checked; b'' when it was
        refused or did not arrive (the connection is then closed)."""
        body = self._read_exactly(length, deadline)
        if len(body) < length:
            return self._drop("")  # closed by _read
        refusal = self._refusal(body)
        if refusal:
            return self._reject(*refusal)
        if not _decodes(header + body):
            return self._abort(INVALID_PARAMETER_VALUE, "an A-ASSOCIATE-RQ that cannot be decoded")
        return header + body

    def _refusal(self, body: bytes) -> tuple[int, str] | None:
        """Why an A-ASSOCIATE-RQ is rejected for its titles (None: pynetdicom decides the
        rest; a request too short to hold them is its to refuse)."""
        if len(body) < RQ_FIXED:
            return None
        calling = aetitle.from_field(body[CALLING])
        if calling is None or not self._calling_usable(calling):
            return CALLING_NOT_RECOGNIZED, f"calling AE title '{aetitle.shown(body[CALLING])}'"
        if aetitle.from_field(body[CALLED]) is None:
            return CALLED_NOT_RECOGNIZED, f"called AE title '{aetitle.shown(body[CALLED])}'"
        return None

    # ------------------------------------------------------------ reading

    def _read(self, size: int, deadline: float) -> bytes:
        """One read of at most ``size`` bytes by ``deadline``; b'' (and the connection
        closed) when the peer closed, failed or was too slow."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._drop(f"silent for {self._limits.timeout:g} s inside a PDU")
            return b""
        try:
            self._sock.settimeout(remaining)
            data = self._sock.recv(size)
            self._sock.settimeout(self._limits.timeout)  # what pynetdicom's sends wait
        except TimeoutError:
            data = b""
            self._drop(f"silent for {self._limits.timeout:g} s inside a PDU")
        except ssl.SSLError as exc:
            data = b""
            self._drop(f"TLS failed ({exc.reason})")
        except OSError:
            data = b""
            self._drop("connection failed")
        if not data:
            self._drop("")
        return data

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        """``size`` bytes by ``deadline``, or fewer when the connection ended first."""
        parts: list[bytes] = []
        count = 0
        while count < size and not self._closed:
            part = self._read(min(size - count, 1 << 16), deadline)
            parts.append(part)
            count += len(part)
        return b"".join(parts)

    # ------------------------------------------------------------ ending

    def _abort(self, reason: int, why: str) -> bytes:
        pdu = A_ABORT_RQ()
        pdu.source, pdu.reason_diagnostic = 0x02, reason
        log.warning("association from %s aborted: %s", self._peer, why)
        return self._end(pdu.encode())

    def _reject(self, reason: int, why: str) -> bytes:
        pdu = A_ASSOCIATE_RJ()
        pdu.result, pdu.source, pdu.reason_diagnostic = 0x01, 0x01, reason
        log.warning("association from %s rejected: %s", self._peer, why)
        return self._end(pdu.encode())

    def _end(self, answer: bytes) -> bytes:
        """Send ``answer`` and close; pynetdicom reads an ended connection."""
        with contextlib.suppress(OSError):
            self._sock.settimeout(self._limits.timeout)
            self._sock.sendall(answer)
        return self._drop("")

    def _drop(self, why: str) -> bytes:
        """Close the connection (once; ``why``, if any, is logged the first time)."""
        if not self._closed:
            if why:
                log.info("connection from %s closed: %s", self._peer, why)
            self._closed = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        return b""


def _decodes(request: bytes) -> bool:
    """Whether pynetdicom can decode an A-ASSOCIATE-RQ and turn it into its primitive. It
    does both again once the guard hands the request on, the second in its state machine,
    where an exception (an even presentation context ID, say) kills the connection's thread
    and leaves the connection open until the ACSE timeout."""
    pdu = A_ASSOCIATE_RQ_PDU()
    try:
        pdu.decode(request)
        pdu.to_primitive()
    except Exception:  # noqa: BLE001 - whatever pynetdicom raises, the request is refused
        return False
    return True


class SharedContexts(list[Any]):
    """The server's presentation contexts, handed to each association without a copy.

    pynetdicom deep-copies the server's contexts for every association it accepts; with
    every storage SOP class in every transfer syntax (171 contexts of 39 syntaxes) that copy
    took 45 ms of each association. Negotiation only reads them (PS3.8 results are new
    contexts), so each association may share them."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with a :class:`PduGuard` on each connection
    and at most ``limits.connections`` connections at a time."""

    def __init__(  # noqa: PLR0913, PLR0917 - pynetdicom's server arguments, then ours
        self,
        ae: Any,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: Any = None,
        evt_handlers: list[Any] | None = None,
        *,
        limits: Limits,
        calling_usable: Callable[[str], bool],
    ) -> None:
        self.limits = limits
        self.calling_usable = calling_usable
        self._guards: weakref.WeakSet[PduGuard] = weakref.WeakSet()
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers)
        self.contexts = SharedContexts(self.contexts)

    @property
    def open_connections(self) -> int:
        """Connections accepted and not closed yet."""
        return sum(not guard.closed for guard in list(self._guards))

    def oldest_open(self) -> float | None:
        """When the oldest connection still open was accepted (``time.time()``), if any."""
        return min((g.opened for g in list(self._guards) if not g.closed), default=None)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection and wrap it in a :class:`PduGuard` (inside TLS when the
        server has an SSL context: the handshake then happens on the connection's first
        read, in its own thread and within the guard's timeout, never in the accepting
        thread, where a silent peer would stop every other connection)."""
        listening = cast(socket.socket, self.socket)
        sock, address = listening.accept()
        no_delay(sock)
        if self.ssl_context:
            sock.settimeout(self.limits.timeout)
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        guard = PduGuard(sock, str(address[0]), self.limits, self.calling_usable)
        self._guards.add(guard)
        return cast(socket.socket, guard), address  # pynetdicom uses it as a socket

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection (closed at once) when it is one over ``limits.connections``."""
        if self.open_connections <= self.limits.connections:
            return True
        log.warning(
            "connection from %s closed: %d connections already open",
            client_address[0],
            self.limits.connections,
        )
        return False

    def shutdown(self) -> None:
        """Stop serving and close the listening socket."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class GuardedSocket(AssociationSocket):
    """pynetdicom's association socket that also sees the bytes a :class:`PduGuard` holds
    (``select`` alone misses what TLS already decrypted: pynetdicom checks
    ``SSLSocket.pending()`` only when the socket is an ``SSLSocket`` itself)."""

    @property
    def ready(self) -> bool:
        """Whether there is data to read."""
        guard = self.socket
        if isinstance(guard, PduGuard) and not guard.closed and guard.pending():
            return True
        return bool(super().ready)


def see_pending(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: make the association's socket a :class:`GuardedSocket`."""
    sock = event.assoc.dul.socket
    if type(sock) is AssociationSocket:
        sock.__class__ = GuardedSocket


def no_delay(sock: Any) -> None:
    """Send each PDU at once (TCP_NODELAY). A DIMSE message is a command PDU and a data set
    PDU written one after the other; with Nagle's algorithm the second waits for the
    peer's delayed acknowledgement of the first (40 ms on Linux), on every response."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def no_delay_on_open(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler for associations the gateway requests (C-MOVE, storage
    commitment reports): :func:`no_delay` on their socket, and their reactor made to
    leave responses to the sender (:func:`tools.gateway.statemachine.hold_responses`)."""
    no_delay(getattr(event.assoc.dul.socket, "socket", None))
    statemachine.hold_responses(event.assoc)
