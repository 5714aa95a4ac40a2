"""The DICOM side: a Storage SCP (every storage SOP class pynetdicom knows, every transfer
syntax the archive stores) and the Verification SCP (C-ECHO), behind the PDU guard
(:mod:`tools.gateway.guard`), with a state machine that ends an association rather than
its thread when pynetdicom fails on what a peer sent (:mod:`tools.gateway.statemachine`)."""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tools.gateway import aetitle, statemachine
from tools.gateway.access import Access
from tools.gateway.guard import MAX_PDU, TIMEOUT, GuardedServer, Limits, see_pending
from tools.gateway.spool import Spool

SUCCESS = 0x0000
POLL_S = 0.1  # how often the server loop checks for shutdown
OUT_OF_RESOURCES = 0xA700
NOT_AUTHORISED = 0x0124  # PS3.7 C.5.x: the service is not one this calling AE may use
log = logging.getLogger("dicomweb-gateway")

LOSSLESS = (
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Process 14
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless Only
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless Only
    "1.2.840.10008.1.2.4.202",  # HTJ2K RPCL Lossless Only
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
NATIVE = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
)


def _preference(uid: str) -> int:
    """Lossless compression first (already compressed data travels as it is), then the
    native encodings, then lossy and video syntaxes (never chosen when the same context
    also offers a lossless one)."""
    if uid in LOSSLESS:
        return 0
    return 1 if uid in NATIVE else 2


# The archive stores every transfer syntax pydicom knows, byte for byte (conformance 3.2).
# pynetdicom accepts, in each proposed context, the first of these the requestor proposed:
# the order is the gateway's preference.
TRANSFER_SYNTAXES = sorted(
    (str(uid) for uid in AllTransferSyntaxes),
    key=lambda uid: (_preference(uid), NATIVE.index(uid) if uid in NATIVE else 0),
)


# Query/Retrieve and Storage Commitment messages are small command-like data sets: the
# uncompressed syntaxes, Explicit VR Little Endian first.
COMMAND_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
QUERY_RETRIEVE = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Q/R Information Model - GET
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Q/R Information Model - GET
)
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model


