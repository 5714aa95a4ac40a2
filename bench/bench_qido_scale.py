"""QIDO at archive scale: 10,000 and 100,000 studies in the embedded SQLite index, 10,000 in
moto's DynamoDB; items read per result and p50/p95 latency per query kind.

* Data: ``bench_qido.synthesise`` (2 series x 2 instances per study, census-weighted
  surnames, accented names, returning patients, ten years of dates, a realistic modality
  mix, 10-digit accession numbers, descriptions by modality, four referring physicians),
  plus non-Latin patients (Japanese, Korean and Chinese names with ideographic and
  phonetic groups, Cyrillic and Greek names): one in 40. The records are the ones STOW
  builds (``bench_qido.records``) and go through the real write code: ``SqliteIndex.add_many``
  runs the same ``_add`` per instance as ``add``, a few thousand per transaction; moto gets
  one ``TransactWriteItems`` per instance (``DynamoInstanceIndex.add``).
* Queries: every kind of ``bench_qido``'s table, plus substring, cross-level, unfiltered and
  OHIF study-list queries as OHIF 3 sends them (``limit=101``, ``offset``,
  ``fuzzymatching=false``, ``includefield=00081030,00080060,00080090,00100030``, each filter
  typed ``*value*``). Each is sent ``REPEATS`` times in a row, in ``PASSES`` passes over
  every kind (the pass with the lowest median counts), with values drawn from the data through
  the QIDO Lambda handler in-process (API Gateway REST events); results are checked against
  the count the synthetic data gives.
* Measured per request: handler time (p50, p95), results, items read (SQLite: rows the
  catalog fetched; DynamoDB: items and index keys returned), whether the search stopped on
  its budget (Warning 299 with an offset). Targets: items read <= 2 x results + one page;
  p95 <= 300 ms at 100,000 studies; p50 at 100,000 within 1.5x of 10,000.

Run: ``python -m bench --only qido-scale`` (about 5 minutes without moto; add
``--qido-scale-moto 10000`` for the DynamoDB part, about an hour more). The slope at a
third size: ``--qido-scale-sizes 10000,100000,300000 --qido-scale-kinds lookups,ohif``
(300,000 studies load in about 10 minutes and take 8 GB of disk). ``--qido-scale-keep DIR``
keeps the indexes in DIR and reuses them on the next run (same seed and size);
``--qido-scale-warm`` reads each index once before measuring it (:func:`_read_through`).
"""

from __future__ import annotations

import calendar
import dataclasses
import gc
import json
import os
import random
import re
import statistics
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import bench_qido
from bench.bench_qido import Archive, Request, Study, qido_request
from tests.support.handlers import Context, json_body, load

SEED = 20261127
REPEATS = 20
#: SQLite: passes over every kind; each kind keeps its pass with the lowest median.
PASSES = 3
MOTO_REPEATS = 3  # moto answers each Query in O(table): fewer requests there
SIZES = (10_000, 100_000)
P95_TARGET_MS = 300.0
LATENCY_RATIO = 1.5
CHUNK = 4000  # instances per load transaction
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"
OHIF = {"limit": "101", "offset": "0", "fuzzymatching": "false", "includefield": OHIF_INCLUDE}
_NON_LATIN = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Tanaka^Hanako=田中^花子=たなか^はなこ",
    "Yamamoto^Kenji=山本^健二=やまもと^けんじ",
    "Kim^Minjun=김^민준",
    "Park^Jiwoo=박^지우",
    "Wang^Wei=王^伟",
    "Иванов^Иван",
    "Смирнова^Анна",
    "Παπαδόπουλος^Γιώργος",
)


# ---------------------------------------------------------------- data


def archive(n: int) -> Archive:
    """``bench_qido``'s synthetic studies; one patient in 40 renamed with a non-Latin name."""
    base = bench_qido.synthesise(n, seed=SEED)
    rng = random.Random(SEED + 7)
    renamed: dict[str, bench_qido.Patient] = {}
    studies = []
    for study in base.studies:
        patient = study.patient
        if patient.patient_id not in renamed:
            name = rng.choice(_NON_LATIN) if rng.random() < 0.025 else patient.name
            renamed[patient.patient_id] = dataclasses.replace(patient, name=name)
        studies.append(dataclasses.replace(study, patient=renamed[patient.patient_id]))
    return Archive(studies)


