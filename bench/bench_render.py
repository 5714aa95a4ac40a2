"""WADO-URI rendering (JPEG) and transcoding, next to dcmtk and GDCM on the same files.

* ours: the WADO-URI Lambda handler (functions/wado_uri/app.py) called in-process with
  events shaped like events/wado-uri.json; the catalog and the object store are in-memory
  fakes (``shared.bootstrap.build``), so the time is the handler's own: parsing the query,
  locating the row, reading the file from memory, decoding, rendering or transcoding,
  building the (base64) response. No S3 or DynamoDB time is included.
* theirs: the same conversion of the same file by ``dcmj2pnm``, ``dcmcjpeg``, ``dcmconv``
  (dcmtk) and ``gdcmconv`` (GDCM), as subprocess wall time. A process also pays start-up
  (libraries, data dictionaries) and reads and writes a file, which a warm Lambda does not,
  so each tool is also timed doing nothing: its toolkit's converter copying the same file
  without conversion (``dcmconv in out``, ``gdcmconv in out``); "net" = median over the
  runs of (tool - no-op of the same run).
* runs are interleaved (ours, each tool, each no-op, in turn), 2 warm-ups then 15 timed
  runs; medians (and minimums) are reported.

Debian packages dcmtk and libgdcm-tools are installed with apt-get when missing and
possible (tests/support/debian_tools.py); a tool that is still missing makes its row "not
available".
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import dicom_files

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15
WARMUPS = 2
HANDLER_PATH = (
    "functions/wado_uri/app.py lambda_handler, in-process, in-memory catalog and object store"
)

CT = "693_UNCI.dcm"  # 512 x 512 CT, 16-bit signed (14 stored), explicit VR little endian
CT_J2K = "693_J2KR.dcm"  # the same CT, JPEG 2000 lossless
CR_J2KI = "RG1_J2KI.dcm"  # 1955 x 1841 CR, 15-bit MONOCHROME1, JPEG 2000 lossy
CR_J2KR = "RG1_J2KR.dcm"  # the same CR, JPEG 2000 lossless
CR_NATIVE = "RG1_UNCR.dcm"  # the same CR, explicit VR little endian (7.2 MB)
RGB8 = "US1_UNCR.dcm"  # 640 x 480 US, 8-bit RGB, explicit VR little endian

ELE, ILE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
BASELINE, SV1, J2K = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90"

PACKAGES = {"dcmj2pnm": "dcmtk", "dcmcjpeg": "dcmtk", "dcmconv": "dcmtk"}
PACKAGES["gdcmconv"] = "libgdcm-tools"
NO_J2K_IN_DCMTK = "dcmtk 3.6 (free toolkit) has no JPEG 2000 codec"

# A tool's no-op: the same toolkit reading the file and writing it unchanged.
DCMTK_NOOP = (("dcmconv", "{src}", "{noop}.dcm"),)
GDCM_NOOP = (("gdcmconv", "{src}", "{noop}.dcm"),)


@dataclass(frozen=True)
class Tool:
    """An independent tool doing the same conversion: argv steps run one after the other.

    Placeholders: {src} the source file, {out} the output, {mid} an intermediate file,
    {noop} the no-op's output. ``unavailable`` marks a comparison known to be impossible.
    """

    name: str
    steps: tuple[tuple[str, ...], ...] = ()
    noop: tuple[tuple[str, ...], ...] = ()
    unavailable: str = ""

    def command(self) -> str:
        return " && ".join(" ".join(step) for step in self.steps)


@dataclass(frozen=True)
class Case:
    """One WADO-URI request on one source file, and the tools that do the same."""

    key: str
    label: str
    source: str
    query: dict[str, str]
    tools: tuple[Tool, ...] = ()
    extra: bool = False  # not in the list: shown for context


def _dcmj2pnm(*options: str, src: str = "{src}") -> tuple[str, ...]:
    return ("dcmj2pnm", "--write-jpeg", *options, src, "{out}.jpg")


def _gdcm_then_dcmj2pnm(*options: str) -> Tool:
    return Tool(
        "gdcmconv -w + dcmj2pnm",
        (("gdcmconv", "-w", "{src}", "{mid}.dcm"), _dcmj2pnm(*options, src="{mid}.dcm")),
        (*GDCM_NOOP, ("dcmconv", "{mid}.dcm", "{noop}.dcm")),
    )


def _convert(*options: str, tool: str = "gdcmconv") -> Tool:
    noop = GDCM_NOOP if tool == "gdcmconv" else DCMTK_NOOP
    return Tool(tool, ((tool, *options, "{src}", "{out}.dcm"),), noop)


CASES = (
    Case(
        "ct_jpeg",
        "CT 512x512 -> JPEG, full size (stored window)",
        CT,
        {"contentType": "image/jpeg"},
        (Tool("dcmj2pnm", (_dcmj2pnm("+Wi", "1"),), DCMTK_NOOP),),
    ),
    Case(
        "ct_jpeg_256_window",
        "CT 512x512 -> JPEG 256x256, window 40/400",
        CT,
        {
            "contentType": "image/jpeg",
            "rows": "256",
            "columns": "256",
            "windowCenter": "40",
            "windowWidth": "400",
        },
        (Tool("dcmj2pnm", (_dcmj2pnm("+Ww", "40", "400", "+Syv", "256"),), DCMTK_NOOP),),
    ),
    *(
        Case(
            f"cr_{name[4:8].lower()}_jpeg_512",
            f"CR 1841x1955 {kind} -> JPEG rows=512",
            name,
            {"contentType": "image/jpeg", "rows": "512"},
            (
                _gdcm_then_dcmj2pnm("+Wi", "1", "+Syv", "512"),
                Tool("dcmj2pnm", unavailable=NO_J2K_IN_DCMTK),
            ),
        )
        for name, kind in ((CR_J2KI, "J2K lossy"), (CR_J2KR, "J2K lossless"))
    ),
    Case(
        "ct_to_ele",
        "CT ELE -> ELE (already stored so: passthrough)",
        CT,
        {"contentType": "application/dicom", "transferSyntax": ELE},
        (_convert("+te", tool="dcmconv"), _convert("-X")),
    ),
    Case(
        "ct_j2k_to_ele",
        "CT J2K lossless -> ELE",
        CT_J2K,
        {"contentType": "application/dicom", "transferSyntax": ELE},
        (_convert("-w", "-X"), Tool("dcmconv", unavailable=NO_J2K_IN_DCMTK)),
    ),
    Case(
        "ct_to_ile",
        "CT ELE -> ILE",
        CT,
        {"contentType": "application/dicom", "transferSyntax": ILE},
        (_convert("+ti", tool="dcmconv"), _convert("-M")),
    ),
    Case(
        "ct_j2k_to_ile",
        "CT J2K lossless -> ILE",
        CT_J2K,
        {"contentType": "application/dicom", "transferSyntax": ILE},
        (_convert("-w", "-M"), Tool("dcmconv", unavailable=NO_J2K_IN_DCMTK)),
    ),
    Case(
        "ct_to_sv1",
        "CT ELE -> JPEG Lossless SV1 (.70)",
        CT,
        {"contentType": "application/dicom", "transferSyntax": SV1},
        (_convert("+e1", tool="dcmcjpeg"), _convert("--jpeg")),
    ),
    Case(
        "ct_to_j2k",
        "CT ELE -> JPEG 2000 lossless (.90)",
        CT,
        {"contentType": "application/dicom", "transferSyntax": J2K},
        (_convert("--j2k"), _convert(tool="dcmcjp2k")),
    ),
    Case(
        "us_rgb_to_baseline",
        "US 640x480 8-bit RGB -> JPEG Baseline (.50), q90",
        RGB8,
        {"contentType": "application/dicom", "transferSyntax": BASELINE},
        (_convert("+eb", "+q", "90", tool="dcmcjpeg"), _convert("--jpeg", "-Y", "-q", "90")),
    ),
    Case(
        "cr_to_j2k",
        "CR 1841x1955 ELE (7.2 MB) -> JPEG 2000 lossless (.90)",
        CR_NATIVE,
        {"contentType": "application/dicom", "transferSyntax": J2K},
        (_convert("--j2k"),),
        extra=True,
    ),
)


# --- ours: the handler with in-memory adapters -------------------------------------------


@dataclass
class _Store:
    """The object store, in memory (only what WADO-URI uses)."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def chunks(self, key: str, size: int = 1 << 20) -> Iterator[bytes]:
        data = self.objects[key]
        for start in range(0, len(data), size):
            yield data[start : start + size]

    def presign_get(
        self, key: str, *, expires: int, content_type: str, filename: str | None = None
    ) -> str:
        return f"https://bench.invalid/{key}?expires={expires}"

    def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, *, durable: bool = False
    ) -> None:
        self.objects[key] = b"".join(chunks)

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


