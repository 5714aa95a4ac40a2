"""C-FIND identifiers (PS3.4 C.4.1, C.6) translated into QIDO-RS searches on the archive, and
QIDO-RS results back into C-FIND responses. Pure: no network, no pynetdicom.

The archive's QIDO-RS implements the matching of PS3.4 C.2.2.2 (universal, single value,
wildcard, range, UID list, empty value, RequestAttributesSequence items), so a key's value
travels as it is. What a QIDO search cannot answer is refused before anything is asked:

* ``0xA900`` (identifier does not match SOP class): no or an unknown Query/Retrieve Level,
  the PATIENT level in the Study Root model, a matching key of a level below the query
  level, a relational query (a unique key of a level above that is not a single value, or
  a list of UIDs), a value list outside UIDs and ModalitiesInStudy;
* ``0xC000`` (unable to process): a matching key the archive cannot match on (not one of
  its QIDO keys, a private attribute, a sequence other than RequestAttributesSequence's
  two items), a value QIDO refuses (a malformed date, an invalid UID...), StudyDate and
  StudyTime ranges together without combined date-time matching, an identifier that
  cannot be decoded.

Every refusal carries an Error Comment naming the attribute, never its value.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydicom import Dataset, datadict
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.dicom.levels import (
    COMPUTED_KEYWORDS,
    INSTANCE_KEYWORDS,
    PATIENT_KEYWORDS,
    REQUEST_ATTRIBUTE_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    Level,
)
from shared.dicomweb import query as qido
from shared.errors import BadRequest

Model = Literal["PATIENT", "STUDY"]
QRLevel = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]

IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
ERROR_COMMENT_MAX = 64  # LO

LEVELS: tuple[QRLevel, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
QIDO_LEVEL: dict[QRLevel, Level] = {
    "PATIENT": "PATIENT",
    "STUDY": "STUDY",
    "SERIES": "SERIES",
    "IMAGE": "INSTANCE",
}
RESOURCE: dict[QRLevel, str] = {
    "PATIENT": "patients",
    "STUDY": "studies",
    "SERIES": "series",
    "IMAGE": "instances",
}
UNIQUE_KEY: dict[QRLevel, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_QUERY_RETRIEVE_LEVEL = 0x00080052
_SPECIFIC_CHARACTER_SET = 0x00080005
_RETRIEVE_AE_TITLE = 0x00080054
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
_LIST_KEYWORDS = frozenset({"ModalitiesInStudy"})
_UTF8 = "ISO_IR 192"


def _level_of_keywords() -> dict[str, QRLevel]:
    """Each keyword the archive keeps, at the C-FIND level it belongs to (PS3.4 C.6.1.1)."""
    found: dict[str, QRLevel] = {}
    for keyword in INSTANCE_KEYWORDS + COMPUTED_KEYWORDS["INSTANCE"]:
        found[keyword] = "IMAGE"
    for keyword in SERIES_KEYWORDS + COMPUTED_KEYWORDS["SERIES"]:
        found[keyword] = "SERIES"
    for keyword in STUDY_KEYWORDS + COMPUTED_KEYWORDS["STUDY"]:
        found[keyword] = "STUDY"
    for keyword in PATIENT_KEYWORDS + COMPUTED_KEYWORDS["PATIENT"]:
        found[keyword] = "PATIENT"
    found.pop("RetrieveURL", None)
    return found


LEVEL_OF = _level_of_keywords()


@dataclass(frozen=True)
class Refusal:
    """A C-FIND that is answered with one failure status."""

    status: int
    comment: str

    def dataset(self) -> Dataset:
        """The status as pynetdicom takes it: Status plus an Error Comment."""
        ds = Dataset()
        ds.Status = self.status
        ds.ErrorComment = self.comment[:ERROR_COMMENT_MAX]
        return ds


class Refused(Exception):
    """Raised inside the translation; becomes a :class:`Refusal`."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.refusal = Refusal(status, comment)