def _groups(name: str) -> list[str]:
    return [g for g in name.split("=") if g]


def _alphabetic(name: str) -> str:
    return name.split("=", maxsplit=1)[0]


def _pattern(value: str, *, fold: bool) -> re.Pattern[str]:
    text = value.casefold() if fold else value
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile("".join(parts), re.DOTALL)


def _name_matches(pattern: str, name: str) -> bool:
    """The matcher's rule for a PN wildcard: ASCII values against the alphabetic group."""
    compiled = _pattern(pattern, fold=True)
    groups = [_alphabetic(name)] if pattern.isascii() else _groups(name)
    return any(compiled.fullmatch(g.casefold()) for g in groups)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_SPLIT = re.compile(r"[\^=\s,.\-]+")


def _fuzzy_matches(words: str, name: str) -> bool:
    wanted = [w for w in _SPLIT.split(_fold(words)) if w]
    for group in _groups(name):
        components = [c for c in _SPLIT.split(_fold(group)) if c]
        if all(any(c.startswith(w) for c in components) for w in wanted):
            return True
    return False


# ---------------------------------------------------------------- query kinds

Draw = Callable[[random.Random, Archive], Request]


def _capped(count: int, params: dict[str, str]) -> int:
    limit = int(params.get("limit", "1000"))
    offset = int(params.get("offset", "0"))
    return max(0, min(count - offset, limit))


def _studies_where(
    a: Archive, params: dict[str, str], keep: Callable[[Study], bool], per_study: int = 1
) -> int:
    return _capped(sum(per_study for s in a.studies if keep(s)), params)


def _surname(rng: random.Random, a: Archive, minimum: int = 3) -> str:
    while True:
        name = _alphabetic(rng.choice(a.studies).patient.name).split("^")[0]
        if len(name) >= minimum and name.isascii():
            return name


def _name_kind(level: str, per_study: int, pattern: Callable[[random.Random, Archive], str],
               extra: dict[str, str] | None = None) -> Draw:  # fmt: skip
    def draw(rng: random.Random, a: Archive) -> Request:
        value = pattern(rng, a)
        params = {"PatientName": value, **(extra or {})}
        count = _studies_where(a, params, lambda s: _name_matches(value, s.patient.name), per_study)
        return qido_request(level, params, count)

    return draw


def _infix(rng: random.Random, a: Archive) -> str:
    return f"*{rng.choice(('ith', 'son', 'ller', 'ez', 'ann', 'ric')).lower()}*"


def _infix3(rng: random.Random, a: Archive) -> str:
    surname = _surname(rng, a, 5)
    start = rng.randrange(0, len(surname) - 3)
    return f"*{surname[start : start + 3 + rng.randrange(2)].lower()}*"


def _ends(rng: random.Random, a: Archive) -> str:
    surname = _surname(rng, a, 6)
    return f"{surname[:3]}*{surname[-3:]}"


def _question(rng: random.Random, a: Archive) -> str:
    surname = _surname(rng, a, 7)
    return f"*{surname[1:4]}?{surname[5:7]}*"


def _prefix(rng: random.Random, a: Archive) -> str:
    return f"{_surname(rng, a)[:3]}*"


def _fuzzy(rng: random.Random, a: Archive) -> Request:
    study = rng.choice(a.studies)
    parts = _alphabetic(study.patient.name).split("^")
    words = f"{parts[0][:4].lower()} {parts[1][:3].lower()}" if len(parts) > 1 else parts[0][:4]
    params = {"PatientName": words, "fuzzymatching": "true", "limit": "101"}
    count = _studies_where(a, params, lambda s: _fuzzy_matches(words, s.patient.name))
    return qido_request("studies", params, count)


def _text_kind(
    keyword: str, value: Callable[[random.Random, Archive], str], field: Callable[[Study], str],
    extra: dict[str, str] | None = None,
) -> Draw:  # fmt: skip
    def draw(rng: random.Random, a: Archive) -> Request:
        pattern = value(rng, a)
        compiled = _pattern(pattern, fold=False)
        params = {keyword: pattern, **(extra or {})}
        count = _studies_where(a, params, lambda s: bool(compiled.fullmatch(field(s))))
        return qido_request("studies", params, count)

    return draw


