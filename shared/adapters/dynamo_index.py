"""Writes to the hierarchical index in one DynamoDB table (layout: ``dynamo_keys``).

A new instance is one ``TransactWriteItems``: the guard put (condition: absent), the
instance put, and ``ADD`` updates of the series, study and patient items; with a study's
first instance (or one that changes its indexed text), the postings of the substring index
(issue 13: one item per trigram of the study's text, up to DynamoDB's 100 items, the rest
written just before). Counts of distinct children are kept as string sets of short UID
digests (``ADD`` of a set member is idempotent), so the transaction never needs to know
whether a series or study is new.
Series and instance items carry their parents' attributes, so that a search at any level
reads one item per result.
"""

from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.dynamo_keys import (
    GRAM_COUNT_SK,
    LIST_PATIENTS,
    LIST_STUDIES,
    STUDY_SK,
    gram_pk,
    guard_pk,
    instance_sk,
    pack_texts,
    patient_pk,
    patient_sk,
    series_sk,
    study_pk,
    study_sort_key,
    uid_digest,
    unpack_texts,
)
from shared.dicom.normalize import person_name_key
from shared.dicom.uid_map import UidMap
from shared.dicomweb.substring import TEXT_KEYS, merge_terms, ngrams, study_terms
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, InstanceRecord

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
_GUARD, _STUDY = 0, 3
_UNKNOWN = object()  # a cancellation reason this adapter does not know


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit on one TransactWriteItems
COUNT_WORKERS = 8  # parallel UpdateItem calls for trigram counts


@dataclass(frozen=True)
class _Seen:
    """What a writer read of a study item before its transaction."""

    exists: bool
    patient_id: str = ""
    texts: str | None = None  # ``tx``: the indexed texts, packed (None: never indexed)
    gsdt: str | None = None  # the date-time key its postings are filed under


@dataclass(frozen=True)
class _TextIndex:
    """What an instance writes to the substring index of its study."""

    packed: str | None = None  # the study's new ``tx`` (None: unchanged)
    postings: list[dict[str, Any]] = field(default_factory=list)
    new_grams: list[tuple[str, str]] = field(default_factory=list)  # (column, trigram)


def _text_index(seen: _Seen, terms: tuple[str, ...], sdt: str) -> _TextIndex:
    """The postings to (re)write: every trigram of each column whose text the instance
    extends (with the merged text, which each posting carries), or of every column when
    the study's date-time moved (postings are keyed by it); none when nothing changed."""
    columns = tuple(TEXT_KEYS.values())
    stored = unpack_texts(seen.texts, len(columns))
    merged = tuple(merge_terms(old, new) for old, new in zip(stored, terms, strict=True))
    moved = seen.gsdt != sdt
    changed = [i for i in range(len(columns)) if moved or merged[i] != stored[i]]
    if not changed and seen.texts is not None:
        return _TextIndex()
    postings, new_grams = [], []
    for i in changed:
        grams = ngrams(merged[i])
        postings += [
            {"PK": _s(gram_pk(columns[i], g)), "SK": _s(sdt), "t": _s(merged[i])}
            for g in sorted(grams)
        ]
        new_grams += [(columns[i], g) for g in sorted(grams - ngrams(stored[i]))]
    return _TextIndex(pack_texts(merged), postings, new_grams)


def _study_condition(seen: _Seen, text: _TextIndex, values: dict[str, Any]) -> str:
    """The study update's condition: the item is as the writer read it (its patient, and
    the substring index state the writer's postings were chosen from)."""
    if not seen.exists:
        return "attribute_not_exists(PK)"
    clauses = ["patient_id = :patient"]
    if seen.gsdt is None:
        clauses.append("attribute_not_exists(gsdt)")
    else:
        clauses.append("gsdt = :seen_gsdt")
        values[":seen_gsdt"] = _s(seen.gsdt)
    if text.packed is not None:
        if seen.texts is None:
            clauses.append("attribute_not_exists(tx)")
        else:
            clauses.append("tx = :seen_tx")
            values[":seen_tx"] = _s(seen.texts)
    return " AND ".join(clauses)


