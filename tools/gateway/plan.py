"""What a C-MOVE or C-GET retrieves and how each instance travels (PS3.4 C.4.2, C.4.3).
Pure: no network, no pynetdicom association.

* :func:`retrieval`: the identifier's unique keys as a QIDO-RS instance search (0xA900 for
  an identifier without the unique keys its level needs, or with other matching keys);
* :func:`delivery`: for one instance, whether it goes as stored, in a transfer syntax the
  archive transcodes it to, or not at all, given the contexts the receiver accepted;
* :func:`proposed`: the presentation contexts a C-MOVE proposes to its destination;
* :func:`destinations`: ``AE=HOST:PORT`` values and files of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pydicom import Dataset, datadict
from pydicom.multival import MultiValue

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.dicomweb.uids import valid_uid
from tools.gateway import aetitle
from tools.gateway.query import (
    IDENTIFIER_DOES_NOT_MATCH,
    LEVELS,
    UNABLE_TO_PROCESS,
    Model,
    QRLevel,
    Refusal,
)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
NATIVE_LE = (EXPLICIT_LE, IMPLICIT_LE)  # pynetdicom re-encodes one as the other
#: Syntaxes the archive transcodes to (conformance statement 8.1), lossless first; JPEG
#: Baseline is lossy and only asked for when the instance is stored lossy already.
TRANSCODED = (EXPLICIT_LE, IMPLICIT_LE, "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90")
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
LOSSY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
    }
)
#: Compressed syntaxes proposed to a C-MOVE destination, each in a context of its own, so
#: that a destination taking them receives instances as stored.
COMPRESSED = (
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
)
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1 to 255
MAX_SUBOPERATIONS = 65535  # the counts are US
RETURNED = ("0020000D", "0020000E", "00080018", "00080016")


@dataclass(frozen=True)
class Instance:
    """One instance to retrieve."""

    study: str
    series: str
    sop_instance: str
    sop_class: str


@dataclass(frozen=True)
class Retrieval:
    """The QIDO-RS instance search listing what a C-MOVE or C-GET retrieves."""

    level: QRLevel
    params: tuple[tuple[str, str], ...]

    def query_string(self, offset: int = 0, limit: int | None = None) -> str:
        """The instance search's query string."""
        pairs = [*self.params, ("includefield", ",".join(RETURNED))]
        if limit is not None:
            pairs += [("limit", str(limit)), ("offset", str(offset))]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)

    @property
    def by_instance(self) -> bool:
        """Whether instances are fetched one by one (IMAGE level) rather than by series."""
        return self.level == "IMAGE"


_UNIQUE = (("PATIENT", "PatientID"), ("STUDY", "StudyInstanceUID"))
_KEYS: dict[QRLevel, tuple[str, ...]] = {
    "PATIENT": ("PatientID",),
    "STUDY": ("PatientID", "StudyInstanceUID"),
    "SERIES": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
_IGNORED = frozenset({0x00080052, 0x00080005})  # QueryRetrieveLevel, SpecificCharacterSet


def retrieval(identifier: Dataset, model: Model) -> Retrieval | Refusal:
    """The instance search for a C-MOVE/C-GET identifier (PS3.4 C.4.2.1.4: unique keys only;
    a list of UIDs at the level retrieved, a single value above it)."""
    try:
        return _retrieval(identifier, model)
    except _Refused as exc:
        return exc.refusal
    except Exception:  # noqa: BLE001 - a data set pydicom cannot decode is the peer's fault
        return Refusal(UNABLE_TO_PROCESS, "the identifier cannot be decoded")


class _Refused(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.refusal = Refusal(status, comment)


def _retrieval(identifier: Dataset, model: Model) -> Retrieval:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise _Refused(IDENTIFIER_DOES_NOT_MATCH, "no or an unknown QueryRetrieveLevel")
    if model == "STUDY" and level == "PATIENT":
        raise _Refused(IDENTIFIER_DOES_NOT_MATCH, "no PATIENT level in the Study Root model")
    allowed = _KEYS[level]
    values: dict[str, str] = {}
    for tag in list(identifier.keys()):
        if tag.element == 0 or int(tag) in _IGNORED:
            continue
        keyword = datadict.keyword_for_tag(tag)
        value = identifier[tag].value
        text = (
            "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value or "")
        )
        text = text.strip(" \0")
        if keyword not in allowed:
            if text:
                raise _Refused(
                    IDENTIFIER_DOES_NOT_MATCH, f"{keyword or 'a key'} is not a unique key"
                )
            continue
        if text:
            values[keyword] = text
    for position, keyword in enumerate(allowed):
        if keyword == "PatientID" and model == "STUDY":
            continue
        value = values.get(keyword, "")
        at_level = position == len(allowed) - 1
        _check_unique(keyword, value, list_allowed=at_level and keyword != "PatientID")
    return Retrieval(level, tuple(values.items()))


def _check_unique(keyword: str, value: str, *, list_allowed: bool) -> None:
    if not value:
        raise _Refused(IDENTIFIER_DOES_NOT_MATCH, f"no {keyword}")
    if keyword == "PatientID":
        if set(value) & set("*?\\"):
            raise _Refused(IDENTIFIER_DOES_NOT_MATCH, "PatientID is not a single value")
        return
    uids = value.split("\\")
    if len(uids) > 1 and not list_allowed:
        raise _Refused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword} is not a single UID")
    if not all(valid_uid(uid) for uid in uids):
        raise _Refused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword} is not a UID")


