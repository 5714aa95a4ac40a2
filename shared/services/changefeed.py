"""The change feed (Azure DICOM service's v1 shape): the index's change log, read.

``GET /changefeed?offset=&limit=&includeMetadata=`` answers the entries numbered above
``offset`` (``Sequence``), in commit order; ``GET /changefeed/latest`` the last one. The
entries come from ``InstanceIndex.changes`` (written with each change, in its
transaction); their ``State`` and ``Metadata`` from the catalog as it is now. A
``read-deidentified`` key sees de-identified UIDs and never Metadata (403 when asked).
See docs/decisions/0008-change-feed.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.dicom import metadata as instance_metadata
from shared.errors import BadRequest, Forbidden, NotFound
from shared.ports import Catalog, Change, InstanceIndex, InstanceRow

DEFAULT_LIMIT, MAX_LIMIT = 10, 100
ACTIONS = {
    "add": "create",
    "replace": "update",
    "remove": "delete",
    "restore": "restore",
    "reject": "reject",
}
CURRENT, REPLACED, DELETED = "current", "replaced", "deleted"

#: A stored UID to the UID the key sees (the identity for ``read`` keys).
UidView = Callable[[str], str]


@dataclass(frozen=True)
class FeedRequest:
    """A feed read: entries numbered above ``offset``, at most ``limit``; Metadata as
    asked (None: not said, which is yes for ``read`` keys and no for the de-identified
    view)."""

    offset: int = 0
    limit: int = DEFAULT_LIMIT
    include_metadata: bool | None = None
    #: Azure v2's time window: entries with ``start <= Timestamp < end``; ``offset`` then
    #: counts entries of the window to skip.
    start: datetime | None = None
    end: datetime | None = None

    @property
    def windowed(self) -> bool:
        return self.start is not None or self.end is not None


def parse(params: Mapping[str, str | None] | None) -> FeedRequest:
    """The request's query parameters, their names in any case (Azure's documentation
    writes ``includemetadata``, its clients ``includeMetadata``); 400 for a value out of
    Azure's bounds."""
    params = {name.lower(): value for name, value in (params or {}).items()}
    offset = _integer(params.get("offset"), "offset", 0)
    limit = _integer(params.get("limit"), "limit", DEFAULT_LIMIT)
    if offset < 0:
        raise BadRequest("offset must be 0 or more")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    start = _time(params.get("starttime"), "startTime")
    end = _time(params.get("endtime"), "endTime")
    if start is not None and end is not None and end <= start:
        raise BadRequest("endTime must be after startTime")
    return FeedRequest(offset, limit, _boolean(params.get("includemetadata")), start, end)


@dataclass(frozen=True)
class Feed:
    """Entries as answered, and the stored UIDs they name (for the audit record)."""

    entries: list[dict[str, Any]]
    stored_uids: dict[str, list[str]]


def read(
    index: InstanceIndex, catalog: Catalog, request: FeedRequest, view: UidView | None = None
) -> Feed:
    """The entries of one page, in commit order; ``view`` None: the stored UIDs."""
    metadata = _wants_metadata(request.include_metadata, view)
    if request.windowed:
        changes = _window(index, request)
    else:
        changes = index.changes(index.changes_after(request.offset), request.limit).changes
    return Feed(_entries(changes, catalog, metadata, view), _uids(changes))


def _window(index: InstanceIndex, request: FeedRequest) -> tuple[Change, ...]:
    """Entries of the time window, ``offset`` of them skipped. Timestamps follow Sequences
    (each is its commit's time), so the window is the Sequences from the first at or after
    ``start`` to the last before ``end``, each bound found by bisection: a few single-entry
    reads, however large the archive or the offset."""
    last = index.latest_change()
    if last is None:
        return ()
    low = _first_at_or_after(index, request.start, last.sequence) if request.start else 1
    high = _first_at_or_after(index, request.end, last.sequence) if request.end else 0
    high = high or last.sequence + 1  # past the window
    first = low + request.offset
    if first >= high:
        return ()
    page = index.changes(index.changes_after(first - 1), min(request.limit, high - first))
    return page.changes


