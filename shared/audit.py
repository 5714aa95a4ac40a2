"""One audit record per API request: who touched which studies, how, with what outcome.

Modelled on the DICOM audit messages of PS3.15 Annex A.5: ``Query`` (DCM 110112) for
QIDO-RS, ``DICOM Instances Accessed`` (DCM 110103) for metadata, ``DICOM Instances
Transferred`` (DCM 110104) for stores and restores (action C) and retrievals (action R),
``DICOM Study Deleted`` (DCM 110105) for deletions (action D); outcome 0
(success), 4 (minor failure: the request was refused) or 8 (serious failure). A record
names the key (id and label), the source IP, the route, the study/series/instance UIDs the
request named or the answer held, the attribute *names* a search used (never their values),
the status and the bytes answered. It holds no patient name or ID: values are never copied
from queries or data sets, only UIDs.

Where records go is the audit sink's business (``shared.adapters.audit_log``): CloudWatch
Logs in AWS, a JSON-lines file on the embedded backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from shared.dicomweb.uids import valid_uid

QUERY = ("Query", "110112")
ACCESSED = ("DICOM Instances Accessed", "110103")
TRANSFERRED = ("DICOM Instances Transferred", "110104")
#: A DELETE of a study, a series or an instance (action D); a restore is a transfer into
#: the archive (110104, action C) on a route under ``rs/restore/``.
DELETED = ("DICOM Study Deleted", "110105")
#: At most this many UIDs of each level are kept per record (a search of 1,000 studies
#: records the first 100 and the count).
MAX_UIDS = 100
_PATH_STUDY = ("STUDY", "STUDY_UID")
_QUERY_UIDS = {
    "StudyInstanceUID": "studies",
    "0020000D": "studies",
    "studyUID": "studies",
    "SeriesInstanceUID": "series",
    "0020000E": "series",
    "seriesUID": "series",
    "SOPInstanceUID": "instances",
    "00080018": "instances",
    "objectUID": "instances",
}


@dataclass
class Touched:
    """UIDs a request named or answered with (in first-seen order, without repeats)."""

    studies: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    more: int = 0
    #: Versions the request ended or began: {"instance", "before", "after"} (sha256 ids;
    #: "" for none), the first :data:`MAX_UIDS`.
    versions: list[dict[str, str]] = field(default_factory=list)

    def version(self, sop_instance_uid: str, before: str, after: str) -> None:
        """Record that an instance's version changed (a DELETE: ``after`` empty)."""
        if valid_uid(sop_instance_uid) and len(self.versions) < MAX_UIDS:
            self.versions.append({"instance": sop_instance_uid, "before": before, "after": after})

    def add(self, level: str, values: Iterable[str]) -> None:
        """Add UIDs of a level ("studies", "series", "instances"); anything else is dropped."""
        target: list[str] = getattr(self, level)
        for value in values:
            for part in str(value).replace("\\", ",").split(","):
                uid = part.strip()
                if not valid_uid(uid) or uid in target:
                    continue
                if len(target) >= MAX_UIDS:
                    self.more += 1
                    continue
                target.append(uid)