@dataclass(frozen=True)
class Search:
    """A QIDO-RS search that answers a C-FIND."""

    level: QRLevel
    resource: str  # "studies", "series", ...
    params: tuple[tuple[str, str], ...]  # matching keys and includefield, in order
    returned: tuple[int, ...]  # tags of the response identifier, in the request's order
    charset: tuple[str, ...] = ()  # the request's Specific Character Set values
    keys: tuple[str, ...] = field(default=())  # matching key names, for the audit trail

    def query_string(self, offset: int = 0, limit: int | None = None) -> str:
        """The search's query string, spaces as ``%20`` (the archive takes ``+`` literally)."""
        pairs = list(self.params)
        if limit is not None:
            pairs += [("limit", str(limit)), ("offset", str(offset))]
        return "&".join(f"{quote(k, safe='.')}={quote(v, safe='')}" for k, v in pairs)


# ------------------------------------------------------------------ request -> search


def translate(
    identifier: Dataset,
    model: Model,
    *,
    combined_datetime: bool = False,
) -> Search | Refusal:
    """The QIDO-RS search answering ``identifier`` in the information ``model``, or why none
    can (see the module docstring)."""
    try:
        return _translate(identifier, model, combined_datetime)
    except Refused as exc:
        return exc.refusal
    except Exception:  # noqa: BLE001 - a data set pydicom cannot decode is the peer's fault
        return Refusal(UNABLE_TO_PROCESS, "the identifier cannot be decoded")


def _translate(identifier: Dataset, model: Model, combined_datetime: bool) -> Search:
    charset = _charset(identifier)
    level = _level(identifier, model)
    encodings = convert_encodings(list(charset) or ["ISO_IR 6"])
    values: dict[str, str] = {}
    returned: list[int] = []
    params: list[tuple[str, str]] = []
    for tag in list(identifier.keys()):
        if tag.element == 0 or tag in (_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET):
            continue
        element = identifier.get_item(tag)
        keyword = datadict.keyword_for_tag(tag)
        vr = _vr(element, tag)
        if vr == "SQ":
            params += _sequence(identifier, tag, keyword, level)
            returned.append(int(tag))
            continue
        value = _text(element, vr, encodings)
        if not value:
            if tag.is_private or not keyword:
                continue  # a return key nobody can name: not returned
            if LEVEL_OF.get(keyword) and _below(LEVEL_OF[keyword], level):
                continue  # a return key of a lower level: not returned
            returned.append(int(tag))
            continue
        if tag.is_private or not keyword:
            raise Refused(UNABLE_TO_PROCESS, f"cannot match on attribute {_tag(tag)}")
        values[keyword] = value
        returned.append(int(tag))
    _check_levels(values, level, model)
    _check_lists(values)
    _check_date_time(values, combined_datetime)
    unique = Tag(datadict.tag_for_keyword(UNIQUE_KEY[level]) or 0)
    if int(unique) not in returned:
        returned.append(int(unique))  # PS3.4 C.4.1.1.3.2: the level's unique key is returned
    params += list(values.items())
    _validate(params, level)
    includes = [_tag(Tag(t)) for t in returned if Tag(t).is_private is False]
    params += [("includefield", ",".join(includes))] if includes else []
    return Search(
        level=level,
        resource=RESOURCE[level],
        params=tuple(params),
        returned=tuple(returned),
        charset=charset,
        keys=tuple(k for k, _ in params if k != "includefield"),
    )


def _charset(identifier: Dataset) -> tuple[str, ...]:
    if _SPECIFIC_CHARACTER_SET not in identifier:
        return ()
    value = identifier[_SPECIFIC_CHARACTER_SET].value
    if not value:
        return ()
    names = [value.strip()] if isinstance(value, str) else [str(v).strip() for v in value]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            convert_encodings(names)
        except (LookupError, UserWarning) as exc:
            raise Refused(UNABLE_TO_PROCESS, "unknown Specific Character Set") from exc
    return tuple(names)


