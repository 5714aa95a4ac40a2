"""The DICOM side: a Storage SCP (every storage SOP class pynetdicom knows, every transfer
syntax the archive stores) and the Verification SCP (C-ECHO)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from tools.gateway.spool import Spool

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
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


def build_ae(ae_title: str, allowed_calling: list[str]) -> AE:
    """The application entity with its contexts and association policy."""
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    ae.require_calling_aet = allowed_calling  # empty: any calling AE
    ae.maximum_pdu_size = 0  # no limit on what we receive
    return ae


def store_handler(spool: Spool, on_spooled: Callable[[], None]) -> Callable[[Any], int]:
    """C-STORE: write the instance as received (Part 10, with file meta) to the spool, synced,
    then answer success; if it cannot be written, 0xA700 so that the modality retries.

    pynetdicom receives each data set into a temporary file (``STORE_RECV_CHUNKED_DATASET``,
    set by :func:`start`), so an instance of any size costs a megabyte of memory here."""

    def handle(event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
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


def start(
    ae: AE, address: tuple[str, int], spool: Spool, on_spooled: Callable[[], None]
) -> ThreadedAssociationServer:
    """Listen in background threads; returns the server (``server_address`` has the port)."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets to files, not memory
    handlers: list[Any] = [
        (evt.EVT_C_STORE, store_handler(spool, on_spooled)),
        (evt.EVT_C_ECHO, lambda _event: SUCCESS),
        (evt.EVT_ACCEPTED, _accepted),
        (evt.EVT_REJECTED, _rejected),
    ]
    server = ae.start_server(address, block=False, evt_handlers=handlers)
    if server is None:  # only when block=True
        raise RuntimeError("the association server did not start")
    return server


def _accepted(event: Any) -> None:
    log.info("association accepted from %s", str(event.assoc.requestor.ae_title).strip())


def _rejected(event: Any) -> None:
    log.warning("association rejected from %s", str(event.assoc.requestor.ae_title).strip())
