"""Delete or restore a study, a series or an instance through the archive's API (``admin`` key).

    dicomweb-lifecycle \\
        --url https://{api}.execute-api.{region}.amazonaws.com/v1/o3-dpacs-wado \\
        --key o3k_... delete 1.2.3.4
    dicomweb-lifecycle --url ... --key ... delete 1.2.3.4 --series 1.2.3.4.5
    dicomweb-lifecycle --url ... --key ... restore 1.2.3.4 --series 1.2.3.4.5 \\
        --instance 1.2.3.4.5.6
    dicomweb-lifecycle --url http://127.0.0.1:3000/o3-dpacs-wado --key ... delete 1.2.3.4
    dicomweb-lifecycle --url ... --key ... rejected [1.2.3.4]

The key may come from ``DICOMWEB_API_KEY`` instead of ``--key``. A DELETE or restore the
archive answers 202 (its time ran out; docs/conformance-statement.md section 12) is sent
again until it is done; a 503 is retried after its ``Retry-After``. Goes through the API, so
each call leaves its audit record. Prints one line; exits 0 when done, 1 when nothing of the
target was found (404), 2 on any other refusal. ``rejected`` lists, one JSON line each, the
instances IOCM rejection notes named (of one study, or all; section 14), every page of
``GET iocm/rejected``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT_S = 60.0
MAX_ROUNDS = 100

#: (status, body, Retry-After seconds) of one request.
Answer = tuple[int, dict[str, object], float]


@dataclass(frozen=True)
class Target:
    """What to delete or restore."""

    study: str
    series: str | None = None
    instance: str | None = None

    def path(self) -> str:
        """The target's path under ``rs/``."""
        path = f"studies/{self.study}"
        if self.series:
            path += f"/series/{self.series}"
            if self.instance:
                path += f"/instances/{self.instance}"
        return path


def _send(method: str, url: str, key: str) -> Answer:
    request = urllib.request.Request(  # noqa: S310 - the archive's URL, given by the user
        url, method=method, headers={"Authorization": key, "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:  # noqa: S310
            return reply.status, _json(reply.read()), 0.0
    except urllib.error.HTTPError as error:
        retry = error.headers.get("Retry-After") or "1"
        return error.code, _json(error.read()), float(retry) if retry.isdigit() else 1.0


def _json(body: bytes) -> dict[str, object]:
    try:
        found = json.loads(body or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def run(  # noqa: PLR0913 - keyword-only: where, with which key, and test seams
    action: str,
    target: Target,
    *,
    url: str,
    key: str,
    send: Callable[[str, str, str], Answer] = _send,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str]:
    """Send the DELETE or restore until it is done; (exit code, the line to print)."""
    method, under = ("DELETE", "rs") if action == "delete" else ("POST", "rs/restore")
    address = f"{url.rstrip('/')}/{under}/{target.path()}"
    status, body = 0, dict[str, object]()
    for _ in range(MAX_ROUNDS):
        status, body, retry = send(method, address, key)
        if status == 503:
            sleep(max(retry, 1.0))
            continue
        if status != 202:
            break
    if status in (200, 204):
        detail = "" if status == 204 else f": {json.dumps(body, sort_keys=True)}"
        return 0, f"{action} {target.path()}: done{detail}"
    if status == 404:
        return 1, f"{action} {target.path()}: not found ({body.get('message', '')})"
    return 2, f"{action} {target.path()}: {status} {body.get('message', body)}"


def rejected(
    study: str | None,
    *,
    url: str,
    key: str,
    send: Callable[[str, str, str], Answer] = _send,
) -> tuple[int, list[str]]:
    """Every rejection record (of a study, or all), page after page; (exit code, lines)."""
    lines: list[str] = []
    after = ""
    for _ in range(MAX_ROUNDS * 100):
        query = {k: v for k, v in (("StudyInstanceUID", study), ("after", after)) if v}
        address = f"{url.rstrip('/')}/iocm/rejected"
        if query:
            address += "?" + urllib.parse.urlencode(query)
        status, body, _ = send("GET", address, key)
        if status != 200:
            return 2, [*lines, f"rejected: {status} {body.get('message', body)}"]
        found = body.get("rejected")
        if isinstance(found, list):
            lines += [json.dumps(r, sort_keys=True) for r in found]
        after = str(body.get("next") or "")
        if not after:
            break
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="dicomweb-lifecycle", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the API's base URL, .../o3-dpacs-wado")
    parser.add_argument("--key", default=os.environ.get("DICOMWEB_API_KEY", ""))
    parser.add_argument("action", choices=("delete", "restore", "rejected"))
    parser.add_argument("study", nargs="?", help="StudyInstanceUID (optional for rejected)")
    parser.add_argument("--series", help="SeriesInstanceUID (a series of the study)")
    parser.add_argument("--instance", help="SOPInstanceUID (an instance of the series)")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an admin API key is needed: --key or DICOMWEB_API_KEY")
    if args.instance and not args.series:
        parser.error("--instance needs --series")
    if args.action == "rejected":
        code, lines = rejected(args.study, url=args.url, key=args.key)
        print("\n".join(lines))
        return code
    if not args.study:
        parser.error(f"{args.action} needs a StudyInstanceUID")
    code, line = run(
        args.action, Target(args.study, args.series, args.instance), url=args.url, key=args.key
    )
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