@dataclass
class _Catalog:
    """The index's read side, in memory (only what WADO-URI uses)."""

    rows: dict[str, Any] = field(default_factory=dict)

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[Any]:
        for uid in sop_uids:
            if uid in self.rows:
                yield self.rows[uid]


def _add(name: str, store: _Store, catalog: _Catalog) -> tuple[str, str, str]:
    """Put a corpus file in the fakes, with the index row STOW would write; its UIDs."""
    import pydicom

    from shared.dicom import attributes
    from shared.ports import InstanceRow

    data = dicom_files.data(name)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    uids = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    key = f"bench/{uids[2]}.dcm"
    store.objects[key] = data
    catalog.rows[uids[2]] = InstanceRow(
        study_uid=uids[0],
        series_uid=uids[1],
        sop_instance_uid=uids[2],
        attrs=json.loads(attributes.dumps(attributes.level_json(ds, attributes.INSTANCE_KEYWORDS))),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        blob_key=key,
        size=len(data),
    )
    return uids


def _event(
    template: dict[str, Any], uids: tuple[str, str, str], query: dict[str, str]
) -> dict[str, Any]:
    event = copy.deepcopy(template)
    params = {"requestType": "WADO", "studyUID": uids[0], "seriesUID": uids[1]}
    params |= {"objectUID": uids[2], **query}
    event["queryStringParameters"] = params
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
    return event


