"""The write side of the hierarchical index in one DynamoDB table (layout: ``dynamo_keys``).

Each change (an instance added, removed or replaced) reads what the table holds of the
study, asks :mod:`shared.index.writes` what it writes, and persists that description as
one ``TransactWriteItems``: the SOP guard and the instance item, the series, study and
patient items (counters by ``ADD``, distinct children as string sets of short UID digests,
so adding a member twice is harmless), the de-identified UIDs (``duid``) on the study,
series and instance items, the change log's entry and its shard's counter, and the
postings of the study's substring index up to DynamoDB's 100 items (the rest are written
just before). The transaction is conditioned on what was read: the guard (absent for an
add, the same content for a removal or a replacement), the study as read (its patient,
its substring index state, for a removal or a replacement its count) and, for the change
log, the shard's last id below this entry's (:meth:`DynamoInstanceIndex._log_items`). A
failed condition is read again and retried; trigram counts are updated after the commit.
Series and instance items carry their parents' attributes, so that a search at any level
reads one item per result.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.dynamo_feed import DynamoFeed
from shared.adapters.dynamo_keys import (
    CHANGE_COUNTER_SK,
    CHANGE_ID_DIGITS,
    GRAM_COUNT_SK,
    INSTANCE_PREFIX,
    LIST_PATIENTS,
    LIST_STUDIES,
    SERIES_PREFIX,
    STUDY_SK,
    change_pk,
    change_shard,
    gram_pk,
    guard_pk,
    pack_texts,
    patient_pk,
    patient_sk,
    series_sk,
    study_pk,
    uid_digest,
    unpack_texts,
)
from shared.dicom.uid_map import UidMap
from shared.dicomweb.substring import study_terms
from shared.errors import StorageUnavailable
from shared.index import writes
from shared.index.order import study_sort_key
from shared.index.records import (
    AddOutcome,
    Change,
    ChangeKind,
    ChangePage,
    Entry,
    InstanceRecord,
    Replacement,
    ReplaceOutcome,
)

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_RETRYABLE_ERRORS = {
    "TransactionInProgressException",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
}
# The record itself cannot be written (an item over 400 KB, a value DynamoDB refuses):
# retrying cannot help, so these are a refusal of the instance, not a 503.
_PERMANENT_REASONS = {"ValidationError", "ItemCollectionSizeLimitExceeded"}
_PERMANENT_ERRORS = {"ValidationException", "ItemCollectionSizeLimitExceededException"}

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit on one TransactWriteItems
COUNT_WORKERS = 8  # parallel UpdateItem calls for trigram counts


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _ss(values: Iterable[str]) -> dict[str, list[str]]:
    return {"SS": sorted(set(values))}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Update:
    """An UpdateExpression built clause by clause, with its values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._clauses: dict[str, list[str]] = {"SET": [], "ADD": [], "DELETE": [], "REMOVE": []}

    def set(self, path: str, name: str, value: dict[str, Any]) -> None:
        self._clauses["SET"].append(f"{path} = {name}")
        self.values[name] = value

    def members(self, verb: str, path: str, name: str, values: Iterable[str]) -> None:
        """ADD or DELETE set members (nothing when there are none)."""
        members = sorted(set(values))
        if members:
            self._clauses[verb].append(f"{path} {name}")
            self.values[name] = {"SS": members}

    def add(self, path: str, name: str, step: int) -> None:
        if step:
            self._clauses["ADD"].append(f"{path} {name}")
            self.values[name] = _n(step)

    def whole(
        self, path: str, name: str, values: tuple[str, ...] | None, added: Iterable[str]
    ) -> None:
        """A set replaced whole when ``values`` is given (removed when empty), else grown."""
        if values is None:
            self.members("ADD", path, name, added)
        elif values:
            self.set(path, name, _ss(values))
        else:
            self._clauses["REMOVE"].append(path)

    def expression(self) -> str:
        return " ".join(f"{verb} {', '.join(c)}" for verb, c in self._clauses.items() if c)


class _Rejected(Exception):
    """DynamoDB refused the items themselves (too large, invalid): permanent."""


