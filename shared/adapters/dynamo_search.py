"""Reads of the hierarchical index for QIDO-RS: Query and BatchGetItem, never Scan.

Every method is lazy: it reads a page (or a batch) only when the caller asks for the next
row, so a search stops reading as soon as it has its page of results. Global secondary
indexes are KEYS_ONLY; the items themselves are fetched with BatchGetItem, in index order.
``items_read`` counts every item DynamoDB returned (index keys and items), for benchmarks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters import dynamo_plan
from shared.adapters.dynamo_keys import (
    GRAM_COUNT_SK,
    INSTANCE_PREFIX,
    LIST_PATIENTS,
    LIST_STUDIES,
    SERIES_PREFIX,
    STUDY_SK,
    gram_pk,
    guard_pk,
    patient_pk,
    study_pk,
)
from shared.dicomweb.query import Query
from shared.errors import StorageUnavailable
from shared.ports import (
    Candidates,
    InstanceRow,
    PatientRow,
    SearchTimeUp,
    SeriesRow,
    StudyRow,
)

# Pages and batches are sized to what the search expects to need (``expect``), at least
# FIRST_PAGE / FIRST_BATCH; past that they double: filtered searches soon read full pages.
FIRST_PAGE, MAX_PAGE = 16, 100  # keys per Query page
FIRST_BATCH, MAX_BATCH = 8, 100  # keys per BatchGetItem (DynamoDB allows 100)


def _next_size(wanted: int, done: int, last: int, first: int, largest: int) -> int:
    remaining = wanted - done
    if remaining > 0:
        return max(first, min(largest, remaining))
    return min(largest, max(first, last * 2))


_STUDY_INDEXES = {"pid": "ByPatientId", "acc": "ByAccession"}


def _json(item: dict[str, Any], name: str) -> dict[str, Any]:
    raw = item.get(name, {}).get("S")
    document: dict[str, Any] = json.loads(raw) if raw else {}
    return document


def _int(item: dict[str, Any], name: str) -> int:
    return int(item.get(name, {}).get("N", "0"))


def _set(item: dict[str, Any], name: str) -> tuple[str, ...]:
    return tuple(sorted(item.get(name, {}).get("SS", [])))


def _study_row(item: dict[str, Any]) -> StudyRow:
    return StudyRow(
        study_uid=item["PK"]["S"].removeprefix("STUDY#"),
        attrs=_json(item, "attrs"),
        n_instances=_int(item, "n_instances"),
        n_series=len(item.get("series_keys", {}).get("SS", [])),
        modalities=_set(item, "modalities"),
        sop_classes=_set(item, "sop_classes"),
    )


def _series_row(item: dict[str, Any]) -> SeriesRow:
    return SeriesRow(
        study_uid=item["PK"]["S"].removeprefix("STUDY#"),
        series_uid=item["SK"]["S"].removeprefix(SERIES_PREFIX),
        attrs=_json(item, "attrs"),
        study_attrs=_json(item, "study_attrs"),
        n_instances=_int(item, "n_instances"),
    )


def _instance_row(item: dict[str, Any]) -> InstanceRow:
    series_uid, _, rest = item["SK"]["S"].removeprefix(INSTANCE_PREFIX).partition("#")
    return InstanceRow(
        study_uid=item["PK"]["S"].removeprefix("STUDY#"),
        series_uid=series_uid,
        sop_instance_uid=rest.partition("#")[2],
        attrs=_json(item, "attrs"),
        series_attrs=_json(item, "series_attrs"),
        study_attrs=_json(item, "study_attrs"),
        transfer_syntax=item.get("ts", {}).get("S", ""),
        blob_key=item.get("key", {}).get("S", ""),
        size=_int(item, "size"),
        calling_aet=item.get("aet", {}).get("S", ""),
        metadata=bytes(item.get("meta", {}).get("B", b"")),
    )


def _patient_row(item: dict[str, Any]) -> PatientRow:
    return PatientRow(
        attrs=_json(item, "attrs"),
        n_instances=_int(item, "n_instances"),
        n_studies=len(item.get("study_keys", {}).get("SS", [])),
        n_series=len(item.get("series_keys", {}).get("SS", [])),
    )


def _original_uid(level: str, pk: str, sk: str) -> str | None:
    """The UID of ``level`` an item's keys name, or None when the item is of another level."""
    if level == "STUDY" and sk == STUDY_SK:
        return pk.removeprefix("STUDY#")
    if level == "SERIES" and sk.startswith(SERIES_PREFIX):
        return sk.removeprefix(SERIES_PREFIX)
    if level == "INSTANCE" and sk.startswith(INSTANCE_PREFIX):
        return sk.removeprefix(INSTANCE_PREFIX).partition("#")[2].partition("#")[2]
    return None


