"""Writes to the hierarchical index in one DynamoDB table (layout: ``dynamo_keys``).

A new instance is one ``TransactWriteItems``: the guard put (condition: absent), the
instance put, and ``ADD`` updates of the series, study and patient items. Counts of
distinct children are kept as string sets of short UID digests (``ADD`` of a set member is
idempotent), so the transaction never needs to know whether a series or study is new.
Series and instance items carry their parents' attributes, so that a search at any level
reads one item per result.
"""

from __future__ import annotations

import random
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.dynamo_keys import (
    LIST_PATIENTS,
    LIST_STUDIES,
    STUDY_SK,
    guard_pk,
    instance_sk,
    patient_pk,
    patient_sk,
    series_sk,
    study_pk,
    study_sort_key,
    uid_digest,
)
from shared.dicom.normalize import person_name_key
from shared.dicom.uid_map import UidMap
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, InstanceRecord

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


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


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
        """
        items = self._transaction(record)
        for attempt in range(MAX_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                outcome = self._on_error(exc, record)
                if outcome is not None:
                    return outcome
            except BotoCoreError:
                pass  # connection lost or timed out: the transaction may have committed
            else:
                return AddOutcome.STORED
            self._sleep(min(1.0, 0.02 * 2**attempt) * random.random())  # noqa: S311
        raise StorageUnavailable("the index is busy, retry later")

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the instance's guard item names ``blob_key`` (consistent read)."""
        item = self._guard(sop_instance_uid, "#k", {"#k": "key"})
        return item is not None and item.get("key", {}).get("S") == blob_key

    def _on_error(self, exc: ClientError, record: InstanceRecord) -> AddOutcome | None:
        """Map a failed transaction to an outcome, or None to retry."""
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "TransactionCanceledException":
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if len(reasons) > _GUARD and reasons[_GUARD] == "ConditionalCheckFailed":
                return self._existing(record)
            if len(reasons) > _STUDY and reasons[_STUDY] == "ConditionalCheckFailed":
                return AddOutcome.PATIENT_MISMATCH
            if set(reasons) & _PERMANENT_REASONS:
                return AddOutcome.REJECTED
            if set(reasons) - {"None"} <= _RETRYABLE_REASONS:
                return None
        elif code in _RETRYABLE_ERRORS:
            return None
        elif code in _PERMANENT_ERRORS:
            return AddOutcome.REJECTED
        raise StorageUnavailable("the index is unavailable, retry later") from exc

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

    def _transaction(self, r: InstanceRecord) -> list[dict[str, Any]]:
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
            self._study_update(r, pk, sdt),
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

    def _study_update(self, r: InstanceRecord, pk: str, sdt: str) -> dict[str, Any]:
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
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"PK": _s(pk), "SK": _s(STUDY_SK)},
                "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
                "ConditionExpression": "attribute_not_exists(PK) OR patient_id = :patient",
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