def posting_items(text: writes.TextWrite) -> list[dict[str, Any]]:
    """The posting items of a study's substring index (``GRAM#<column>#<trigram>`` under its
    date key, each with the column's whole text, ``t``)."""
    return [
        {"PK": _s(gram_pk(column, gram)), "SK": _s(text.sort_key), "t": _s(value)}
        for column, gram, value in text.postings()
    ]


def _seen_of(item: dict[str, Any] | None) -> writes.StudyState:
    """A study item as :class:`writes.StudyState`."""
    if item is None:
        return writes.StudyState()
    packed = item.get("tx", {}).get("S")
    return writes.StudyState(
        exists=True,
        patient_id=item.get("patient_id", {}).get("S", ""),
        issuer=writes.issuer_of(item.get("attrs", {}).get("S", "")),
        sort_key=item.get("sdt", {}).get("S"),
        texts=unpack_texts(packed, len(writes.COLUMNS)) if packed is not None else None,
        texts_sort_key=item.get("gsdt", {}).get("S"),
        instances=int(item.get("n_instances", {}).get("N", "0")),
    )


class DynamoInstanceIndex:
    """InstanceIndex on one DynamoDB table (port :class:`shared.ports.InstanceIndex`).

    With ``uid_map`` (the deployment key), the study, series and instance items carry their
    de-identified UID (``duid``, the ``ByDeidentifiedUid`` index) for the read-deidentified
    view: the same transaction, no extra item."""

    def __init__(
        self,
        client: Any,
        table: str,
        sleep: Callable[[float], None] = time.sleep,
        uid_map: UidMap | None = None,
        clock: Callable[[], str] = _now,
    ) -> None:
        self._client = client
        self._table = table
        self._sleep = sleep
        self._uid_map = uid_map
        self._clock = clock
        self._last_id = 0  # the last change log id this writer used or saw
        self._feed = DynamoFeed(client, table)

    # ----------------------------------------------------------------- add

    def add(self, record: InstanceRecord, *, restored: bool = False) -> AddOutcome:
        """Add an instance; retry conflicts, throttling and lost replies with jittered backoff.

        A retry after a reply was lost is safe: the guard item makes a committed transaction
        fail its condition the second time, which reads back as ``ALREADY_STORED``.

        Each attempt first reads the study item (one consistent GetItem) to learn its
        patient and what its substring index holds, and conditions the transaction on
        what it read: the index is written with the study's first instance and again only
        when a value (or the study's date-time) changes.
        """
        for attempt in range(MAX_ATTEMPTS):
            seen = _seen_of(self._study_item(record.study_uid))
            plan = writes.add(record, seen, self._uid_map, "restore" if restored else "add")
            if isinstance(plan, AddOutcome):
                return plan
            try:
                failed = self._commit(plan)
            except _Rejected:
                return AddOutcome.REJECTED
            if failed is None:
                return AddOutcome.STORED
            if "guard" in failed:
                existing = self._guard(record.sop_instance_uid, "sha256", None)
                if existing is not None:  # absent: removed meanwhile, try again
                    return writes.existing(record, existing.get("sha256", {}).get("S", ""))
            elif "study" in failed:  # another patient's, or changed since it was read
                again = _seen_of(self._study_item(record.study_uid))
                if again.exists and again.patient_id != record.patient_id:
                    return AddOutcome.PATIENT_MISMATCH
            self._backoff(attempt)
        raise StorageUnavailable("the index is busy, retry later")

    # ----------------------------------------------------------------- remove

    def remove(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        until: Callable[[], bool] | None = None,
        rejected: bool = False,
    ) -> tuple[Entry, ...]:
        """Remove a study, a series or an instance: one transaction per instance, each
        with its change log entry. The study's members are read once (one Query of its
        partition) and followed from change to change; a failed condition reads them
        again. An instance gone meanwhile counts as removed. Once ``until()`` answers True
        (asked after each removal), the rest is left for the next call."""
        holding, entries = self._holding(study_uid)
        targets = [
            e
            for e in entries.values()
            if series_uid in (None, e.series_uid) and sop_instance_uid in (None, e.sop_instance_uid)
        ]
        removed: list[Entry] = []
        current: writes.Holding | None = holding
        for entry in sorted(targets, key=lambda e: e.sort_key):
            if removed and until is not None and until():
                break
            current = self._remove_one(entry, current)
            removed.append(entry)
        return tuple(removed)

    def _remove_one(self, entry: Entry, holding: writes.Holding | None) -> writes.Holding | None:
        for attempt in range(MAX_ATTEMPTS):
            if holding is None or not holding.consistent():
                holding, entries = self._holding(entry.study_uid)
                if entries.get(entry.sop_instance_uid) != entry:
                    return None  # removed or replaced meanwhile: read again for the next
            plan = writes.remove(entry, holding, self._uid_map, self._clock())
            try:
                failed = self._commit(plan)
            except _Rejected as exc:
                raise StorageUnavailable("the index refused a removal") from exc
            if failed is None:
                return holding.without(entry)
            holding = None
            self._backoff(attempt)
        raise StorageUnavailable("the index is busy, retry later")

    # ----------------------------------------------------------------- replace

    def replace(self, record: InstanceRecord, *, moves_study: bool = False) -> Replacement:
        """Replace the record of the stored instance with this SOP Instance UID: its guard
        names the study, whose members are read; the transaction is conditioned on the
        guard's content and the study's count."""
        for attempt in range(MAX_ATTEMPTS):
            guard = self._guard(record.sop_instance_uid, "study", None)
            if guard is None:
                return Replacement(ReplaceOutcome.NOT_FOUND)
            holding, entries = self._holding(guard["study"]["S"])
            entry = entries.get(record.sop_instance_uid)
            if entry is not None and holding.consistent():
                plan = writes.replace(
                    entry, record, holding, self._uid_map, self._clock(), moves_study=moves_study
                )
                if isinstance(plan, ReplaceOutcome):
                    return Replacement(plan)
                try:
                    failed = self._commit(plan)
                except _Rejected:
                    return Replacement(ReplaceOutcome.REJECTED)
                if failed is None:
                    return Replacement(ReplaceOutcome.REPLACED, entry)
            self._backoff(attempt)
        raise StorageUnavailable("the index is busy, retry later")

    # ----------------------------------------------------------------- change log

    def changes(self, after: str = "", limit: int = 100) -> ChangePage:
        """Committed changes numbered above the cursor (a feed number, '' : from the
        first), in the feed's order (:mod:`shared.adapters.dynamo_feed`): each study's
        changes in their commit order. Entries not yet numbered are numbered first, as far
        as this page needs."""
        start = _feed_number(after)
        last = self._feed.sequence(until=start + max(0, limit))
        changes = [_change_of(item, str(n), n) for n, item in self._feed.read(start, limit, last)]
        return ChangePage(tuple(changes), changes[-1].position if changes else after)

    def changes_after(self, sequence: int) -> str:
        """The cursor after the feed's entry numbered ``sequence``."""
        return str(sequence) if sequence > 0 else ""

    def latest_change(self) -> Change | None:
        """The last committed change: every entry is numbered first (within a budget)."""
        last = self._feed.sequence()
        if last == 0:
            return None
        found = self._feed.read(last - 1, 1, last)
        return _change_of(found[0][1], str(last), last) if found else None

    def sequence_changes(self, budget_s: float) -> int:
        """Number every committed change not yet in the feed, within ``budget_s``; the
        feed's last number (the FeedFunction's work)."""
        return self._feed.sequence(budget_s=budget_s)

    def _next_id(self) -> str:
        """An id for the next change log entry: time-ordered (microseconds), above every
        id this writer used or saw."""
        self._last_id = max(time.time_ns() // 1000, self._last_id + 1)
        return f"{self._last_id:0{CHANGE_ID_DIGITS}d}"

    def _log_items(self, change: Change) -> list[dict[str, Any]]:
        """The change's entry and its shard's counter update: the counter's ``last`` must
        be below the entry's id, so a shard's entries commit in id order (a reader that
        has read up to an id never misses a later commit below it)."""
        pk = change_pk(change_shard(change.study_uid))
        entry_id = self._next_id()
        item = {
            "PK": _s(pk),
            "SK": _s(entry_id),
            "kind": _s(change.kind),
            "study": _s(change.study_uid),
            "series": _s(change.series_uid),
            "sop": _s(change.sop_instance_uid),
            "key": _s(change.blob_key),
            "at": _s(change.at),
        }
        if change.previous_key:
            item["previous_key"] = _s(change.previous_key)
        return [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"PK": _s(pk), "SK": _s(CHANGE_COUNTER_SK)},
                    "UpdateExpression": "SET #l = :id",
                    "ConditionExpression": "attribute_not_exists(#l) OR #l < :id",
                    "ExpressionAttributeNames": {"#l": "last"},
                    "ExpressionAttributeValues": {":id": _s(entry_id)},
                }
            },
            {"Put": {"TableName": self._table, "Item": item}},
        ]

    def _saw_counter(self, study_uid: str) -> None:
        """Catch up with the shard's counter after its condition failed."""
        pk = change_pk(change_shard(study_uid))
        item = self._get({"PK": _s(pk), "SK": _s(CHANGE_COUNTER_SK)}, "#l", {"#l": "last"})
        if item is not None:
            self._last_id = max(self._last_id, int(item["last"]["S"]))

    # ----------------------------------------------------------------- the transaction

    def _commit(self, plan: writes.Writes) -> set[str] | None:
        """Persist a change in one transaction; None when it committed, else the parts
        whose condition failed (empty: retry as it is). Postings that do not fit are
        written first: a committed study is always indexed; postings of a study that then
        fails to commit only add candidates. Trigram counts follow the commit."""
        parts = self._items(plan)
        text = plan.study.text
        postings = posting_items(text) if text is not None else []
        room = MAX_TRANSACTION_ITEMS - len(parts)
        self._put_all(postings[room:])
        parts += [
            ("posting", {"Put": {"TableName": self._table, "Item": p}}) for p in postings[:room]
        ]
        failed = self._transact([item for _, item in parts], [role for role, _ in parts])
        if failed is None:
            if text is not None:
                self._count(text.new_grams(), 1)
            if plan.study.text_removed is not None:
                self._drop_text(plan.study.study_uid, plan.study.text_removed)
        elif "log" in failed:
            self._saw_counter(plan.change.study_uid)
        return failed

    def _transact(self, items: list[dict[str, Any]], roles: list[str]) -> set[str] | None:
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code", "")
            if error == "TransactionCanceledException":
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                failed = {
                    roles[i]
                    for i, reason in enumerate(reasons)
                    if reason == "ConditionalCheckFailed" and i < len(roles)
                }
                if failed:
                    return failed
                if set(reasons) & _PERMANENT_REASONS:
                    raise _Rejected from exc
                if set(reasons) - {"None"} <= _RETRYABLE_REASONS:
                    return set()
            elif error in _RETRYABLE_ERRORS:
                return set()
            elif error in _PERMANENT_ERRORS:
                raise _Rejected from exc
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        except BotoCoreError:
            return set()  # connection lost or timed out: the transaction may have committed
        return None

    def _items(self, plan: writes.Writes) -> list[tuple[str, dict[str, Any]]]:
        """The transaction's items, each with the part it writes: guard, instance, series,
        study first (their places are known), then patients, an instance item left, the
        change log."""
        parts = [("guard", self._guard_item(plan))]
        if plan.put is not None:
            parts.append(("instance", self._instance_put(plan)))
        elif plan.removed is not None:
            parts.append(("instance", self._instance_delete(plan.removed)))
        parts += [("series", self._series_item(s)) for s in plan.series]
        parts.append(("study", self._study_item_write(plan.study)))
        parts += [("patient", self._patient_item(p)) for p in plan.patients]
        moved = plan.removed is not None and plan.put is not None
        if moved and plan.removed is not None and plan.removed.sort_key != plan.put_sort_key:
            parts.append(("instance", self._instance_delete(plan.removed)))
        parts += [("log", item) for item in self._log_items(plan.change)]
        return parts

    def _guard_item(self, plan: writes.Writes) -> dict[str, Any]:
        removed, r = plan.removed, plan.put
        if r is None:
            assert removed is not None  # noqa: S101 - a change puts or removes an entry
            return {
                "Delete": {
                    "TableName": self._table,
                    "Key": {"PK": _s(guard_pk(removed.sop_instance_uid)), "SK": _s("SOP")},
                    "ConditionExpression": "sha256 = :sha AND #k = :key",
                    "ExpressionAttributeNames": {"#k": "key"},
                    "ExpressionAttributeValues": {
                        ":sha": _s(removed.sha256),
                        ":key": _s(removed.blob_key),
                    },
                }
            }
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                "PK": _s(guard_pk(r.sop_instance_uid)),
                "SK": _s("SOP"),
                "study": _s(r.study_uid),
                "series": _s(r.series_uid),
                "sk": _s(plan.put_sort_key),
                "sha256": _s(r.sha256),
                "key": _s(r.blob_key),
            },
            "ConditionExpression": "attribute_not_exists(PK)",
        }
        if removed is not None:  # a replacement: the entry as it was read
            put["ConditionExpression"] = "sha256 = :sha AND #k = :key"
            put["ExpressionAttributeNames"] = {"#k": "key"}
            put["ExpressionAttributeValues"] = {
                ":sha": _s(removed.sha256),
                ":key": _s(removed.blob_key),
            }
        return {"Put": put}

    def _instance_put(self, plan: writes.Writes) -> dict[str, Any]:
        r = plan.put
        assert r is not None  # noqa: S101 - called for a put
        instance: dict[str, Any] = {
            "PK": _s(study_pk(r.study_uid)),
            "SK": _s(plan.put_sort_key),
            "sop_class": _s(r.sop_class_uid),
            "ts": _s(r.transfer_syntax),
            "sha256": _s(r.sha256),
            "size": _n(r.size),
            "key": _s(r.blob_key),
            "aet": _s(r.calling_aet),
            "received": _s(r.received),
            "attrs": _s(r.instance_json),
            "series_attrs": _s(r.series_json),
            "study_attrs": _s(r.study_json),
        }
        if r.metadata:
            instance["meta"] = {"B": r.metadata}
        if plan.deidentified("INSTANCE"):
            instance["duid"] = _s(plan.deidentified("INSTANCE"))
        return {"Put": {"TableName": self._table, "Item": instance}}

    def _instance_delete(self, entry: Entry) -> dict[str, Any]:
        key = {"PK": _s(study_pk(entry.study_uid)), "SK": _s(entry.sort_key)}
        return {"Delete": {"TableName": self._table, "Key": key}}

    def _series_item(self, s: writes.SeriesWrite) -> dict[str, Any]:
        key = {"PK": _s(study_pk(s.study_uid)), "SK": _s(series_sk(s.series_uid))}
        if s.gone:
            return {"Delete": {"TableName": self._table, "Key": key}}
        values: dict[str, Any] = {}
        names: dict[str, str] = {}
        sets = []
        if s.attrs is not None:
            sets += ["attrs = :attrs", "study_attrs = :study_attrs", "sdt = :sdt", "seu = :seu"]
            values |= {
                ":attrs": _s(s.attrs),
                ":study_attrs": _s(s.study_attrs or "{}"),
                ":sdt": _s(s.sort_key or ""),
                ":seu": _s(s.series_uid),
            }
        if s.deidentified:
            sets.append("duid = :duid")
            values[":duid"] = _s(s.deidentified)
        if s.modality:
            sets.append("#mod = :mod")
            values[":mod"] = _s(s.modality)
            names["#mod"] = "mod"
        expression = f"SET {', '.join(sets)}" if sets else ""
        if s.instances:
            expression += " ADD n_instances :n"
            values[":n"] = _n(s.instances)
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": key,
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeValues": values,
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    def _study_item_write(self, s: writes.StudyWrite) -> dict[str, Any]:
        key = {"PK": _s(study_pk(s.study_uid)), "SK": _s(STUDY_SK)}
        values: dict[str, Any] = {}
        condition = _study_condition(s, values)
        if s.gone:
            return {
                "Delete": {
                    "TableName": self._table,
                    "Key": key,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                }
            }
        return {
            "Update": {
                "TableName": self._table,
                "Key": key,
                "UpdateExpression": _study_update(s, values).expression(),
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }
        }

    def _patient_item(self, p: writes.PatientWrite) -> dict[str, Any]:
        key = {"PK": _s(patient_pk(p.patient_id)), "SK": _s(patient_sk(p.issuer))}
        values: dict[str, Any] = {}
        condition = ""
        if p.expect is not None:
            condition = "n_instances = :seen_n"
            values[":seen_n"] = _n(p.expect)
        if p.gone:
            delete: dict[str, Any] = {"TableName": self._table, "Key": key}
            if condition:
                delete["ConditionExpression"] = condition
                delete["ExpressionAttributeValues"] = values
            return {"Delete": delete}
        update = _Update(values)
        if p.attrs is not None:
            update.set("attrs", ":attrs", _s(p.attrs))
            update.set("lst", ":list", _s(LIST_PATIENTS))
            update.set("lsk", ":lsk", _s(p.list_key))
            if p.name_key:
                update.set("pnk", ":pnk", _s(f"P#{p.name_key[0]}"))
                update.set("pnn", ":lsk", _s(p.list_key))
        update.add("n_instances", ":n", p.instances)
        update.members("ADD", "study_keys", ":studies", map(uid_digest, p.studies_added))
        update.members("ADD", "series_keys", ":series", map(uid_digest, p.series_added))
        update.members("DELETE", "study_keys", ":gone_studies", map(uid_digest, p.studies_removed))
        update.members("DELETE", "series_keys", ":gone_series", map(uid_digest, p.series_removed))
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": key,
            "UpdateExpression": update.expression(),
            "ExpressionAttributeValues": values,
        }
        if condition:
            request["ConditionExpression"] = condition
        return {"Update": request}

    # ----------------------------------------------------------------- reads

    def _study_item(self, study_uid: str) -> dict[str, Any] | None:
        """The study item's patient, count and substring-index state (consistent read)."""
        return self._get(
            {"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
            "#p, #t, #g, #s, #n",
            {"#p": "patient_id", "#t": "tx", "#g": "gsdt", "#s": "sdt", "#n": "n_instances"},
        )

    def _holding(self, study_uid: str) -> tuple[writes.Holding, dict[str, Entry]]:
        """What the table holds of a study (consistent reads: its item, its instance and
        series items' keys, its patient's count) and its entries by SOP Instance UID."""
        item = self._get(
            {"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
            "#p, #t, #g, #s, #n, attrs",
            {"#p": "patient_id", "#t": "tx", "#g": "gsdt", "#s": "sdt", "#n": "n_instances"},
        )
        state = _seen_of(item)
        entries: dict[str, Entry] = {}
        members: dict[str, writes.Member] = {}
        for i in self._partition(study_uid, INSTANCE_PREFIX, "SK, sop_class, sha256, #k"):
            sk = i["SK"]["S"]
            series, _, rest = sk.removeprefix(INSTANCE_PREFIX).partition("#")
            sop = rest.partition("#")[2]
            sop_class = i.get("sop_class", {}).get("S", "")
            members[sop] = writes.Member(series, sop_class)
            entries[sop] = Entry(
                study_uid,
                series,
                sop,
                sop_class,
                i.get("sha256", {}).get("S", ""),
                i.get("key", {}).get("S", ""),
                sk,
            )
        modalities = {
            i["SK"]["S"].removeprefix(SERIES_PREFIX): i.get("mod", {}).get("S", "")
            for i in self._partition(study_uid, SERIES_PREFIX, "SK, #k")
        }
        patient = 0
        if state.patient_id:
            found = self._get(
                {"PK": _s(patient_pk(state.patient_id)), "SK": _s(patient_sk(state.issuer))},
                "n_instances",
                None,
            )
            patient = int(found["n_instances"]["N"]) if found and "n_instances" in found else 0
        return writes.Holding(state, members, modalities, patient), entries

    def _partition(self, study_uid: str, prefix: str, projection: str) -> list[dict[str, Any]]:
        """Items of a study's partition whose SK starts with ``prefix`` (``#k``: ``key``
        for instances, ``mod`` for series), consistently."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {":pk": _s(study_pk(study_uid)), ":prefix": _s(prefix)},
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": {"#k": "key" if prefix == INSTANCE_PREFIX else "mod"},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            try:
                reply = self._client.query(**request)
            except (BotoCoreError, ClientError) as exc:
                raise StorageUnavailable("the index is unavailable, retry later") from exc
            items += reply.get("Items", [])
            if not reply.get("LastEvaluatedKey"):
                return items
            request["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _get(
        self, key: dict[str, Any], projection: str, names: dict[str, str] | None
    ) -> dict[str, Any] | None:
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": key,
            "ConsistentRead": True,
            "ProjectionExpression": projection,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            reply = self._client.get_item(**request)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def _guard(
        self, sop_instance_uid: str, projection: str, names: dict[str, str] | None
    ) -> dict[str, Any] | None:
        return self._get({"PK": _s(guard_pk(sop_instance_uid)), "SK": _s("SOP")}, projection, names)

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the instance's guard item names ``blob_key`` (consistent read)."""
        item = self._guard(sop_instance_uid, "#k", {"#k": "key"})
        return item is not None and item.get("key", {}).get("S") == blob_key

    # ----------------------------------------------------------------- substring index

    def index_text(self, study_uid: str) -> bool:
        """File a study stored before the substring index (no ``tx``) under the trigrams of
        the attributes its item holds; False when it is filed already or gone."""
        item = self._get(
            {"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)}, "attrs, sdt, tx", None
        )
        if item is None or "tx" in item:
            return False
        terms = study_terms(json.loads(item.get("attrs", {}).get("S") or "{}"))
        sdt = item.get("sdt", {}).get("S") or study_sort_key("", "", study_uid)
        text = writes.TextWrite(terms, sdt)
        self._put_all(posting_items(text))
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
                UpdateExpression="SET tx = :tx, gsdt = :sdt",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(tx)",
                ExpressionAttributeValues={":tx": _s(pack_texts(text.texts)), ":sdt": _s(sdt)},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # an instance stored meanwhile filed it
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        self._count(text.new_grams(), 1)
        return True

    def _drop_text(self, study_uid: str, text: writes.TextRemoval) -> None:
        """After a study's removal committed: delete its postings, lower its trigrams'
        counts, and re-file the study if it was stored again meanwhile (its postings may
        have had the same keys). Best effort: a posting left behind only adds a candidate
        whose study the search no longer finds."""
        keys = [
            {"PK": _s(gram_pk(column, gram)), "SK": _s(text.sort_key)}
            for column, gram in text.grams()
        ]
        try:
            self._batch(("DeleteRequest", "Key"), keys)
        except StorageUnavailable:
            logger.warning("postings of a removed study left", extra={"postings": len(keys)})
        self._count(text.grams(), -1)
        back = self._get({"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)}, "tx, gsdt", None)
        if back is not None and "tx" in back and "gsdt" in back:
            texts = unpack_texts(back["tx"]["S"], len(writes.COLUMNS))
            self._put_all(posting_items(writes.TextWrite(texts, back["gsdt"]["S"])))

    def _put_all(self, items: list[dict[str, Any]]) -> None:
        """Put items (idempotent) in batches of 25, retrying what DynamoDB left unprocessed."""
        self._batch(("PutRequest", "Item"), items)

    def _batch(self, request: tuple[str, str], items: list[dict[str, Any]]) -> None:
        kind, field = request
        for start in range(0, len(items), 25):
            pending = {self._table: [{kind: {field: i}} for i in items[start : start + 25]]}
            for attempt in range(MAX_ATTEMPTS):
                try:
                    reply = self._client.batch_write_item(RequestItems=pending)
                except (BotoCoreError, ClientError) as exc:
                    raise StorageUnavailable("the index is unavailable, retry later") from exc
                pending = reply.get("UnprocessedItems") or {}
                if not pending:
                    break
                self._backoff(attempt)
            else:
                raise StorageUnavailable("the index is busy, retry later")

    def _count(self, grams: list[tuple[str, str]], step: int) -> None:
        """Add ``step`` to the study count of each trigram. Best effort: the counts only
        steer the planner to the rarest trigram, and every posting is already written."""

        def add_one(key: tuple[str, str]) -> bool:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={"PK": _s(gram_pk(*key)), "SK": _s(GRAM_COUNT_SK)},
                    UpdateExpression="ADD n :step",
                    ExpressionAttributeValues={":step": _n(step)},
                )
            except (BotoCoreError, ClientError):
                return False
            return True

        if not grams:
            return
        with ThreadPoolExecutor(max_workers=min(COUNT_WORKERS, len(grams))) as pool:
            failed = sum(not ok for ok in pool.map(add_one, grams))
        if failed:
            logger.warning("trigram counts not updated", extra={"failed": failed})

    def _backoff(self, attempt: int) -> None:
        self._sleep(min(1.0, 0.02 * 2**attempt) * random.random())  # noqa: S311


def _study_condition(s: writes.StudyWrite, values: dict[str, Any]) -> str:
    """The study write's condition: the item is as the writer read it (its patient, its
    substring index state, and for a removal or a replacement its count)."""
    seen = s.seen
    if not seen.exists:
        return "attribute_not_exists(PK)"
    clauses = ["patient_id = :seen_patient"]
    values[":seen_patient"] = _s(seen.patient_id)
    if seen.texts_sort_key is None:
        clauses.append("attribute_not_exists(gsdt)")
    else:
        clauses.append("gsdt = :seen_gsdt")
        values[":seen_gsdt"] = _s(seen.texts_sort_key)
    if s.text is not None:
        if seen.texts is None:
            clauses.append("attribute_not_exists(tx)")
        else:
            clauses.append("tx = :seen_tx")
            values[":seen_tx"] = _s(pack_texts(seen.texts))
    if s.counted:
        clauses.append("n_instances = :seen_n")
        values[":seen_n"] = _n(seen.instances)
    return " AND ".join(clauses)


def _study_update(s: writes.StudyWrite, values: dict[str, Any]) -> _Update:
    """The study's update, values set when given, counters and sets added to."""
    update = _Update(values)
    if s.attrs is not None:
        update.set("attrs", ":attrs", _s(s.attrs))
        update.set("patient_id", ":patient", _s(s.patient_id))
        update.set("sdt", ":sdt", _s(s.sort_key or ""))
        update.set("lst", ":list", _s(LIST_STUDIES))
        update.set("lsk", ":sdt", _s(s.sort_key or ""))
        if s.patient_id:
            update.set("pid", ":patient", _s(s.patient_id))
    optional = (
        ("duid", ":duid", s.deidentified),
        ("acc", ":acc", s.accession),
        ("pnk", ":pnk", f"S#{s.name_key[0]}" if s.name_key else ""),
        ("pnn", ":pnn", s.name_key),
    )
    for path, name, value in optional:
        if value:
            update.set(path, name, _s(value))
    if s.text is not None:
        update.set("tx", ":tx", _s(pack_texts(s.text.texts)))
        update.set("gsdt", ":gsdt", _s(s.text.sort_key))
    update.add("n_instances", ":n", s.instances)
    update.members("ADD", "series_keys", ":series", map(uid_digest, s.series_added))
    update.members("DELETE", "series_keys", ":gone_series", map(uid_digest, s.series_removed))
    update.whole("sop_classes", ":sop_classes", s.sop_classes, s.sop_classes_added)
    update.whole("modalities", ":modalities", s.modalities, s.modalities_added)
    return update


def _feed_number(cursor: str) -> int:
    """The feed number a cursor of ``changes`` holds ('' : 0)."""
    if cursor and not cursor.isdigit():
        raise ValueError("not a change log cursor of this index")
    return int(cursor) if cursor else 0


_KINDS: dict[str, ChangeKind] = {
    "add": "add",
    "remove": "remove",
    "replace": "replace",
    "restore": "restore",
    "reject": "reject",
}


def _change_of(item: dict[str, Any], position: str, sequence: int) -> Change:
    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return Change(
        _KINDS[text("kind")],
        text("study"),
        text("series"),
        text("sop"),
        text("key"),
        text("previous_key"),
        text("at"),
        position,
        sequence,
    )