def _level(identifier: Dataset, model: Model) -> QRLevel:
    if _QUERY_RETRIEVE_LEVEL not in identifier:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, "no QueryRetrieveLevel")
    raw = identifier.get_item(_QUERY_RETRIEVE_LEVEL)
    value = _text(raw, "CS", ["iso8859"]).strip().upper()
    if value not in LEVELS:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, "QueryRetrieveLevel is not a Q/R level")
    if model == "STUDY" and value == "PATIENT":
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, "no PATIENT level in the Study Root model")
    return value


def _vr(element: DataElement | RawDataElement, tag: BaseTag) -> str:
    vr = element.VR
    if vr is None or vr in ("UN", "OB or OW", "US or SS", "US or SS or OW"):
        try:
            vr = datadict.dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr)


def _text(element: DataElement | RawDataElement, vr: str, encodings: list[str]) -> str:
    """An element's value as the text C-FIND matching reads, backslashes between values."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        if vr in _TEXT_VRS:
            delimiters = {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C}
            return decode_bytes(value, encodings, delimiters).strip(" \0")
        return value.decode("ascii", errors="strict").strip(" \0")
    if isinstance(value, str | PersonName):
        return str(value).strip(" \0")
    if isinstance(value, Sequence):
        return "\\".join(str(v) for v in value)
    return str(value)


def _sequence(
    identifier: Dataset, tag: BaseTag, keyword: str, level: QRLevel
) -> list[tuple[str, str]]:
    """A sequence key: universal (no item, or items of empty attributes) is a return key;
    RequestAttributesSequence's two items can be matched; nothing else can."""
    items = identifier[tag].value or []
    params: list[tuple[str, str]] = []
    for item in items:
        for inner in item:
            if inner.tag.element == 0:
                continue
            inner_vr = _vr(inner, inner.tag)
            if inner_vr == "SQ":
                if any(len(sub) for sub in inner.value or []):
                    raise Refused(UNABLE_TO_PROCESS, f"cannot match inside {keyword}")
                continue
            text = _text(inner, inner_vr, ["iso8859"])
            if not text:
                continue
            inner_keyword = datadict.keyword_for_tag(inner.tag)
            if keyword != "RequestAttributesSequence" or inner_keyword not in (
                REQUEST_ATTRIBUTE_KEYWORDS
            ):
                raise Refused(UNABLE_TO_PROCESS, f"cannot match inside {keyword or _tag(tag)}")
            if level in ("PATIENT", "STUDY"):
                raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword} is a SERIES key")
            params.append((f"{keyword}.{inner_keyword}", text))
    if len(params) > len({k for k, _ in params}):
        raise Refused(UNABLE_TO_PROCESS, f"{keyword} matches one item at most")
    return params


def _below(key_level: QRLevel, level: QRLevel) -> bool:
    return LEVELS.index(key_level) > LEVELS.index(level)


def _check_levels(values: Mapping[str, str], level: QRLevel, model: Model) -> None:
    """Matching keys of a lower level are refused; each unique key of a level above (from
    the model's top) must be a single value, or a list of UIDs (PS3.4 C.4.1.2.1)."""
    for keyword in values:
        key_level = LEVEL_OF.get(keyword)
        if key_level is not None and _below(key_level, level):
            raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword} is a {key_level} key")
    top = 0 if model == "PATIENT" else 1
    for above in LEVELS[top : LEVELS.index(level)]:
        keyword = UNIQUE_KEY[above]
        value = values.get(keyword, "")
        if not value or value == '""':
            raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"relational query: no {keyword}")
        if keyword == "PatientID" and (set(value) & set("*?\\") or value == "-"):
            raise Refused(IDENTIFIER_DOES_NOT_MATCH, "relational query: PatientID not single")
        if keyword != "PatientID" and set(value) & set("*?"):
            raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"relational query: {keyword} not a UID")


