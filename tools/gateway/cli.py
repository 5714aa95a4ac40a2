"""Command line of ``dicomweb-gateway``: listen for C-STORE and C-ECHO, spool, forward; answer
C-FIND, C-MOVE, C-GET and Storage Commitment from the archive's QIDO-RS and WADO-RS."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from pynetdicom import evt

from tools.gateway import access, aetitle, commitment, find, negotiation, plan, retrieve, scp
from tools.gateway.archive import Archive
from tools.gateway.audit import Trail
from tools.gateway.forwarder import Forwarder
from tools.gateway.guard import MAX_PDU, TIMEOUT
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
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AE[:SERVICES]",
        help="calling AE title allowed to associate (repeat; default: any, with a warning); "
        "AE:find,retrieve limits it to some of store, find, retrieve",
    )
    p.add_argument(
        "--destination",
        action="append",
        default=[],
        metavar="AE=HOST:PORT",
        help="a C-MOVE destination (repeat)",
    )
    p.add_argument(
        "--destinations",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a file of C-MOVE destinations, one AE=HOST:PORT per line (# comments)",
    )
    p.add_argument(
        "--audit-dir",
        type=Path,
        default=Path("dicomweb-audit"),
        help="folder of the audit trail of queries and retrievals, audit.jsonl "
        "(default ./dicomweb-audit; read it with dicomweb-audit --data-dir)",
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
    p.add_argument(
        "--max-pdu",
        type=int,
        default=MAX_PDU,
        help=f"Maximum Length advertised and enforced, bytes (default {MAX_PDU:,})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        help=f"seconds a peer may keep the gateway waiting (default {TIMEOUT:g})",
    )
    p.add_argument("--tls-cert", type=Path, help="TLS: the gateway's certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="TLS: the certificate's private key (PEM)")
    p.add_argument(
        "--tls-ca",
        type=Path,
        help="TLS: accept only peers with a certificate this CA (PEM) signed",
    )
    p.add_argument("--verbose", action="store_true", help="log each association")
    return p


def _services_problem(args: argparse.Namespace) -> str:
    """Why the destinations or the TLS settings cannot be used ('' when they can)."""
    try:
        plan.destinations(args.destination, args.destinations)
    except (ValueError, OSError) as exc:
        return f"--destination: {exc}"
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    if args.tls_ca is not None and args.tls_cert is None:
        return "--tls-ca needs --tls-cert and --tls-key"
    if args.tls_cert is not None:
        try:
            scp.tls_context(args.tls_cert, args.tls_key, args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            return f"TLS certificate or key unusable: {exc}"
    return ""


PDU_RANGE = range(4096, (16 << 20) + 1)


def refusal(args: argparse.Namespace) -> str:
    """Why the settings cannot be used ('' when they can)."""
    entries = [access.parse(value) for value in args.allow]
    titles = [("--ae-title", args.ae_title)] + [("--allow", e.title) for e in entries]
    if args.forward_aet is not None:
        titles.append(("--forward-aet", args.forward_aet))
    for option, title in titles:
        why = aetitle.problem(title)
        if why:
            return f"{option} {title!r} is not an AE title: {why}"
    storing = [e.title for e in entries if "store" in e.services]
    in_url = [args.forward_aet] if args.forward_aet is not None else storing
    for title in in_url:
        why = aetitle.path_problem(title)
        if why:
            return f"{title!r} cannot be the archive's {{CALLING_AET}}: {why}"
    why = _services_problem(args)
    if why:
        return why
    if args.max_pdu not in PDU_RANGE:
        return f"--max-pdu must be {PDU_RANGE.start:,} to {PDU_RANGE.stop - 1:,} bytes"
    if not 0 < args.timeout <= 3600:
        return "--timeout must be more than 0 and at most 3600 seconds"
    return ""


def main(argv: list[str] | None = None, stopped: threading.Event | None = None) -> int:
    """Run the gateway until SIGINT or SIGTERM (or until ``stopped`` is set)."""
    args = parser().parse_args(argv)
    key = args.key or os.environ.get("DICOMWEB_API_KEY", "")
    if not key:
        print("dicomweb-gateway: give --key or set DICOMWEB_API_KEY", file=sys.stderr)
        return 2
    problem = refusal(args)
    if problem:
        print(f"dicomweb-gateway: {problem}", file=sys.stderr)
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
    if not args.allow:
        log.warning(
            "no --allow: any calling AE title may store instances; "
            "give --allow AE for each modality"
        )
    policy = access.Access.of(args.allow)
    ae = scp.build_ae(
        args.ae_title,
        policy.titles,
        max_pdu=args.max_pdu,
        timeout=args.timeout,
        query_retrieve=True,
    )
    archive = Archive(args.url, key)
    trail = Trail(args.audit_dir / "audit.jsonl")
    targets = plan.destinations(args.destination, args.destinations)
    services = [
        (
            evt.EVT_C_FIND,
            find.find_handler(
                archive,
                args.ae_title,
                policy,
                trail,
                combined_datetime=negotiation.combined_datetime,
            ),
        ),
        (evt.EVT_SOP_EXTENDED, negotiation.sop_extended),
        (evt.EVT_C_GET, retrieve.get_handler(archive, args.ae_title, policy, trail)),
        (evt.EVT_C_MOVE, retrieve.move_handler(archive, args.ae_title, policy, trail, targets)),
        (evt.EVT_N_ACTION, commitment.action_handler(archive, ae, policy, trail, targets)),
    ]
    server = scp.start(
        ae,
        (args.bind, args.port),
        spool,
        forwarder.wake,
        calling_in_url=args.forward_aet is None,
        access=policy,
        services=services,
        ssl_context=scp.tls_context(args.tls_cert, args.tls_key, args.tls_ca)
        if args.tls_cert is not None
        else None,
    )
    host, port = server.server_address[:2]
    print(
        f"dicomweb-gateway {args.ae_title} listening on {host}:{port}, "
        f"{waiting} spooled instances to forward",
        flush=True,
    )
    if stopped is None:
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass
    server.shutdown()
    forwarder.stop()
    forwarder.join(timeout=30)
    return 0