class DynamoInstanceIndex:
    """InstanceIndex on one DynamoDB table.

    With ``uid_map`` (the deployment key), the study, series and instance items carry their
    de-identified UID (``duid``, the ``ByDeidentifiedUid`` index) for the read-deidentified
    view: the same transaction, no extra item."""

    def __init__(
        self, client: Any, table: str, sleep: Any = time.sleep, uid_map: UidMap | None = None
    ) -> None:
        self._client = client
        self._table = table
        self._sleep = sleep
        self._uid_map = uid_map

    def add(self, record: InstanceRecord) -> AddOutcome:
        """Add an instance; retry conflicts, throttling and lost replies with jittered backoff.

        A retry after a reply was lost is safe: the guard item makes a committed transaction
        fail its condition the second time, which reads back as ``ALREADY_STORED``.

        Each attempt first reads the study item (one consistent GetItem) to learn what the
        substring index holds for it, and conditions the transaction on what it read: the
        index is written with the study's first instance and again only when a value (or
        the study's date-time) changes.
        """
        terms = study_terms(json.loads(record.study_json))
        sdt = study_sort_key(record.study_date, record.study_time, record.study_uid)
        for attempt in range(MAX_ATTEMPTS):
            seen = self._seen(record.study_uid)
            text = _text_index(seen, terms, sdt)
            items = self._transaction(record, seen, text)
            room = MAX_TRANSACTION_ITEMS - len(items)
            # Postings that do not fit are written first: a committed study is always
            # indexed; postings of a study that then fails to commit only add candidates.
            self._put_all(text.postings[room:])
            items += [{"Put": {"TableName": self._table, "Item": p}} for p in text.postings[:room]]
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                outcome = self._on_error(exc, record)
                if outcome is not None:
                    return outcome
            except BotoCoreError:
                pass  # connection lost or timed out: the transaction may have committed
            else:
                self._count(text.new_grams)
                return AddOutcome.STORED
            self._sleep(min(1.0, 0.02 * 2**attempt) * random.random())  # noqa: S311
        raise StorageUnavailable("the index is busy, retry later")

    def index_text(self, study_uid: str) -> bool:
        """File a study stored before the substring index (no ``tx``) under the trigrams of
        the attributes its item holds; False when it is filed already or gone."""
        try:
            item = self._client.get_item(
                TableName=self._table,
                Key={"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
                ConsistentRead=True,
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        if item is None or "tx" in item:
            return False
        terms = study_terms(json.loads(item.get("attrs", {}).get("S") or "{}"))
        sdt = item.get("sdt", {}).get("S") or study_sort_key("", "", study_uid)
        text = _text_index(_Seen(exists=True), terms, sdt)
        self._put_all(text.postings)
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
                UpdateExpression="SET tx = :tx, gsdt = :sdt",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(tx)",
                ExpressionAttributeValues={":tx": _s(text.packed or ""), ":sdt": _s(sdt)},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # an instance stored meanwhile filed it
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        self._count(text.new_grams)
        return True

    def _seen(self, study_uid: str) -> _Seen:
        """The study item's patient and substring-index state (consistent read)."""
        request = {
            "TableName": self._table,
            "Key": {"PK": _s(study_pk(study_uid)), "SK": _s(STUDY_SK)},
            "ConsistentRead": True,
            "ProjectionExpression": "#p, #t, #g",
            "ExpressionAttributeNames": {"#p": "patient_id", "#t": "tx", "#g": "gsdt"},
        }
        try:
            item = self._client.get_item(**request).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        if item is None:
            return _Seen(exists=False)
        return _Seen(
            exists=True,
            patient_id=item.get("patient_id", {}).get("S", ""),
            texts=item.get("tx", {}).get("S"),
            gsdt=item.get("gsdt", {}).get("S"),
        )

    def _put_all(self, items: list[dict[str, Any]]) -> None:
        """Put items (idempotent) in batches of 25, retrying what DynamoDB left unprocessed."""
        for start in range(0, len(items), 25):
            pending = {
                self._table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
            }
            for attempt in range(MAX_ATTEMPTS):
                try:
                    reply = self._client.batch_write_item(RequestItems=pending)
                except (BotoCoreError, ClientError) as exc:
                    raise StorageUnavailable("the index is unavailable, retry later") from exc
                pending = reply.get("UnprocessedItems") or {}
                if not pending:
                    break
                self._sleep(min(1.0, 0.02 * 2**attempt) * random.random())  # noqa: S311
            else:
                raise StorageUnavailable("the index is busy, retry later")

    def _count(self, grams: list[tuple[str, str]]) -> None:
        """Add the study to the count of each trigram new to it. Best effort: the counts
        only steer the planner to the rarest trigram, and every posting is already written."""

        def add_one(key: tuple[str, str]) -> bool:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={"PK": _s(gram_pk(*key)), "SK": _s(GRAM_COUNT_SK)},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": _n(1)},
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

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the instance's guard item names ``blob_key`` (consistent read)."""
        item = self._guard(sop_instance_uid, "#k", {"#k": "key"})
        return item is not None and item.get("key", {}).get("S") == blob_key

    def _on_error(self, exc: ClientError, record: InstanceRecord) -> AddOutcome | None:
        """Map a failed transaction to an outcome, or None to retry."""
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "TransactionCanceledException":
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            outcome = self._on_cancelled(reasons, record)
            if outcome is not _UNKNOWN:
                return outcome if isinstance(outcome, AddOutcome) else None
        elif code in _RETRYABLE_ERRORS:
            return None
        elif code in _PERMANENT_ERRORS:
            return AddOutcome.REJECTED
        raise StorageUnavailable("the index is unavailable, retry later") from exc

    def _on_cancelled(self, reasons: list[str], record: InstanceRecord) -> object:
        """The outcome of a cancelled transaction, None to retry, or ``_UNKNOWN``."""
        if len(reasons) > _GUARD and reasons[_GUARD] == "ConditionalCheckFailed":
            return self._existing(record)
        if len(reasons) > _STUDY and reasons[_STUDY] == "ConditionalCheckFailed":
            # Another patient's study, or its item changed since it was read: see which.
            seen = self._seen(record.study_uid)
            if seen.exists and seen.patient_id != record.patient_id:
                return AddOutcome.PATIENT_MISMATCH
            return None
        if set(reasons) & _PERMANENT_REASONS:
            return AddOutcome.REJECTED
        if set(reasons) - {"None"} <= _RETRYABLE_REASONS:
            return None
        return _UNKNOWN

    def _existing(self, record: InstanceRecord) -> AddOutcome | None:
        item = self._guard(record.sop_instance_uid, "sha256", None)
        if item is None:
            return None  # removed meanwhile: try again
        same = item.get("sha256", {}).get("S") == record.sha256
        return AddOutcome.ALREADY_STORED if same else AddOutcome.DIFFERENT_CONTENT

    def _guard(
        self, sop_instance_uid: str, projection: str, names: dict[str, str] | None
    ) -> dict[str, Any] | None:
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"PK": _s(guard_pk(sop_instance_uid)), "SK": _s("SOP")},
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

    def _transaction(
        self, r: InstanceRecord, seen: _Seen, text: _TextIndex
    ) -> list[dict[str, Any]]:
        pk = study_pk(r.study_uid)
        sdt = study_sort_key(r.study_date, r.study_time, r.study_uid)
        sk = instance_sk(r.series_uid, r.instance_number, r.sop_instance_uid)
        guard = {
            "PK": _s(guard_pk(r.sop_instance_uid)),
            "SK": _s("SOP"),
            "study": _s(r.study_uid),
            "series": _s(r.series_uid),
            "sk": _s(sk),
            "sha256": _s(r.sha256),
            "key": _s(r.blob_key),
        }
        instance: dict[str, Any] = {
            "PK": _s(pk),
            "SK": _s(sk),
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
        if self._uid_map is not None:
            instance["duid"] = _s(self._uid_map(r.sop_instance_uid))
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": guard,
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {"Put": {"TableName": self._table, "Item": instance}},
            self._series_update(r, pk, sdt),
            self._study_update(r, pk, sdt, seen, text),
        ]
        if r.patient_id:
            items.append(self._patient_update(r))
        return items

    def _series_update(self, r: InstanceRecord, pk: str, sdt: str) -> dict[str, Any]:
        values: dict[str, Any] = {
            ":attrs": _s(r.series_json),
            ":study_attrs": _s(r.study_json),
            ":sdt": _s(sdt),
            ":seu": _s(r.series_uid),
            ":one": _n(1),
        }
        sets = ["attrs = :attrs", "study_attrs = :study_attrs", "sdt = :sdt", "seu = :seu"]
        if self._uid_map is not None:
            sets.append("duid = :duid")
            values[":duid"] = _s(self._uid_map(r.series_uid))
        if r.modality:
            sets.append("#mod = :mod")
            values[":mod"] = _s(r.modality)
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"PK": _s(pk), "SK": _s(series_sk(r.series_uid))},
            "UpdateExpression": f"SET {', '.join(sets)} ADD n_instances :one",
            "ExpressionAttributeValues": values,
        }
        if r.modality:
            update["ExpressionAttributeNames"] = {"#mod": "mod"}
        return {"Update": update}

    def _study_update(
        self, r: InstanceRecord, pk: str, sdt: str, seen: _Seen, text: _TextIndex
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            ":attrs": _s(r.study_json),
            ":patient": _s(r.patient_id),
            ":sdt": _s(sdt),
            ":list": _s(LIST_STUDIES),
            ":one": _n(1),
            ":series": {"SS": [uid_digest(r.series_uid)]},
            ":classes": {"SS": [r.sop_class_uid]},
        }
        sets = [
            "attrs = :attrs",
            "patient_id = :patient",
            "sdt = :sdt",
            "lst = :list",
            "lsk = :sdt",
        ]
        adds = ["n_instances :one", "series_keys :series", "sop_classes :classes"]
        if r.patient_id:
            sets.append("pid = :patient")
        if self._uid_map is not None:
            sets.append("duid = :duid")
            values[":duid"] = _s(self._uid_map(r.study_uid))
        if r.accession_number:
            sets.append("acc = :acc")
            values[":acc"] = _s(r.accession_number)
        name_key = person_name_key(r.patient_name)
        if name_key:
            sets += ["pnk = :pnk", "pnn = :pnn"]
            values[":pnk"] = _s(f"S#{name_key[0]}")
            values[":pnn"] = _s(f"{name_key}#{r.study_uid}")
        if r.modality:
            adds.append("modalities :mods")
            values[":mods"] = {"SS": [r.modality]}
        if text.packed is not None:
            sets += ["tx = :tx", "gsdt = :sdt"]
            values[":tx"] = _s(text.packed)
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"PK": _s(pk), "SK": _s(STUDY_SK)},
                "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
                "ConditionExpression": _study_condition(seen, text, values),
                "ExpressionAttributeValues": values,
            }
        }

    def _patient_update(self, r: InstanceRecord) -> dict[str, Any]:
        pk, sk = patient_pk(r.patient_id), patient_sk(r.issuer_of_patient_id)
        name_key = person_name_key(r.patient_name)
        values: dict[str, Any] = {
            ":attrs": _s(r.patient_json),
            ":one": _n(1),
            ":studies": {"SS": [uid_digest(r.study_uid)]},
            ":series": {"SS": [uid_digest(r.series_uid)]},
            ":list": _s(LIST_PATIENTS),
            ":lsk": _s(f"{name_key}#{r.patient_id}\\{r.issuer_of_patient_id}"),
        }
        sets = ["attrs = :attrs", "lst = :list", "lsk = :lsk"]
        if name_key:
            sets += ["pnk = :pnk", "pnn = :lsk"]
            values[":pnk"] = _s(f"P#{name_key[0]}")
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"PK": _s(pk), "SK": _s(sk)},
                "UpdateExpression": (
                    f"SET {', '.join(sets)} "
                    "ADD n_instances :one, study_keys :studies, series_keys :series"
                ),
                "ExpressionAttributeValues": values,
            }
        }