def _handler() -> tuple[Callable[[dict[str, Any]], dict[str, Any]], _Store, _Catalog]:
    from shared import bootstrap, config
    from tests.support.handlers import Context, load

    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
    os.environ["LOG_LEVEL"] = "WARNING"
    config.settings.cache_clear()
    store, catalog = _Store(), _Catalog()
    module = load("wado_uri")
    module.archive.set(bootstrap.build(config.settings(), objects=store, catalog=catalog))

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = module.lambda_handler(event, Context())
        return response

    return call, store, catalog


def _body(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def _check(case: Case, response: dict[str, Any]) -> str:
    """What the handler answered (raises unless it is what was asked); a short description."""
    if response["statusCode"] != 200:
        raise RuntimeError(f"{case.key}: {response['statusCode']} {_body(response)[:200]!r}")
    body = _body(response)
    if case.query["contentType"] == "image/jpeg":
        from PIL import Image

        with Image.open(io.BytesIO(body)) as image:
            if image.format != "JPEG":
                raise RuntimeError(f"{case.key}: not a JPEG")
            return f"{image.size[0]}x{image.size[1]} JPEG, {len(body):,} bytes"
    import pydicom

    syntax = str(pydicom.dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID)
    if syntax != case.query["transferSyntax"]:
        raise RuntimeError(f"{case.key}: answered {syntax}")
    return f"{syntax}, {len(body):,} bytes"


# --- theirs: subprocesses -------------------------------------------------------------------


def _binaries(tool: Tool) -> list[str]:
    return sorted({step[0] for step in (*tool.steps, *tool.noop)})


def _available(tool: Tool, reasons: dict[str, str]) -> str:
    """'' when every binary of the tool can run, else why not (installing when possible)."""
    import shutil

    if tool.unavailable:
        return tool.unavailable
    for binary in _binaries(tool):
        if shutil.which(binary):
            continue
        if binary not in reasons:
            reasons[binary] = _install(binary)
        if reasons[binary] or not shutil.which(binary):
            return reasons[binary] or f"{binary} not installed"
    return ""


def _install(binary: str) -> str:
    """Install the Debian package of ``binary`` (tests/support/debian_tools.py); '' or the
    reason it failed."""
    package = PACKAGES.get(binary)
    if package is None:
        return f"{binary} not installed (no Debian package provides it)"
    import pytest

    from tests.support.debian_tools import require_debian_tool

    try:
        require_debian_tool(binary, package)
    except pytest.skip.Exception as exc:
        return str(exc.msg)
    return ""


def _argv(steps: tuple[tuple[str, ...], ...], names: dict[str, str]) -> list[list[str]]:
    return [[part.format(**names) for part in step] for step in steps]


def _run_steps(commands: list[list[str]]) -> float:
    """Wall time (ms) of the commands run one after the other; raises on failure."""
    started = time.perf_counter()
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {message}")
    return (time.perf_counter() - started) * 1000


# --- the measurement ------------------------------------------------------------------------


def _stats(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples), 2), "min_ms": round(min(samples), 2)}