def _digits(length: int, source: Callable[[Study], str]) -> Callable[[random.Random, Archive], str]:
    def value(rng: random.Random, a: Archive) -> str:
        text = source(rng.choice(a.studies))
        digits = text.lstrip("MRN")
        start = rng.randrange(0, len(digits) - length + 1)
        return f"*{digits[start : start + length]}*"

    return value


def _short(rng: random.Random, a: Archive) -> str:
    return rng.choice(("*xu*", "*ng*", "*q*", "*oz*"))


def _unfiltered(level: str, per_study: int, params: dict[str, str]) -> Draw:
    return lambda r, a: qido_request(level, params, _capped(per_study * len(a.studies), params))


def _in_study(rng: random.Random, a: Archive) -> Request:
    study = rng.choice(a.studies)
    prefix = f"{_alphabetic(study.patient.name)[:3]}*"
    expected = 2 if _name_matches(prefix, study.patient.name) else 0
    return qido_request("series", {"StudyInstanceUID": study.uid, "PatientName": prefix}, expected)


def _series_name_modality(rng: random.Random, a: Archive) -> Request:
    pattern = _infix3(rng, a)
    params = {"PatientName": pattern, "Modality": "CT", "limit": "101"}
    count = sum(
        sum(x.modality == "CT" for x in s.series)
        for s in a.studies
        if _name_matches(pattern, s.patient.name)
    )
    return qido_request("series", params, _capped(count, params))


def _instances_by_patient(rng: random.Random, a: Archive) -> Request:
    patient_id = rng.choice(a.studies).patient.patient_id
    return qido_request("instances", {"PatientID": patient_id}, 4 * len(a.by_patient[patient_id]))


def _month_range(month: str) -> str:
    last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
    return f"{month}01-{month}{last:02d}"


def _series_month(rng: random.Random, a: Archive) -> Request:
    month = rng.choice(a.studies).date[:6]
    params = {"StudyDate": _month_range(month), "limit": "101"}
    count = sum(2 for s in a.studies if s.date[:6] == month)
    return qido_request("series", params, _capped(count, params))


def _ohif(extra: Callable[[random.Random, Archive], tuple[dict[str, str], Callable[[Study], bool]]],
          offset: str = "0") -> Draw:  # fmt: skip
    def draw(rng: random.Random, a: Archive) -> Request:
        filters, keep = extra(rng, a)
        params = {**filters, **OHIF, "offset": offset}
        return qido_request("studies", params, _studies_where(a, params, keep))

    return draw


def _ohif_name(rng: random.Random, a: Archive) -> tuple[dict[str, str], Callable[[Study], bool]]:
    typed = _surname(rng, a, 4)[: rng.choice((3, 4, 5))].lower()
    value = f"*{typed}*"
    return {"PatientName": value}, lambda s: _name_matches(value, s.patient.name)


def _ohif_mrn(rng: random.Random, a: Archive) -> tuple[dict[str, str], Callable[[Study], bool]]:
    typed = rng.choice(a.studies).patient.patient_id[3:][rng.randrange(4) :][:5]
    return {"00100020": f"*{typed}*"}, lambda s: typed in s.patient.patient_id


def _ohif_accession(
    rng: random.Random, a: Archive
) -> tuple[dict[str, str], Callable[[Study], bool]]:
    typed = rng.choice(a.studies).accession[rng.randrange(5) :][:6]
    return {"AccessionNumber": f"*{typed}*"}, lambda s: typed in s.accession


def _ohif_description(
    rng: random.Random, a: Archive
) -> tuple[dict[str, str], Callable[[Study], bool]]:
    typed = rng.choice(("CHEST", "HEAD", "KNEE", "ABDOMEN", "MAMMO", "SPINE"))
    return {"StudyDescription": f"*{typed}*"}, lambda s: typed in s.description


def _ohif_none(rng: random.Random, a: Archive) -> tuple[dict[str, str], Callable[[Study], bool]]:
    return {}, lambda s: True


def _ohif_dates(rng: random.Random, a: Archive) -> tuple[dict[str, str], Callable[[Study], bool]]:
    month = rng.choice(a.studies).date[:6]
    return {"StudyDate": _month_range(month)}, lambda s: s.date[:6] == month


def _ohif_name_and_dates(
    rng: random.Random, a: Archive
) -> tuple[dict[str, str], Callable[[Study], bool]]:
    name, keep_name = _ohif_name(rng, a)
    year = rng.choice(a.studies).date[:4]
    params = {**name, "StudyDate": f"{year}0101-{year}1231"}
    return params, lambda s: keep_name(s) and s.date[:4] == year