def _check_lists(values: Mapping[str, str]) -> None:
    for keyword, value in values.items():
        if "\\" not in value:
            continue
        vr = datadict.dictionary_VR(keyword)
        if vr != "UI" and keyword not in _LIST_KEYWORDS:
            raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword}: value lists are for UIDs")


#: Date and time attributes that combined date-time matching joins (PS3.4 C.2.2.2.5.1);
#: the archive's QIDO-RS joins the first pair only.
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("ContentDate", "ContentTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)


def _check_date_time(values: Mapping[str, str], combined: bool) -> None:
    """Ranges on both a date and its time are matched as the archive does only for
    StudyDate/StudyTime with combined matching negotiated, and for the other pairs without
    it; anything else would be answered wrongly, so it is refused."""
    for date, time in DATE_TIME_PAIRS:
        if not (_is_range(values.get(date)) and _is_range(values.get(time))):
            continue
        joined_by_archive = date == "StudyDate"
        if joined_by_archive and not combined:
            raise Refused(UNABLE_TO_PROCESS, f"{date} and {time} ranges need date-time matching")
        if combined and not joined_by_archive:
            raise Refused(UNABLE_TO_PROCESS, f"{date} and {time} ranges cannot be combined")


def _is_range(value: str | None) -> bool:
    return bool(value) and "-" in (value or "") and value != "-"


def _validate(params: Iterable[tuple[str, str]], level: QRLevel) -> None:
    """The archive's own QIDO parser, so that what it would refuse is refused here."""
    as_lists: dict[str, list[str]] = {}
    for name, value in params:
        as_lists.setdefault(name, []).append(value)
    try:
        qido.parse(as_lists, QIDO_LEVEL[level])
    except BadRequest as exc:
        raise Refused(UNABLE_TO_PROCESS, _safe(str(exc))) from exc


def _safe(message: str) -> str:
    """The archive's reason without any value it quotes (dates, names)."""
    if " value " in message:
        return message.split(" value ", 1)[0] + ": a value the archive cannot match"
    return message


def _tag(tag: BaseTag) -> str:
    return f"{tag.group:04X}{tag.element:04X}"


# ------------------------------------------------------------------ result -> response


def answer(result: Mapping[str, Any], search: Search, retrieve_ae: str) -> Dataset:
    """The C-FIND pending response for one QIDO-RS result: every attribute the request
    named (with the archive's value, or empty), the Query/Retrieve Level, the Retrieve AE
    Title and the Specific Character Set of the values (the request's when it can encode
    them, else ``ISO_IR 192``)."""
    found = Dataset.from_json(dict(result))
    ds = Dataset()
    ds.QueryRetrieveLevel = search.level
    for tag in search.returned:
        if tag in found:
            ds[tag] = found[tag]
        else:
            vr = datadict.dictionary_VR(tag) if datadict.dictionary_has_tag(tag) else "UN"
            ds.add_new(tag, vr, [] if vr == "SQ" else None)
    if _RETRIEVE_AE_TITLE not in ds:
        ds.RetrieveAETitle = retrieve_ae
    charset = response_charset(ds, search.charset)
    if charset:
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    return ds


def response_charset(ds: Dataset, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The Specific Character Set for ``ds``: none when all its text is ASCII, the request's
    when that encodes every value, else UTF-8 (``ISO_IR 192``)."""
    texts = list(_texts(ds))
    if all(t.isascii() for t in texts):
        return requested
    if requested:
        encodings = convert_encodings(list(requested))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                for text in texts:
                    encode_string(text, encodings)
        except (UnicodeError, UserWarning, LookupError, ValueError):
            return (_UTF8,)
        return requested
    return (_UTF8,)


def _texts(ds: Dataset) -> Iterable[str]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _texts(item)
        elif element.VR in _TEXT_VRS and element.value is not None:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(v) for v in values)