def _ratio(ours: float, theirs: float) -> float | None:
    """ours / theirs; None when theirs is below 1 ms (a net time that is only noise)."""
    return round(ours / theirs, 2) if theirs >= 1.0 else None


def _tool_result(
    tool: Tool, times: list[float], noops: list[float], out: Path, ours: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"tool": tool.name, "command": tool.command(), **_stats(times)}
    noop = statistics.median(noops)
    # paired: tool and no-op of the same round, so drift on a noisy machine cancels out
    net = statistics.median(t - n for t, n in zip(times, noops, strict=True))
    result |= {
        "noop_command": " && ".join(" ".join(s) for s in tool.noop),
        "noop_median_ms": round(noop, 2),
        "net_ms": round(net, 2),
        "ratio": _ratio(ours, result["median_ms"]),
        "ratio_net": _ratio(ours, net),
    }
    produced = sorted(out.parent.glob(out.name + ".*"))
    if produced:
        result["bytes"] = produced[0].stat().st_size
    return result


def _measure(
    case: Case,
    call: Callable[[dict[str, Any]], dict[str, Any]],
    event: dict[str, Any],
    reasons: dict[str, str],
    work: Path,
) -> dict[str, Any]:
    src = str(dicom_files.path(case.source))
    ready: list[tuple[Tool, list[list[str]], list[list[str]], Path]] = []
    skipped = []
    for number, tool in enumerate(case.tools):
        why = _available(tool, reasons)
        if why:
            skipped.append({"tool": tool.name, "not_available": why})
            continue
        stem = work / f"{case.key}-{number}"
        names = {"src": src, "out": str(stem), "mid": f"{stem}-mid", "noop": f"{stem}-noop"}
        ready.append((tool, _argv(tool.steps, names), _argv(tool.noop, names), stem))
    ours: list[float] = []
    theirs: list[list[float]] = [[] for _ in ready]
    noops: list[list[float]] = [[] for _ in ready]
    answer = ""
    for run in range(WARMUPS + RUNS):
        started = time.perf_counter()
        response = call(event)
        elapsed = (time.perf_counter() - started) * 1000
        if run == 0:
            answer = _check(case, response)
        for i, (_tool, steps, noop, _stem) in enumerate(ready):
            tool_ms, noop_ms = _run_steps(steps), _run_steps(noop)
            if run >= WARMUPS:
                theirs[i].append(tool_ms)
                noops[i].append(noop_ms)
        if run >= WARMUPS:
            ours.append(elapsed)
    median = statistics.median(ours)
    tools = [
        _tool_result(tool, theirs[i], noops[i], stem, median)
        for i, (tool, _s, _n, stem) in enumerate(ready)
    ]
    return {
        "label": case.label,
        "source": case.source,
        "query": case.query,
        "extra": case.extra,
        "answer": answer,
        "ours": _stats(ours),
        "tools": tools + skipped,
    }


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, pass or fail."""
    targets = []
    if "ct_jpeg" in results:
        ms = results["ct_jpeg"]["ours"]["median_ms"]
        targets.append(
            {"target": "CT JPEG full size <= 20 ms", "value": f"{ms} ms", "pass": ms <= 20}
        )
    for key in ("cr_j2ki_jpeg_512", "cr_j2kr_jpeg_512"):
        if key in results:
            ms = results[key]["ours"]["median_ms"]
            targets.append(
                {
                    "target": f"{results[key]['source']} -> 512 JPEG <= 300 ms",
                    "value": f"{ms} ms",
                    "pass": ms <= 300,
                }
            )
    for key in ("ct_to_j2k", "cr_to_j2k"):
        gdcm = [t for t in results.get(key, {}).get("tools", []) if t["tool"] == "gdcmconv"]
        if gdcm and "ratio" in gdcm[0]:
            raw, net = gdcm[0]["ratio"], gdcm[0]["ratio_net"]
            targets.append(
                {
                    "target": f"{results[key]['source']} -> JPEG 2000 lossless <= 1.3x gdcmconv",
                    "value": f"{raw}x raw, {net}x net of start-up",
                    "pass": net is not None and net <= 1.3,
                    "pass_raw": raw is not None and raw <= 1.3,
                }
            )
    return targets


def _print(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    print(f"\nWADO-URI rendering and transcoding: median of {RUNS} runs after {WARMUPS} warm-ups")
    print(f"  ours = {HANDLER_PATH}")
    print("  theirs = subprocess wall time; net = minus a no-op run of the toolkit (dcmconv /")
    print("  gdcmconv copying the same file unconverted: start-up, parse, write)")
    for r in results.values():
        ours = r["ours"]
        extra = "  (extra)" if r["extra"] else ""
        print(f"\n  {r['label']}  [{r['source']}]{extra}")
        print(
            f"    ours  {ours['median_ms']:8.1f} ms  (min {ours['min_ms']:.1f})  -> {r['answer']}"
        )
        for t in r["tools"]:
            if "not_available" in t:
                print(f"    {t['tool']:28s} not available: {t['not_available']}")
                continue
            ratio = f"{t['ratio']}x" if t["ratio"] is not None else "-"
            net_ratio = f"{t['ratio_net']}x" if t["ratio_net"] is not None else "- (net < 1 ms)"
            print(
                f"    {t['tool']:28s} {t['median_ms']:8.1f} ms  (min {t['min_ms']:.1f}, no-op "
                f"{t['noop_median_ms']:.1f}, net {t['net_ms']:.1f})  ours/theirs {ratio},"
                f" net {net_ratio}  [{t.get('bytes', 0):,} B]"
            )
    print("\n  targets")
    for t in targets:
        print(f"    {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")


def run() -> dict[str, Any]:
    """Every case, printed and returned; skipped when pydicom-data is missing."""
    if not dicom_files.available():
        print("\nrender: skipped (pydicom-data is not installed: pip install pydicom-data)")
        return {"skipped": "pydicom-data is not installed"}
    load_before = round(os.getloadavg()[0], 2)
    call, store, catalog = _handler()
    template = json.loads((ROOT / "events" / "wado-uri.json").read_text())
    reasons: dict[str, str] = {}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as work:
        for case in CASES:
            try:
                uids = _add(case.source, store, catalog)
            except KeyError:
                print(f"  {case.key}: skipped ({case.source} is not in pydicom-data)")
                continue
            event = _event(template, uids, case.query)
            results[case.key] = _measure(case, call, event, reasons, Path(work))
    targets = _targets(results)
    _print(results, targets)
    load = {"before": load_before, "after": round(os.getloadavg()[0], 2)}
    print(f"  1-minute load average: {load['before']} before, {load['after']} after")
    return {
        "method": HANDLER_PATH,
        "load_average_1min": load,
        "runs": RUNS,
        "warmups": WARMUPS,
        "cases": results,
        "targets": targets,
    }