_DESCRIPTION = _text_kind(
    "StudyDescription",
    lambda r, a: f"*{r.choice(('HEAD', 'CHEST', 'KNEE', 'WHOLE BODY', 'BILAT'))}*",
    lambda s: s.description,
    {"limit": "101"},
)
_PHYSICIAN: Draw = lambda r, a: qido_request(  # noqa: E731 - one table row
    "studies",
    {"ReferringPhysicianName": "*kild*", "limit": "101"},
    _capped(sum(s.physician.startswith("KILDARE") for s in a.studies), {"limit": "101"}),
)

# name, draw; bench_qido's table first (its "non-indexed" infix row is indexed now)
KINDS: tuple[tuple[str, Draw], ...] = (
    *((name.replace(" (NON-INDEXED)", ""), draw) for name, _, draw in bench_qido.KINDS),
    ("studies?PatientName=*abc* (3-4 letters)", _name_kind("studies", 1, _infix3)),
    ("studies?PatientName=abc*def", _name_kind("studies", 1, _ends)),
    ("studies?PatientName=*abc?de*", _name_kind("studies", 1, _question)),
    ("studies?PatientName=abc def&fuzzymatching", _fuzzy),
    ("studies?PatientName=*Иван* (Cyrillic)",
     _name_kind("studies", 1, lambda r, a: "*Иван*")),
    ("studies?PatientName=山田* (2 chars: walk)",
     _name_kind("studies", 1, lambda r, a: "山田*")),
    ("studies?PatientName=*ab* (2 chars: walk)", _name_kind("studies", 1, _short)),
    ("studies?PatientID=*1234*",
     _text_kind("PatientID", _digits(4, lambda s: s.patient.patient_id),
                lambda s: s.patient.patient_id)),
    ("studies?AccessionNumber=*12345*",
     _text_kind("AccessionNumber", _digits(5, lambda s: s.accession), lambda s: s.accession)),
    ("studies?StudyDescription=*HEAD*&limit=101", _DESCRIPTION),
    ("studies?ReferringPhysicianName=*kild*&limit=101", _PHYSICIAN),
    ("series?PatientName=ABC*", _name_kind("series", 2, _prefix)),
    ("instances?PatientName=ABC*", _name_kind("instances", 4, _prefix)),
    ("series?PatientName=*abc*&limit=101", _name_kind("series", 2, _infix3, {"limit": "101"})),
    ("instances?PatientName=*abc*&limit=101",
     _name_kind("instances", 4, _infix3, {"limit": "101"})),
    ("series?StudyInstanceUID&PatientName=ABC*", _in_study),
    ("series?PatientName=*abc*&Modality=CT", _series_name_modality),
    ("series?StudyDate=<month>&limit=101", _series_month),
    ("instances?PatientID", _instances_by_patient),
    ("series?limit=101", _unfiltered("series", 2, {"limit": "101"})),
    ("instances?limit=101", _unfiltered("instances", 4, {"limit": "101"})),
    ("instances?offset=1000&limit=101",
     _unfiltered("instances", 4, {"offset": "1000", "limit": "101"})),
    ("OHIF studies (no filter)", _ohif(_ohif_none)),
    ("OHIF studies offset=101", _ohif(_ohif_none, "101")),
    ("OHIF PatientName=*abc*", _ohif(_ohif_name)),
    ("OHIF PatientName=*abc* offset=101", _ohif(_ohif_name, "101")),
    ("OHIF 00100020=*12345*", _ohif(_ohif_mrn)),
    ("OHIF AccessionNumber=*123456*", _ohif(_ohif_accession)),
    ("OHIF StudyDescription=*CHEST*", _ohif(_ohif_description)),
    ("OHIF StudyDate=<month>", _ohif(_ohif_dates)),
    ("OHIF PatientName=*abc*&StudyDate=<year>", _ohif(_ohif_name_and_dates)),
)  # fmt: skip


#: Kinds selected by ``--qido-scale-kinds``: these groups, or any part of a kind's name.
GROUPS: dict[str, tuple[str, ...]] = {
    "lookups": (
        "studies?StudyInstanceUID",
        "studies?PatientID",
        "studies?AccessionNumber",
        "series?SeriesInstanceUID",
        "studies/{s}/series",
        "instances?SOPInstanceUID",
        "studies/{s}/instances",
        "patients?PatientID",
        "instances?PatientID",
    ),
    "ohif": tuple(name for name, _ in KINDS if name.startswith("OHIF ")),
}