def build_ae(
    ae_title: str,
    allowed_calling: list[str],
    *,
    max_pdu: int = MAX_PDU,
    timeout: float = TIMEOUT,
    query_retrieve: bool = False,
) -> AE:
    """The application entity with its contexts and association policy: ``max_pdu`` is the
    Maximum Length it advertises (and the guard enforces), ``timeout`` the ACSE, DIMSE and
    network (idle) timeout in seconds. ``query_retrieve``: also the C-FIND, C-MOVE and C-GET
    models and Storage Commitment (storage contexts then also accept the SCP role a C-GET
    requestor proposes)."""
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(
                context.abstract_syntax,
                TRANSFER_SYNTAXES,
                scu_role=True if query_retrieve else None,
                scp_role=True if query_retrieve else None,
            )
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    if query_retrieve:
        for abstract in (*QUERY_RETRIEVE, STORAGE_COMMITMENT):
            ae.add_supported_context(abstract, COMMAND_SYNTAXES)
    ae.require_calling_aet = allowed_calling  # empty: any calling AE
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def store_handler(
    spool: Spool, on_spooled: Callable[[], None], access: Access | None = None
) -> Callable[[Any], int]:
    """C-STORE: write the instance as received (Part 10, with file meta) to the spool, synced,
    then answer success; if it cannot be written, 0xA700 so that the modality retries.

    pynetdicom receives each data set into a temporary file (``STORE_RECV_CHUNKED_DATASET``,
    set by :func:`start`), so an instance of any size costs a megabyte of memory here."""

    def handle(event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        if access is not None and not access.may(calling, "store"):
            return NOT_AUTHORISED
        try:
            if _config.STORE_RECV_CHUNKED_DATASET:
                spool.put_file(calling, Path(event.dataset_path))
            else:
                spool.put(calling, event.encoded_dataset(include_meta=True))
        except Exception:  # a full disk or a broken dataset must not stop the SCP
            log.exception("could not spool an instance from %s", calling)
            return OUT_OF_RESOURCES
        on_spooled()
        return SUCCESS

    return handle


def start(  # noqa: PLR0913 - the server's settings are keyword-only
    ae: AE,
    address: tuple[str, int],
    spool: Spool,
    on_spooled: Callable[[], None],
    *,
    calling_in_url: bool = True,
    connections: int = Limits.connections,
    access: Access | None = None,
    services: Sequence[tuple[Any, Callable[[Any], Any]]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedServer:
    """Listen in a background thread; returns the server (``server_address`` has the port).

    pynetdicom receives each data set into a temporary file: in this process, temporary
    files go to the spool's ``receiving/`` folder (the spool's disk, not a ``/tmp`` that may
    be held in memory).

    ``calling_in_url``: the calling AE title becomes the archive's STOW-RS path segment, so
    a title that cannot be one (:func:`tools.gateway.aetitle.path_problem`) is rejected at
    association.

    ``access``: which calling AE may store; ``services``: more ``(event, handler)`` pairs
    (C-FIND, C-MOVE, C-GET, N-ACTION: :mod:`tools.gateway.find` and its siblings);
    ``ssl_context``: TLS on every connection (:func:`tls_context`)."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets to files, not memory
    tempfile.tempdir = str(spool.receiving)  # where pynetdicom writes them
    # pynetdicom's own notification handlers only log (at debug level, data sets included),
    # and one that raises keeps the handlers bound after it from running
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom logs C-FIND/C-MOVE/C-GET identifiers (patient names and IDs) at INFO level
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False
    server: GuardedServer | None = None

    def closed(event: Any) -> None:
        _closed(event)
        if server is not None:
            _sweep(spool.receiving, server.oldest_open())

    handlers: list[Any] = [
        (evt.EVT_C_STORE, store_handler(spool, on_spooled, access)),
        *services,
        (evt.EVT_C_ECHO, lambda _event: SUCCESS),
        (evt.EVT_ACCEPTED, _accepted),
        (evt.EVT_REJECTED, _rejected),
        (evt.EVT_CONN_OPEN, statemachine.install),
        (evt.EVT_CONN_OPEN, see_pending),
        (evt.EVT_DIMSE_RECV, _received_whole),
        (evt.EVT_CONN_CLOSE, closed),
    ]
    limits = Limits(
        max_pdu=ae.maximum_pdu_size,
        timeout=float(ae.acse_timeout or TIMEOUT),
        connections=connections,
    )

    def calling_usable(title: str) -> bool:
        return not (calling_in_url and aetitle.path_problem(title))

    server = cast(
        GuardedServer,
        ae.make_server(
            address,
            evt_handlers=handlers,
            server_class=GuardedServer,
            ssl_context=ssl_context,
            limits=limits,
            calling_usable=calling_usable,
        ),
    )
    threading.Thread(
        target=server.serve_forever, args=(POLL_S,), name="gateway-server", daemon=True
    ).start()
    return server


# Data sets pynetdicom received into temporary files, per association (EVT_DIMSE_RECV)
_received: weakref.WeakKeyDictionary[Any, list[Path]] = weakref.WeakKeyDictionary()


def _received_whole(event: Any) -> None:
    """A DIMSE message came in whole: note its data set's temporary file, if it has one."""
    path = getattr(event.message, "_data_set_path", None)  # pynetdicom's chunked receive
    if path is not None:
        _received.setdefault(event.assoc, []).append(Path(path))


def _closed(event: Any) -> None:
    """The connection ended: clean up what pynetdicom leaves behind.

    * Data sets received into temporary files that no C-STORE handler saw: the one cut off
      mid-transfer, and whole requests the association's thread did not serve (it saw the
      abort first, or returned early: a context or SOP class it does not take). pynetdicom
      removes such a file only after the handler ran; these would stay, holding patient
      data, and a peer repeating this would fill the disk. Their requestor never had a
      response: it sends them again.
    * No A-ASSOCIATE-RQ reached the association (the peer closed, stayed silent, sent
      garbage, or the guard refused it): pynetdicom has its thread wait for one until the
      ACSE timeout, counted against the association limit; wake it."""
    assoc = event.assoc
    message = getattr(assoc.dimse, "message", None)  # the DIMSE message being received
    partial = getattr(message, "_data_set_file", None)
    if partial is not None:
        partial.close()
        Path(partial.name).unlink(missing_ok=True)
    for path in _received.pop(assoc, []):
        path.unlink(missing_ok=True)  # gone already when the handler ran
    if assoc.is_acceptor and assoc.requestor.primitive is None and assoc.dul.to_user_queue.empty():
        assoc.dul.to_user_queue.put(None)  # receive_pdu() -> None: "no request came"


def _sweep(receiving: Path, oldest_open: float | None) -> None:
    """Remove received files last written before every open connection was accepted: their
    connection has ended. They are data sets pynetdicom lost track of (a command fragment in
    the middle of a data set makes it start a second file for the same message)."""
    for path in receiving.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if oldest_open is None or path.stat().st_mtime < oldest_open:
                path.unlink()


def _accepted(event: Any) -> None:
    log.info("association accepted from %s", str(event.assoc.requestor.ae_title).strip())


def _rejected(event: Any) -> None:
    log.warning("association rejected from %s", str(event.assoc.requestor.ae_title).strip())


def tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) with the gateway's certificate and key;
    with ``ca``, peers must present a certificate that CA signed (PS3.15 B.1, the Basic
    TLS Secure Transport Connection Profile's mutual authentication)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