def _first_at_or_after(index: InstanceIndex, when: datetime, last: int) -> int:
    """The first Sequence whose Timestamp is at or after ``when`` (``last + 1`` when none
    is)."""
    low, high = 1, last + 1
    while low < high:
        middle = (low + high) // 2
        found = index.changes(index.changes_after(middle - 1), 1).changes
        if found and _at(found[0]) < when:
            low = middle + 1
        else:
            high = middle
    return low


def _at(change: Change) -> datetime:
    """A change's Timestamp (one that cannot be read sorts first)."""
    try:
        when = datetime.fromisoformat(change.at.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def latest(
    index: InstanceIndex,
    catalog: Catalog,
    include_metadata: bool | None = None,
    view: UidView | None = None,
) -> Feed:
    """The last entry (one in ``entries``); 404 when nothing was ever stored."""
    metadata = _wants_metadata(include_metadata, view)
    change = index.latest_change()
    if change is None:
        raise NotFound("the change feed is empty")
    return Feed(_entries((change,), catalog, metadata, view), _uids((change,)))


def _uids(changes: Iterable[Change]) -> dict[str, list[str]]:
    """The stored UIDs the changes name, by audit level."""
    changes = list(changes)
    return {
        "studies": [c.study_uid for c in changes],
        "series": [c.series_uid for c in changes],
        "instances": [c.sop_instance_uid for c in changes],
    }


def _entries(
    changes: tuple[Change, ...], catalog: Catalog, metadata: bool, view: UidView | None
) -> list[dict[str, Any]]:
    rows = {
        r.sop_instance_uid: r
        for r in catalog.instances_by_uid({c.sop_instance_uid for c in changes})
    }
    last = {c.sop_instance_uid: c.sequence for c in changes}  # a later one in the page
    see = view or (lambda uid: uid)
    entries = []
    for change in changes:
        row = rows.get(change.sop_instance_uid)
        state = _state(change, row, last[change.sop_instance_uid])
        entry: dict[str, Any] = {
            "Sequence": change.sequence,
            "StudyInstanceUID": see(change.study_uid),
            "SeriesInstanceUID": see(change.series_uid),
            "SOPInstanceUID": see(change.sop_instance_uid),
            # Azure's own spelling, for its clients (docs/decisions/0008-change-feed.md)
            "StudyInstanceUid": see(change.study_uid),
            "SeriesInstanceUid": see(change.series_uid),
            "SopInstanceUid": see(change.sop_instance_uid),
            "Action": ACTIONS[change.kind],
            "Timestamp": change.at,
            "State": state,
        }
        if metadata and state == CURRENT and row is not None:
            entry["Metadata"] = _metadata(row)
        entries.append(entry)
    return entries


def _state(change: Change, row: InstanceRow | None, last_in_page: int) -> str:
    """``deleted`` when the index lists the instance no more; ``current`` when this is its
    latest change (none later in the page, and the entry names this change's object);
    ``replaced`` otherwise."""
    if row is None:
        return DELETED
    if change.kind in ("remove", "reject") or change.sequence != last_in_page:
        return REPLACED
    return CURRENT if row.blob_key == change.blob_key else REPLACED


def _metadata(row: InstanceRow) -> dict[str, Any]:
    """The instance's DICOM JSON as kept in the index, else the attributes it indexes."""
    if row.metadata:
        document: dict[str, Any] = json.loads(instance_metadata.unpack(row.metadata))
        return document
    return {**row.study_attrs, **row.series_attrs, **row.attrs}


def _wants_metadata(asked: bool | None, view: UidView | None) -> bool:
    if view is None:
        return asked is not False
    if asked:
        raise Forbidden("a read-deidentified key reads the change feed without Metadata")
    return False


def _integer(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def _time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date-time (UTC when it names no offset), as Azure v2 takes it."""
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date-time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _boolean(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest("includeMetadata must be true or false")