def select(words: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds named by ``words`` (groups of :data:`GROUPS` or parts of names), in
    :data:`KINDS` order; every kind when none is given."""
    if not words:
        return tuple(name for name, _ in KINDS)
    wanted = {n for w in words for n in GROUPS.get(w, ())}
    wanted |= {name for name, _ in KINDS for w in words if w not in GROUPS and w in name}
    if not wanted:
        raise ValueError(f"no query kind matches {', '.join(words)}")
    return tuple(name for name, _ in KINDS if name in wanted)


# ---------------------------------------------------------------- measurement


@dataclasses.dataclass(frozen=True)
class Sample:
    """One request through the handler."""

    ms: float
    results: int
    expected: int
    items: int
    cut: bool  # stopped on its budget (Warning 299 with an offset)


class _Handler:
    """The QIDO handler over a catalog whose reads are counted by ``items``."""

    def __init__(self, catalog: Any, items: Callable[[], int], reset: Callable[[], None]) -> None:
        from shared import bootstrap, config

        self.module = load("qido")
        self.module.archive.set(bootstrap.build(config.settings(), catalog=catalog))
        self.items, self.reset = items, reset

    def __call__(self, request: Request) -> Sample:
        event = request.event()
        self.reset()
        started = time.perf_counter()
        response = self.module.lambda_handler(event, Context())
        elapsed = time.perf_counter() - started
        if response["statusCode"] != 200:
            raise RuntimeError(f"QIDO {request.path} {request.params}: {response['body']}")
        warning = (response.get("multiValueHeaders") or {}).get("Warning") or [""]
        return Sample(
            ms=elapsed * 1000,
            results=len(json_body(response)),
            expected=request.expected,
            items=self.items(),
            cut="Continue with offset" in warning[0],
        )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _summary(samples: list[Sample], page: int) -> dict[str, Any]:
    ms = [s.ms for s in samples]
    over = [s for s in samples if s.items > 2 * s.results + page]
    return {
        "requests": len(samples),
        "results_median": statistics.median(s.results for s in samples),
        "items_median": statistics.median(s.items for s in samples),
        "items_per_result_median": round(
            statistics.median(s.items / max(s.results, 1) for s in samples), 2
        ),
        "items_over_target": len(over),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(_percentile(ms, 0.95), 2),
        "cut_by_budget": sum(s.cut for s in samples),
        "wrong_results": sum(s.results != s.expected and not s.cut for s in samples),
    }


def plans(a: Archive, repeats: int, kinds: tuple[str, ...] = ()) -> dict[str, list[Request]]:
    """``repeats`` requests of every kind (or of ``kinds``), drawn from the archive; each
    kind's values come from its own seed, whichever kinds run."""
    chosen = set(kinds or select(()))
    drawn = {}
    for name, draw in KINDS:
        if name in chosen:
            rng = random.Random(f"{SEED + 1}:{name}")
            drawn[name] = [draw(rng, a) for _ in range(repeats)]
    return drawn


def _measure(
    run: _Handler, drawn: dict[str, list[Request]], page: int, passes: int = 1
) -> dict[str, Any]:
    """Every request through the handler, each kind's requests one after another, in
    ``passes`` passes over every kind; a kind's figures are those of its pass with the
    lowest median. Other processes only ever add time, and on a small shared VM a burst
    of them (two vCPUs may be one core's two threads) moved single medians of
    sub-millisecond lookups by up to 1.7x from one run to the next.

    The caller has let go of the synthetic archive (a Lambda holds none): with 100,000
    studies' objects alive, the same requests on a 10,000-study index took 20-27% longer
    (a larger heap to allocate in), which grew with the archive measured."""
    gc.collect()
    gc.freeze()
    for requests in drawn.values():  # warm-up: imports, regexes, first pages in the cache
        run(requests[0])
    best: dict[str, dict[str, Any]] = {}
    for _ in range(passes):
        for name, requests in drawn.items():
            found = _summary([run(r) for r in requests], page)
            if name not in best or found["p50_ms"] < best[name]["p50_ms"]:
                best[name] = found
    return {name: {**found, "passes": passes} for name, found in best.items()}


def _records(a: Archive) -> Iterator[Any]:
    for study in a.studies:
        yield from bench_qido.records(study)


def sqlite_at(
    n: int, work: Path, kinds: tuple[str, ...] = (), keep: bool = False, warm: bool = False
) -> dict[str, Any]:
    """Load n studies into a new SQLite index in ``work`` (with ``keep``: reuse the one a
    previous run left there, same seed and size) and measure every kind (or ``kinds``);
    with ``warm``, the file is read once first (see :func:`_read_through`)."""
    from shared.adapters import sqlite_catalog
    from shared.adapters.sqlite_catalog import SqliteCatalog

    a = archive(n)
    path = work / f"index-{n}.sqlite3"
    stamp = path.with_suffix(".json")
    loaded = json.loads(stamp.read_text()) if keep and stamp.exists() and path.exists() else {}
    if loaded.get("seed") != SEED or loaded.get("studies") != n:
        for old in (path, stamp, *work.glob(f"{path.name}-*")):
            old.unlink(missing_ok=True)
        loaded = _load(a, path)
        if keep:
            stamp.write_text(json.dumps(loaded))
        how = f"loaded in {loaded['load_s']:.0f} s"
    else:
        how = f"reused from {path} (loaded in {loaded['load_s']:.0f} s)"
    sizes = _sqlite_sizes(path, n)
    print(
        f"  SQLite: {n:,} studies ({loaded['instances']:,} instances) {how};"
        f" {sizes['file_bytes'] / 1e9:.2f} GB, substring index"
        f" {sizes['terms_bytes_per_study']} B/study",
        flush=True,
    )
    if warm:
        print(f"  read into the OS page cache in {_read_through(path):.1f} s", flush=True)
    catalog = SqliteCatalog(path)

    def reset() -> None:
        catalog.rows_read = 0

    drawn = plans(a, REPEATS, kinds)
    del a
    measured = _measure(
        _Handler(catalog, lambda: catalog.rows_read, reset),
        drawn,
        sqlite_catalog._PAGE,
        passes=PASSES,
    )
    return {"studies": n, **loaded, **sizes, "kinds": measured}


def _read_through(path: Path) -> float:
    """Read the index file once, so that every size is measured with its index in the
    OS page cache: a small VM may drop pages of a file just written (a 2.5 GB index kept
    under half of them), and each request then pays disk reads that depend on the VM, not
    on the code. Seconds taken (about 1 s per GB when the pages are already cached)."""
    started = time.perf_counter()
    with path.open("rb") as file:
        while file.read(1 << 23):
            pass
    return time.perf_counter() - started


def _load(a: Archive, path: Path) -> dict[str, Any]:
    """The archive through the SQLite write code, CHUNK instances per transaction."""
    from shared.adapters.sqlite_index import SqliteIndex
    from shared.ports import AddOutcome

    index = SqliteIndex(path)
    started = time.perf_counter()
    chunk: list[Any] = []
    instances = 0
    for record in _records(a):
        chunk.append(record)
        if len(chunk) == CHUNK:
            instances += _add(index, chunk, AddOutcome.STORED)
            chunk = []
    instances += _add(index, chunk, AddOutcome.STORED)
    load_s = round(time.perf_counter() - started, 1)
    return {"seed": SEED, "studies": len(a.studies), "instances": instances, "load_s": load_s}


def _add(index: Any, chunk: list[Any], stored: Any) -> int:
    outcomes = index.add_many(chunk)
    if any(o is not stored for o in outcomes):
        raise RuntimeError("load: an instance was not stored")
    return len(outcomes)


def _sqlite_sizes(path: Path, n: int) -> dict[str, Any]:
    """Bytes of the substring index (terms table and FTS5 shadow tables) per study."""
    import sqlite3

    with sqlite3.connect(path) as connection:
        try:
            rows = connection.execute(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE 'study_te%' GROUP BY name"
            ).fetchall()
        except sqlite3.OperationalError:  # dbstat not compiled in
            rows = []
    total = sum(size for _, size in rows)
    return {
        "terms_bytes_per_study": round(total / n) if total else None,
        "terms_tables": dict(rows),
        "file_bytes": path.stat().st_size,
    }


def dynamo_postings(n: int) -> dict[str, Any]:
    """What the DynamoDB substring index writes per new study of the synthetic archive:
    postings (the writer's own ``posting_items``) and their bytes as DynamoDB sizes items
    (attribute names and values, plus 100 bytes of overhead per item)."""

    from shared.adapters.dynamo_index import posting_items
    from shared.dicomweb.substring import study_terms
    from shared.index.order import study_sort_key
    from shared.index.writes import TextWrite

    counts, sizes = [], []
    for study in archive(n).studies:
        r = next(iter(bench_qido.records(study)))
        sdt = study_sort_key(r.study_date, r.study_time, r.study_uid)
        postings = posting_items(TextWrite(study_terms(json.loads(r.study_json)), sdt))
        counts.append(len(postings))
        sizes.append(
            sum(
                100 + sum(len(k.encode()) + len(v["S"].encode()) for k, v in item.items())
                for item in postings
            )
        )
    return {
        "studies": n,
        "postings_per_study": round(statistics.mean(counts), 1),
        "postings_max": max(counts),
        "bytes_per_study": round(statistics.mean(sizes)),
        "bytes_per_posting": round(sum(sizes) / sum(counts)),
    }


def moto_at(n: int) -> dict[str, Any]:
    """Load n studies into moto through the DynamoDB write path and measure every kind."""
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared import config
    from shared.adapters import dynamo_search
    from shared.adapters.dynamo_search import DynamoSearch

    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto's dummy credentials
        INDEX_TABLE=bench_qido.TABLE,
        POWERTOOLS_SERVICE_NAME="bench",
        LOG_LEVEL="WARNING",
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(name, None)
    config.settings.cache_clear()
    a = archive(n)
    with mock_aws(), bench_qido.moto_shortcuts():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName=bench_qido.TABLE, **local_template.load().tables["IndexTable"].create_args
        )
        loaded = bench_qido.load_table(a, client)
        print(f"  moto: loaded {n:,} studies in {loaded['load_s']:.0f} s", flush=True)
        search = DynamoSearch(boto3.client("dynamodb"), bench_qido.TABLE)

        def reset() -> None:
            search.items_read = 0

        drawn = plans(a, MOTO_REPEATS)
        del a
        kinds = _measure(
            _Handler(search, lambda: search.items_read, reset), drawn, dynamo_search.MAX_PAGE
        )
    return {"studies": n, "load": loaded, "kinds": kinds}


