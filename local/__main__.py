"""``dicomweb-serve`` (``make serve``): run the local stack until SIGINT or SIGTERM.

Environment: ``PORT`` (default 3000), ``DICOMWEB_API_KEY`` (dev key; if unset, the data
directory's own, made on the first start and reused: ``secrets/dev-api-key``),
``DICOMWEB_STORAGE`` (``local``, the default: files and SQLite in ``DICOMWEB_DATA_DIR``,
default the checkout's ``.local-data``; or ``moto``: in memory), ``LOCAL_PARAMETER_OVERRIDES``
(``Key=Value`` pairs for template parameters, e.g. ``AuthorizerCacheTtl=0 KeyCacheTtl=0``),
``LOCAL_STACK_STATE`` (state file path), ``LOCAL_WORKERS`` (processes serving the API with
the local backend; default one per CPU). The commands that read what the stack keeps
(``dicomweb-audit``, ``dicomweb-apikeys --local``) choose the data directory and the state
file the same way (:mod:`local.settings`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local import settings
from local.stack import STORAGES, LocalStack, parse_overrides

DESCRIPTION = "Run the local stack on 127.0.0.1 until SIGINT or SIGTERM."


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dicomweb-serve", description=DESCRIPTION)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument(
        "--parameter-overrides",
        default=os.environ.get("LOCAL_PARAMETER_OVERRIDES", ""),
        help="template parameters, e.g. 'AuthorizerCacheTtl=0 KeyCacheTtl=0'",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=settings.state_file(os.environ),
        help="where the running stack says how to reach it (default .local-stack.json)",
    )
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default=os.environ.get("DICOMWEB_STORAGE") or "local",
        help="local: durable files + SQLite (default); moto: in-memory AWS emulation",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir(os.environ),
        help="where the local backend keeps its data (default .local-data)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("LOCAL_WORKERS") or os.cpu_count() or 1),
        help="processes serving the API (local storage; default: one per CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the stack, print how to use it, wait for a signal, stop."""
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack = LocalStack(
        port=args.port,
        api_key=os.environ.get("DICOMWEB_API_KEY") or None,
        parameter_overrides=parse_overrides(args.parameter_overrides),
        state_file=args.state_file,
        storage=args.storage,
        data_dir=args.data_dir,
        workers=args.workers,
        owns_process=True,
    )
    stack.start()
    try:
        routes = "\n".join(
            f"  {r.method:7} {r.path}{'' if r.authorizer else '   (no authorizer)'}"
            for r in stack.template.routes
        )
        if stack.key_file is not None:
            key_note = f"kept in {stack.key_file}, the same on every start"
        elif os.environ.get("DICOMWEB_API_KEY"):
            key_note = "from DICOMWEB_API_KEY"
        else:
            key_note = "for this run: moto keeps no keys"
        backend = f"data in {stack.data_dir}" if stack.storage == "local" else "moto, in memory"
        print(
            f"Local stack ready ({backend})\n"
            f"Base URL: {stack.base_url}\n"
            f"API key ({key_note}): {stack.api_key}\n"
            f"Routes:\n{routes}\n"
            f"Try:\n  curl -i -X POST -H 'Authorization: {stack.api_key}' "
            f"-H 'Content-Type: application/dicom' --data-binary @file.dcm "
            f"{stack.base_url}/stowRsListener/MYAET/studies\n"
            f"Keys: dicomweb-apikeys --local list\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        stopping.wait()
    finally:
        stack.stop()
        print("Local stack stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
