"""Command line of ``dicomweb-gateway``: listen for C-STORE and C-ECHO, spool, forward."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from tools.gateway import scp
from tools.gateway.forwarder import Forwarder
from tools.gateway.spool import Spool
from tools.importer.cli import DEFAULT_URL
from tools.importer.sender import Retry, Sender

log = logging.getLogger("dicomweb-gateway")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomweb-gateway",
        description="DICOM Storage SCP that forwards every received instance to the archive.",
    )
    p.add_argument("--url", default=os.environ.get("DICOMWEB_URL", DEFAULT_URL))
    p.add_argument("--key", help="API key (default: the DICOMWEB_API_KEY environment variable)")
    p.add_argument("--ae-title", default="DICOMWEB", help="this gateway's AE title")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")  # noqa: S104
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AE",
        help="calling AE title allowed to associate (repeat; default: any)",
    )
    p.add_argument(
        "--spool",
        type=Path,
        default=Path("dicomweb-spool"),
        help="spool folder (default ./dicomweb-spool)",
    )
    p.add_argument(
        "--forward-aet",
        help="AE title recorded as the source in the archive (default: the modality's)",
    )
    p.add_argument("--workers", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--retries", type=int, default=6, help="attempts per request on 429/5xx")
    p.add_argument("--verbose", action="store_true", help="log each association")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = args.key or os.environ.get("DICOMWEB_API_KEY", "")
    if not key:
        print("dicomweb-gateway: give --key or set DICOMWEB_API_KEY", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug logs dump datasets
    spool = Spool(args.spool)
    waiting = spool.recover()

    def sender_for(calling_aet: str) -> Sender:
        return Sender(args.url, key, args.forward_aet or calling_aet, retry=Retry(args.retries))

    forwarder = Forwarder(spool, sender_for, workers=args.workers)
    forwarder.start()
    if waiting:
        forwarder.wake()
    ae = scp.build_ae(args.ae_title, args.allow)
    server = scp.start(ae, (args.bind, args.port), spool, forwarder.wake)
    host, port = server.server_address[:2]
    print(
        f"dicomweb-gateway {args.ae_title} listening on {host}:{port}, "
        f"{waiting} spooled instances to forward",
        flush=True,
    )
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass
    server.shutdown()
    forwarder.stop()
    forwarder.join(timeout=30)
    return 0