# ---------------------------------------------------------------- report


def _print(title: str, result: dict[str, Any], page: int) -> None:
    print(f"\n{title}")
    print(
        f"  {'kind':48s} {'res':>5s} {'items':>6s} {'it/res':>6s} {'<=2r+' + str(page):>8s}"
        f" {'p50':>7s} {'p95':>7s}  cut wrong"
    )
    for name, k in result["kinds"].items():
        ok = "ok" if not k["items_over_target"] else f"{k['items_over_target']}/{k['requests']}"
        print(
            f"  {name:48s} {k['results_median']:5.0f} {k['items_median']:6.0f}"
            f" {k['items_per_result_median']:6.2f} {ok:>8s} {k['p50_ms']:7.1f}"
            f" {k['p95_ms']:7.1f}  {k['cut_by_budget']:3d} {k['wrong_results']:5d}"
        )


def _ratio(small: dict[str, Any], large: dict[str, Any]) -> tuple[float, bool]:
    """p50 large / small; per result when the median result counts differ."""
    per_result = small["results_median"] != large["results_median"]
    low, high = small["p50_ms"], large["p50_ms"]
    if per_result:
        low /= max(small["results_median"], 1)
        high /= max(large["results_median"], 1)
    return round(high / max(low, 1e-6), 2), per_result