def instance_of(result: dict[str, object]) -> Instance | None:
    """A QIDO-RS instance result as an :class:`Instance` (None when a UID is missing)."""
    found = []
    for tag in RETURNED:
        element = result.get(tag)
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list) or not values or not isinstance(values[0], str):
            return None
        found.append(values[0])
    return Instance(*found)


# ------------------------------------------------------------------ transfer syntaxes


def delivery(accepted: Iterable[tuple[str, str]], sop_class: str, stored: str) -> str | None:
    """How an instance stored in ``stored`` reaches a receiver that accepted ``accepted``
    (abstract syntax, transfer syntax) pairs: '' as stored, a transfer syntax UID to ask
    the archive for (it transcodes), or None when no accepted context can carry it."""
    offered = {ts for abstract, ts in accepted if abstract == sop_class}
    if not offered:
        return None
    if stored in offered or (stored in NATIVE_LE and offered & set(NATIVE_LE)):
        return ""
    for target in TRANSCODED:
        if target in offered:
            return target
    if stored in LOSSY and JPEG_BASELINE in offered:
        return JPEG_BASELINE
    return None


def proposed(sop_classes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Presentation contexts for a C-MOVE destination: per SOP class, the native syntaxes
    in one context and each common compressed syntax in one of its own, as many as fit in
    :data:`MAX_CONTEXTS` (every class keeps its native context)."""
    classes = list(dict.fromkeys(sop_classes))[:MAX_CONTEXTS]
    contexts: list[tuple[str, list[str]]] = [(c, [EXPLICIT_LE, IMPLICIT_LE]) for c in classes]
    room = MAX_CONTEXTS - len(contexts)
    for syntax in COMPRESSED:
        for sop_class in classes:
            if room <= 0:
                return contexts
            contexts.append((sop_class, [syntax]))
            room -= 1
    return contexts


# ------------------------------------------------------------------ destinations


@dataclass(frozen=True)
class Destination:
    """A C-MOVE destination: its AE title and address."""

    title: str
    host: str
    port: int


def destination(value: str) -> Destination:
    """``AE=HOST:PORT`` as a :class:`Destination`; ValueError saying what is wrong."""
    title, equals, address = value.rpartition("=")
    host, colon, port = address.rpartition(":")
    if not equals or not colon or not host:
        raise ValueError(f"{value!r} is not AE=HOST:PORT")
    why = aetitle.problem(title)
    if why:
        raise ValueError(f"{title!r} is not an AE title: {why}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} is not a TCP port")
    return Destination(title.strip(), host.strip("[]"), int(port))


def destinations(values: Iterable[str], files: Iterable[Path] = ()) -> dict[str, Destination]:
    """The destinations of ``--destination`` values and of files holding one per line
    (blank lines and ``#`` comments ignored); a title given twice keeps its last address."""
    lines = list(values)
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()  # noqa: PLW2901 - the same line, cleaned
            if line:
                lines.append(line)
    found = [destination(line) for line in lines]
    return {d.title: d for d in found}