@dataclass(frozen=True)
class AuditRecord:
    """One request, as the audit trail keeps it (JSON field names in camelCase)."""

    time: str
    requestId: str
    event: str
    eventId: str
    action: str
    outcome: int
    status: int
    keyId: str
    keyLabel: str
    sourceIp: str
    method: str
    route: str
    transaction: str
    bytes: int
    durationMs: float
    studies: list[str]
    series: list[str]
    instances: list[str]
    moreUids: int
    queryKeys: list[str]
    #: An update's versions: {"instance", "before", "after"} (version ids: sha256 of the
    #: bytes); absent from other records.
    versions: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, with a marker that finds it among other logs (what
        ``dataclasses.asdict`` gives, its lists copied, without its deep copy of each value)."""
        found: dict[str, Any] = {"audit": True}
        for name in _RECORD_FIELDS:
            value = getattr(self, name)
            if name == "versions" and not value:
                continue
            found[name] = list(value) if isinstance(value, list) else value
        return found


_RECORD_FIELDS = tuple(f.name for f in fields(AuditRecord))


def _event_of(transaction: str, method: str, route: str) -> tuple[tuple[str, str], str]:
    if transaction == "QIDO-RS" or route.endswith("/rejected"):  # the rejected: a listing
        return QUERY, "E"
    if route.endswith("$bulkUpdate"):  # asks for an update: the worker records each study
        return ACCESSED, "U"
    if method == "DELETE":
        return DELETED, "D"
    if method == "POST":
        return TRANSFERRED, "C"
    if route.endswith("/metadata") or "/uploads" in route:
        return ACCESSED, "R"
    return TRANSFERRED, "R"


def outcome_of(status: int) -> int:
    """PS3.15 EventOutcomeIndicator for an HTTP status."""
    return 0 if status < 400 else 4 if status < 500 else 8


def build(  # noqa: PLR0913 - the request, the answer and what the handler saw
    event: Mapping[str, Any],
    *,
    transaction: str,
    status: int,
    size: int,
    started: float,
    touched: Touched | None = None,
) -> AuditRecord:
    """The audit record of one API Gateway proxy request."""
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    method = str(event.get("httpMethod") or "")
    route = str(event.get("resource") or "")
    found = touched or Touched()
    parameters = event.get("pathParameters") or {}
    found.add("studies", [v for k, v in parameters.items() if k in _PATH_STUDY and v])
    found.add("series", [parameters["SERIES"]] if parameters.get("SERIES") else [])
    found.add("instances", [parameters["INSTANCE"]] if parameters.get("INSTANCE") else [])
    query = event.get("multiValueQueryStringParameters") or {}
    for name, values in query.items():
        level = _QUERY_UIDS.get(str(name))
        if level is not None:
            found.add(level, [str(v) for v in values or []])
    kind, action = _event_of(transaction, method, route)
    return AuditRecord(
        time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        requestId=str(context.get("requestId") or ""),
        event=kind[0],
        eventId=kind[1],
        action=action,
        outcome=outcome_of(status),
        status=status,
        keyId=str(authorizer.get("keyId") or ""),
        keyLabel=str(authorizer.get("keyLabel") or ""),
        sourceIp=str((context.get("identity") or {}).get("sourceIp") or ""),
        method=method,
        route=route,
        transaction=transaction,
        bytes=size,
        durationMs=round((time.perf_counter() - started) * 1000, 1),
        studies=found.studies,
        series=found.series,
        instances=found.instances,
        moreUids=found.more,
        queryKeys=sorted({_key_name(str(k)) for k in query}),
        versions=list(found.versions),
    )


#: Query parameters of QIDO-RS, WADO-RS and WADO-URI that are not attributes.
_PARAMETERS = frozenset(
    {
        "limit", "offset", "fuzzymatching", "includefield", "accept", "charset",
        "anonymize", "transfer-syntax", "window", "viewport", "quality", "annotation",
        "requestType", "contentType", "studyUID", "seriesUID", "objectUID", "rows",
        "columns", "region", "windowCenter", "windowWidth", "frameNumber", "imageQuality",
        "transferSyntax", "prefix", "after",
    }
)  # fmt: skip


def _key_name(name: str) -> str:
    """A query parameter's name as recorded: known parameters, attribute keywords and tags
    (dotted paths of them too) are kept; any other name (it could be a value sent as a
    name) is recorded as ``<other>``."""
    if name in _PARAMETERS:
        return name
    parts = name.split(".")
    if parts and all(_is_attribute(part) for part in parts):
        return name
    return "<other>"


def _is_attribute(part: str) -> bool:
    if len(part) == 8 and all(c in "0123456789abcdefABCDEF" for c in part):
        return True
    from pydicom.datadict import tag_for_keyword  # noqa: PLC0415 - loaded by every caller

    return part.isidentifier() and tag_for_keyword(part) is not None


def update_record(  # noqa: PLR0913 - one study's update and who asked for it
    *,
    operation_id: str,
    key_id: str,
    key_label: str,
    source_ip: str,
    study_uid: str,
    versions: list[tuple[str, str, str]],
    keywords: tuple[str, ...],
    failed: bool,
    started: float,
) -> AuditRecord:
    """The audit record of one study's metadata update (DICOM Instances Accessed, action U):
    who asked (the operation's key), the study, each instance's version before and after
    (sha256 ids), and the *names* of the attributes changed (never their values)."""
    found = Touched()
    found.add("studies", [study_uid])
    found.add("instances", [sop for sop, _, _ in versions])
    return AuditRecord(
        time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        requestId=operation_id,
        event=ACCESSED[0],
        eventId=ACCESSED[1],
        action="U",
        outcome=4 if failed else 0,
        status=409 if failed else 200,
        keyId=key_id,
        keyLabel=key_label,
        sourceIp=source_ip,
        method="POST",
        route="/o3-dpacs-wado/rs/studies/$bulkUpdate",
        transaction="UPDATE",
        bytes=0,
        durationMs=round((time.perf_counter() - started) * 1000, 1),
        studies=found.studies,
        series=found.series,
        instances=found.instances,
        moreUids=found.more,
        queryKeys=sorted(keywords),
        versions=[
            {"instance": sop, "before": before, "after": after}
            for sop, before, after in versions[:MAX_UIDS]
        ],
    )