def scale_table(by_size: dict[int, dict[str, Any]]) -> list[str]:
    """The slope, one line per kind: p50 at each size, its ratio to the smallest size's
    (per result, *, when the median result count differs), items per result and p95 at
    the largest size the kind ran at; OVER marks a ratio above LATENCY_RATIO (at the
    second size, the target) or a p95 above P95_TARGET_MS."""
    sizes = sorted(by_size)
    small = sizes[0]
    label = {n: f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}" for n in sizes}
    head = f"  {'kind':48s} {'it/res':>6s}"
    head += "".join(f" {'p50 ' + label[n]:>9s}" for n in sizes)
    head += "".join(f" {'x' + label[n]:>7s}" for n in sizes[1:])
    lines = [head + f" {'p95':>7s}  verdict"]
    for name, first in by_size[small]["kinds"].items():
        ran = [n for n in sizes if name in by_size[n]["kinds"]]
        last = by_size[ran[-1]]["kinds"][name]
        line = f"  {name:48s} {last['items_per_result_median']:6.2f}"
        line += "".join(
            f" {by_size[n]['kinds'][name]['p50_ms']:9.2f}" if n in ran else f" {'-':>9s}"
            for n in sizes
        )
        over = []
        for n in sizes[1:]:
            if n not in ran:
                line += f" {'-':>7s}"
                continue
            ratio, per_result = _ratio(first, by_size[n]["kinds"][name])
            line += f" {ratio:6.2f}{'*' if per_result else ' '}"
            if n == sizes[1] and ratio > LATENCY_RATIO:
                over.append(f"p50 x{ratio:.2f}")
        if last["p95_ms"] > P95_TARGET_MS:
            over.append(f"p95 {last['p95_ms']:.0f} ms")
        lines.append(
            line + f" {last['p95_ms']:7.1f}  {'OVER ' + ', '.join(over) if over else 'ok'}"
        )
    return lines