class DynamoSearch:
    """The read side of the index (port :class:`shared.ports.Catalog`).

    ``search`` plans a query on the table's indexes (:mod:`dynamo_plan`); the other public
    methods are the index reads the plans are made of.
    """

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self._want = self._want_items = FIRST_PAGE
        self._deadline: float | None = None
        self._clock: Callable[[], float] = time.monotonic
        self.items_read = 0

    def stop_reading_at(self, deadline: float | None, clock: Callable[[], float]) -> None:
        """Stop the next search's posting reads past ``deadline`` (port
        :class:`shared.ports.TimeBounded`): the postings of a common trigram may be read a
        long way without a candidate. Other reads are bounded by the search per candidate."""
        self._deadline, self._clock = deadline, clock

    def search(self, query: Query) -> Candidates:
        """Candidate rows for a parsed QIDO query, read lazily from the best index."""
        return dynamo_plan.plan(query, self)

    def expect(self, results: int, items: int | None = None) -> None:
        """Size the next reads: ``results`` index keys, ``items`` (default: as many) items."""
        self._want = max(1, results)
        self._want_items = max(1, items if items is not None else results)

    # ----------------------------------------------------------------- studies

    def studies_by_uid(self, uids: Iterable[str]) -> Iterator[StudyRow]:
        """Studies with these UIDs, in the order given (absent ones skipped)."""
        keys = ({"PK": {"S": study_pk(u)}, "SK": {"S": STUDY_SK}} for u in uids)
        for item in self._batch_get(keys):
            yield _study_row(item)

    def study_uids(
        self, key: str, value: str, *, low: str = "", high: str = "", prefix: str = ""
    ) -> Iterator[str]:
        """Study UIDs from an index, newest first (name index: in name order).

        ``key``: ``pid`` (PatientID), ``acc`` (AccessionNumber), ``all`` (every study,
        optionally within ``low``..``high`` of the study date-time sort key), ``name``
        (normalised PatientName starting with ``prefix``), ``mod`` (a series Modality).
        """
        seen: set[str] = set()
        for item in self._study_index_keys(key, value, low=low, high=high, prefix=prefix):
            uid = item["PK"]["S"].removeprefix("STUDY#")
            if uid not in seen:  # several series of one study in the modality index
                seen.add(uid)
                yield uid

    def _study_index_keys(
        self, key: str, value: str, *, low: str, high: str, prefix: str
    ) -> Iterator[dict[str, Any]]:
        if key in _STUDY_INDEXES:
            return self._query(_STUDY_INDEXES[key], "#k = :v", {"#k": key}, {":v": {"S": value}})
        if key == "mod":
            return self._query("ByModality", "#k = :v", {"#k": "mod"}, {":v": {"S": value}})
        if key == "name":
            return self._query(
                "ByPatientName",
                "pnk = :k AND begins_with(pnn, :p)",
                None,
                {":k": {"S": f"S#{prefix[0]}"}, ":p": {"S": prefix}},
                forward=True,
            )
        condition, values = "lst = :l", {":l": {"S": LIST_STUDIES}}
        if low or high:
            condition += " AND lsk BETWEEN :a AND :b"
            values[":a"] = {"S": low or "0"}
            values[":b"] = {"S": high or "~"}
        return self._query("ByList", condition, None, values)

    def gram_counts(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """How many studies hold each (column, trigram): 0 for one no study holds."""
        wanted = list(dict.fromkeys(keys))
        items = self._batch_get(
            {"PK": {"S": gram_pk(column, gram)}, "SK": {"S": GRAM_COUNT_SK}}
            for column, gram in wanted
        )
        found = {item["PK"]["S"]: _int(item, "n") for item in items}
        return {key: found.get(gram_pk(*key), 0) for key in wanted}

    def study_uids_by_gram(
        self,
        column: str,
        gram: str,
        accept: Callable[[str], bool],
        *,
        low: str = "",
        high: str = "",
    ) -> Iterator[str]:
        """UIDs of the studies filed under a trigram of a column whose indexed text
        ``accept`` keeps, newest first (within ``low``..``high`` of their date-time key)."""
        values: dict[str, Any] = {":pk": {"S": gram_pk(column, gram)}}
        if low or high:
            condition = "PK = :pk AND SK BETWEEN :a AND :b"
            values[":a"] = {"S": max(low, "0")}
            values[":b"] = {"S": high or "~"}
        else:  # every posting: their keys start with a digit, the count's with '#'
            condition = "PK = :pk AND SK >= :a"
            values[":a"] = {"S": "0"}
        seen: set[str] = set()
        deadline = self._deadline
        for item in self._query(None, condition, None, values):
            if deadline is not None and self._clock() > deadline:
                raise SearchTimeUp
            uid = item["SK"]["S"].partition("#")[2]
            if uid not in seen and accept(item.get("t", {}).get("S", "")):
                seen.add(uid)  # a study re-dated has postings under both keys
                yield uid

    # ----------------------------------------------------------------- series

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        """Every series of a study (a study holds few series: read whole)."""
        items = self._query(
            None,
            "PK = :pk AND begins_with(SK, :sk)",
            None,
            {":pk": {"S": study_pk(study_uid)}, ":sk": {"S": SERIES_PREFIX}},
            forward=True,
        )
        return [_series_row(i) for i in items]

    def series_by_uid(self, series_uid: str) -> list[SeriesRow]:
        """The series with this UID (one, unless a UID was reused across studies)."""
        keys = [
            {"PK": k["PK"], "SK": k["SK"]}
            for k in self._query("BySeriesUid", "seu = :u", None, {":u": {"S": series_uid}})
        ]
        return [_series_row(i) for i in self._batch_get(iter(keys))]

    def series_by_modality(self, modality: str) -> Iterator[SeriesRow]:
        """Series of a modality, newest study first."""
        keys = (
            {"PK": k["PK"], "SK": k["SK"]}
            for k in self._query("ByModality", "#k = :v", {"#k": "mod"}, {":v": {"S": modality}})
        )
        for item in self._batch_get(keys):
            yield _series_row(item)

    # ----------------------------------------------------------------- instances

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRow]:
        """Instances of a study (or of one series), by series then InstanceNumber."""
        prefix = INSTANCE_PREFIX + (f"{series_uid}#" if series_uid else "")
        items = self._query(
            None,
            "PK = :pk AND begins_with(SK, :sk)",
            None,
            {":pk": {"S": study_pk(study_uid)}, ":sk": {"S": prefix}},
            forward=True,
        )
        for item in items:
            yield _instance_row(item)

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[InstanceRow]:
        """Instances with these SOP Instance UIDs (guard item, then the instance)."""
        guards = self._batch_get({"PK": {"S": guard_pk(u)}, "SK": {"S": "SOP"}} for u in sop_uids)
        keys = (
            {"PK": {"S": study_pk(g["study"]["S"])}, "SK": {"S": g["sk"]["S"]}}
            for g in guards
            if "sk" in g
        )
        for item in self._batch_get(keys):
            yield _instance_row(item)

    # ----------------------------------------------------------------- patients

    def patients_by_id(self, patient_id: str) -> list[PatientRow]:
        """Patients with this PatientID (one per issuer)."""
        items = self._query(
            None,
            "PK = :pk AND begins_with(SK, :sk)",
            None,
            {":pk": {"S": patient_pk(patient_id)}, ":sk": {"S": "PATIENT#"}},
            forward=True,
        )
        return [_patient_row(i) for i in items]

    def patients(self, prefix: str = "") -> Iterator[PatientRow]:
        """Every patient in name order, or those whose normalised name starts with prefix."""
        if prefix:
            keys = self._query(
                "ByPatientName",
                "pnk = :k AND begins_with(pnn, :p)",
                None,
                {":k": {"S": f"P#{prefix[0]}"}, ":p": {"S": prefix}},
                forward=True,
            )
        else:
            keys = self._query("ByList", "lst = :l", None, {":l": {"S": LIST_PATIENTS}}, True)
        for item in self._batch_get({"PK": k["PK"], "SK": k["SK"]} for k in keys):
            yield _patient_row(item)

    # ----------------------------------------------------------------- de-identified UIDs

    def original_uids(self, level: str, deidentified: Iterable[str]) -> dict[str, str]:
        """The original UIDs of de-identified UIDs of a level (port
        :class:`shared.ports.DeidentifiedLookup`): one Query of ``ByDeidentifiedUid`` each
        (keys only: the original UIDs are in the item's keys). Eventually consistent: an
        instance stored a moment ago may not be found yet."""
        found: dict[str, str] = {}
        for duid in dict.fromkeys(deidentified):
            for key in self._query("ByDeidentifiedUid", "duid = :u", None, {":u": {"S": duid}}):
                original = _original_uid(level, key["PK"]["S"], key["SK"]["S"])
                if original is not None:
                    found[duid] = original
        return found

    # ----------------------------------------------------------------- plumbing

    def _query(
        self,
        index: str | None,
        condition: str,
        names: dict[str, str] | None,
        values: dict[str, Any],
        forward: bool = False,
    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
            "Limit": _next_size(self._want, 0, 0, FIRST_PAGE, MAX_PAGE),
        }
        if index:
            request["IndexName"] = index
        if names:
            request["ExpressionAttributeNames"] = names
        yielded = 0
        while True:
            reply = self._call("query", request)
            items = reply.get("Items", [])
            self.items_read += len(items)
            yielded += len(items)
            yield from items
            last = reply.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last
            request["Limit"] = _next_size(
                self._want, yielded, request["Limit"], FIRST_PAGE, MAX_PAGE
            )

    def _batch_get(self, keys: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Fetch items by key in batches, yielding them in the order of the keys."""
        batch: list[dict[str, Any]] = []
        fetched = 0
        size = _next_size(self._want_items, 0, 0, FIRST_BATCH, MAX_BATCH)
        for key in keys:
            batch.append(key)
            if len(batch) == size:
                yield from self._fetch(batch)
                fetched += len(batch)
                batch = []
                size = _next_size(self._want_items, fetched, size, FIRST_BATCH, MAX_BATCH)
        if batch:
            yield from self._fetch(batch)

    def _fetch(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        unique = list({(k["PK"]["S"], k["SK"]["S"]): k for k in keys}.values())
        found: dict[tuple[str, str], dict[str, Any]] = {}
        pending: dict[str, Any] = {self._table: {"Keys": unique}}
        for _ in range(8):
            reply = self._call("batch_get_item", {"RequestItems": pending})
            for item in reply.get("Responses", {}).get(self._table, []):
                found[(item["PK"]["S"], item["SK"]["S"])] = item
            pending = reply.get("UnprocessedKeys") or {}
            if not pending:
                break
        else:
            raise StorageUnavailable("the index is busy, retry later")
        self.items_read += len(found)
        ordered = (found.get((k["PK"]["S"], k["SK"]["S"])) for k in keys)
        return [item for item in ordered if item is not None]

    def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = getattr(self._client, operation)(**request)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        return reply
