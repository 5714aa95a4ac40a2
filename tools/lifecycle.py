"""Delete, restore or update studies through the archive's API (``admin`` key).

    dicomweb-lifecycle \\
        --url https://{api}.execute-api.{region}.amazonaws.com/v1/o3-dpacs-wado \\
        --key o3k_... delete 1.2.3.4
    dicomweb-lifecycle --url ... --key ... delete 1.2.3.4 --series 1.2.3.4.5
    dicomweb-lifecycle --url ... --key ... restore 1.2.3.4 --series 1.2.3.4.5 \\
        --instance 1.2.3.4.5.6
    dicomweb-lifecycle --url http://127.0.0.1:3000/o3-dpacs-wado --key ... delete 1.2.3.4
    dicomweb-lifecycle --url ... --key ... rejected [1.2.3.4]
    dicomweb-lifecycle --url ... --key ... update 1.2.3.4 [1.2.3.5 ...] \\
        --set StudyDescription="CT CHEST" --set AccessionNumber=A123
    dicomweb-lifecycle --url ... --key ... merge 1.2.3.4 --patient 12345 [--issuer HOSP]
    dicomweb-lifecycle --url ... --key ... status {operation id}
    dicomweb-lifecycle --url ... --key ... versions 1.2.3.4 --series 1.2.3.4.5 \\
        --instance 1.2.3.4.5.6

The key may come from ``DICOMWEB_API_KEY`` instead of ``--key``. A DELETE or restore the
archive answers 202 (its time ran out; docs/conformance-statement.md section 12) is sent
again until it is done; a 503 is retried after its ``Retry-After``. Goes through the API, so
each call leaves its audit record. Prints one line; exits 0 when done, 1 when nothing of the
target was found (404), 2 on any other refusal. ``rejected`` lists, one JSON line each, the
instances IOCM rejection notes named (of one study, or all; section 14), every page of
``GET iocm/rejected``.

``update`` asks for a metadata update (``POST rs/studies/$bulkUpdate``, section 15) of the
attributes given as ``--set Keyword=Value`` (an empty value empties it) and waits for the
operation to finish (``--no-wait``: prints its id); exits 0 when it succeeded, 2 when it
failed. ``merge`` is an update that gives the studies the patient ``--patient`` already
has in the archive: its PatientID, IssuerOfPatientID, PatientName, PatientBirthDate and
PatientSex, read by QIDO (the key needs the read scope too). ``status`` prints an
operation's status; ``versions`` lists an instance's versions (the current one first).
Standard library only, but for ``--set``, which reads the attributes' VRs from pydicom.
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


def _send(method: str, url: str, key: str, body: bytes | None = None) -> Answer:
    headers = {"Authorization": key, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - the archive's URL, given by the user
        url, data=body, method=method, headers=headers
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
    if isinstance(found, list):  # a QIDO answer
        return {"items": found}
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


#: The patient's attributes a merge copies from the patient already in the archive.
MERGED = {
    "00100020": "LO",  # PatientID
    "00100021": "LO",  # IssuerOfPatientID
    "00100010": "PN",  # PatientName
    "00100030": "DA",  # PatientBirthDate
    "00100040": "CS",  # PatientSex
}


def change_of(assignments: list[str]) -> dict[str, object]:
    """DICOM JSON of ``Keyword=Value`` assignments (VRs from pydicom's dictionary)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword  # noqa: PLC0415

    change: dict[str, object] = {}
    for assignment in assignments:
        keyword, equals, value = assignment.partition("=")
        tag = tag_for_keyword(keyword.strip())
        if not equals or tag is None:
            raise ValueError(f"not Keyword=Value with a DICOM keyword: {keyword!r}")
        vr = dictionary_VR(tag)
        element: dict[str, object] = {"vr": vr}
        if value:
            element["Value"] = [{"Alphabetic": value} if vr == "PN" else value]
        change[f"{tag:08X}"] = element
    return change


def patient_change(
    patient_id: str,
    issuer: str | None,
    *,
    url: str,
    key: str,
    send: Callable[..., Answer] = _send,
) -> dict[str, object]:
    """The attributes of a patient the archive holds, as a change (QIDO of its studies)."""
    query = {"PatientID": patient_id, "includefield": ",".join(MERGED), "limit": "1"}
    if issuer:
        query["IssuerOfPatientID"] = issuer
    address = f"{url.rstrip('/')}/rs/studies?" + urllib.parse.urlencode(query)
    status, body, _ = send("GET", address, key)
    found = body.get("items")
    if status != 200 or not isinstance(found, list) or not found:
        raise LookupError(f"no study of patient {patient_id} was found ({status})")
    study = found[0]
    return {
        tag: {
            "vr": vr,
            **({"Value": study[tag]["Value"]} if study.get(tag, {}).get("Value") else {}),
        }
        for tag, vr in MERGED.items()
    }


def update(  # noqa: PLR0913 - keyword-only: where, with which key, and test seams
    studies: list[str],
    change: dict[str, object],
    *,
    url: str,
    key: str,
    wait: bool = True,
    send: Callable[..., Answer] = _send,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str]:
    """Ask for the update and (``wait``) poll its status until it is done."""
    body = json.dumps({"studyInstanceUids": studies, "changeDataset": change}).encode()
    status, answer, _ = send("POST", f"{url.rstrip('/')}/rs/studies/$bulkUpdate", key, body)
    if status != 202:
        return 2, f"update: {status} {answer.get('message', answer)}"
    operation = str(answer.get("id"))
    if not wait:
        return 0, f"update: asked, operation {operation}"
    return _wait(operation, url=url, key=key, send=send, sleep=sleep)


def _wait(
    operation: str,
    *,
    url: str,
    key: str,
    send: Callable[..., Answer],
    sleep: Callable[[float], None],
) -> tuple[int, str]:
    address = f"{url.rstrip('/')}/operations/{operation}"
    body: dict[str, object] = {}
    for _ in range(MAX_ROUNDS * 36):  # an hour at most
        status, body, retry = send("GET", address, key)
        if status == 200 and body.get("status") != "running":
            break
        sleep(max(retry, 1.0))
    line = f"update {operation}: {json.dumps(body, sort_keys=True)}"
    return (0 if body.get("status") == "succeeded" else 2), line


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="dicomweb-lifecycle", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the API's base URL, .../o3-dpacs-wado")
    parser.add_argument("--key", default=os.environ.get("DICOMWEB_API_KEY", ""))
    parser.add_argument(
        "action", choices=("delete", "restore", "rejected", "update", "merge", "status", "versions")
    )
    parser.add_argument(
        "study",
        nargs="*",
        help="StudyInstanceUID (several for update and merge; optional for rejected;"
        " the operation id for status)",
    )
    parser.add_argument("--series", help="SeriesInstanceUID (a series of the study)")
    parser.add_argument("--instance", help="SOPInstanceUID (an instance of the series)")
    parser.add_argument("--set", action="append", default=[], help="update: Keyword=Value")
    parser.add_argument("--patient", help="merge: the PatientID the studies belong to")
    parser.add_argument("--issuer", help="merge: that patient's IssuerOfPatientID")
    parser.add_argument("--no-wait", action="store_true", help="update: do not wait")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an admin API key is needed: --key or DICOMWEB_API_KEY")
    if args.instance and not args.series:
        parser.error("--instance needs --series")
    if args.action == "rejected":
        code, lines = rejected(args.study[0] if args.study else None, url=args.url, key=args.key)
        print("\n".join(lines))
        return code
    if not args.study:
        parser.error(f"{args.action} needs a StudyInstanceUID (status: an operation id)")
    code, line = _act(args, parser)
    print(line)
    return code


def _act(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[int, str]:
    where = {"url": args.url, "key": args.key}
    if args.action in ("update", "merge"):
        try:
            if args.action == "merge":
                if not args.patient:
                    parser.error("merge needs --patient")
                change = patient_change(args.patient, args.issuer, **where)
            else:
                change = change_of(args.set)
        except (ValueError, LookupError) as problem:
            return 2, f"{args.action}: {problem}"
        if not change:
            parser.error("update needs at least one --set Keyword=Value")
        return update(args.study, change, wait=not args.no_wait, **where)
    if args.action == "status":
        status, body, _ = _send(
            "GET", f"{args.url.rstrip('/')}/operations/{args.study[0]}", args.key
        )
        return (0 if status == 200 else 1 if status == 404 else 2), json.dumps(body, sort_keys=True)
    if args.action == "versions":
        if not args.instance:
            parser.error("versions needs --series and --instance")
        target = Target(args.study[0], args.series, args.instance)
        status, body, _ = _send("GET", f"{args.url.rstrip('/')}/versions/{target.path()}", args.key)
        return (0 if status == 200 else 1 if status == 404 else 2), json.dumps(body, sort_keys=True)
    study = args.study[0]
    return run(args.action, Target(study, args.series, args.instance), **where)


if __name__ == "__main__":
    sys.exit(main())