def run(
    sizes: tuple[int, ...] = SIZES,
    moto: int = 0,
    kinds: tuple[str, ...] = (),
    keep: Path | None = None,
    warm: bool = False,
) -> dict[str, Any]:
    """SQLite at every size (and moto at ``moto`` studies when given); targets judged.
    ``kinds``: groups or parts of names (:func:`select`); ``keep``: a directory where the
    indexes stay for the next run; ``warm``: each index read once before it is measured."""
    from shared.adapters import dynamo_search, sqlite_catalog

    os.environ.update(POWERTOOLS_SERVICE_NAME="bench", LOG_LEVEL="WARNING")
    chosen = select(kinds)
    print(
        f"\nQIDO at scale: SQLite {sizes}, moto {moto or '-'}, {REPEATS} requests per kind,"
        f" {len(chosen)} kinds; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    report: dict[str, Any] = {"seed": SEED, "repeats": REPEATS, "sqlite": {}}
    with tempfile.TemporaryDirectory() as temporary:
        work = keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            result = sqlite_at(n, work, chosen, keep=keep is not None, warm=warm)
            report["sqlite"][str(n)] = result
            _print(f"SQLite, {n:,} studies", result, sqlite_catalog._PAGE)
            if keep is None:  # the next size's disk
                for done in work.glob(f"index-{n}.sqlite3*"):
                    done.unlink()
    report["load_average_after"] = os.getloadavg()
    if len(sizes) > 1:
        by_size = {n: report["sqlite"][str(n)] for n in sizes}
        small, second, large = min(sizes), sorted(sizes)[1], max(sizes)
        report["targets"] = {
            "p95_le_300ms_at_largest": {
                name: k["p95_ms"] <= P95_TARGET_MS for name, k in by_size[large]["kinds"].items()
            },
            "p50_ratio_to_smallest": {
                str(n): {
                    name: _ratio(by_size[small]["kinds"][name], k)
                    for name, k in by_size[n]["kinds"].items()
                }
                for n in sizes[1:]
            },
            "p50_ratio_le_1_5_at_second": {
                name: _ratio(by_size[small]["kinds"][name], k)[0] <= LATENCY_RATIO
                for name, k in by_size[second]["kinds"].items()
            },
            "items_le_2x_results_plus_page": {
                name: not k["items_over_target"] for name, k in by_size[large]["kinds"].items()
            },
        }
        print(
            f"\nThe slope: p50 (ms) at each size and its ratio to {small:,} studies (target"
            f" <= {LATENCY_RATIO} at {second:,}; per result, *, when the median result count"
            f" grows with the archive); items per result and p95 at the largest size"
            f" (target <= {P95_TARGET_MS:.0f} ms); load average now"
            f" {', '.join(f'{x:.2f}' for x in report['load_average_after'])}"
        )
        print("\n".join(scale_table(by_size)))
    report["dynamo_postings"] = postings = dynamo_postings(min(sizes))
    print(
        f"\nDynamoDB substring index per new study: {postings['postings_per_study']} postings"
        f" (max {postings['postings_max']}), {postings['bytes_per_study']:,} bytes"
    )
    if moto:
        report["moto"] = moto_at(moto)
        _print(f"DynamoDB (moto), {moto:,} studies", report["moto"], dynamo_search.MAX_PAGE)
    return report
