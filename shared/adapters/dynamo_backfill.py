"""Backfills of DynamoDB items stored before a feature existed.

:func:`backfill`: the de-identified UIDs (``duid``, index ``ByDeidentifiedUid``) on study,
series and instance items stored before the read-deidentified view existed
(``tools/deid_backfill.py``).

Until an item has its ``duid``, a read-deidentified key cannot find it by its de-identified
UID (it is not listed either: QIDO answers only what it can name). A Scan reads the whole
table once (items without ``duid``, keys only); each item found gets one conditional
UpdateItem (``attribute_exists(PK)``, so an item deleted meanwhile is not re-created). It
is idempotent: run it again after a failure, or after the anonymization key was rotated
with ``--all``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from shared.adapters.dynamo_keys import INSTANCE_PREFIX, SERIES_PREFIX, STUDY_SK

if TYPE_CHECKING:
    from shared.adapters.dynamo_index import DynamoInstanceIndex


def _uid_of(pk: str, sk: str) -> str | None:
    """The UID an item is de-identified by: its own level's (None: not a study, series or
    instance item)."""
    if sk == STUDY_SK and pk.startswith("STUDY#"):
        return pk.removeprefix("STUDY#")
    if sk.startswith(SERIES_PREFIX):
        return sk.removeprefix(SERIES_PREFIX)
    if sk.startswith(INSTANCE_PREFIX):
        return sk.removeprefix(INSTANCE_PREFIX).partition("#")[2].partition("#")[2]
    return None


def _keys(client: Any, table: str, everything: bool) -> Iterator[tuple[str, str]]:
    condition = "begins_with(PK, :study)"
    if not everything:
        condition += " AND attribute_not_exists(duid)"
    return _scan_keys(client, table, condition, {":study": {"S": "STUDY#"}})


def _scan_keys(
    client: Any, table: str, condition: str, values: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    """Keys of the items a Scan's filter keeps (keys only)."""
    request: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": "PK, SK",
        "FilterExpression": condition,
        "ExpressionAttributeValues": values,
    }
    while True:
        reply = client.scan(**request)
        for item in reply.get("Items", []):
            yield item["PK"]["S"], item["SK"]["S"]
        last = reply.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def backfill(
    client: Any, table: str, uid_map: Callable[[str], str], *, everything: bool = False
) -> int:
    """Give every study, series and instance item without ``duid`` (``everything``: every
    one) its de-identified UID; return how many items were written."""
    written = 0
    for pk, sk in _keys(client, table, everything):
        uid = _uid_of(pk, sk)
        if uid is None:
            continue
        try:
            client.update_item(
                TableName=table,
                Key={"PK": {"S": pk}, "SK": {"S": sk}},
                UpdateExpression="SET duid = :d",
                ConditionExpression="attribute_exists(PK)",
                ExpressionAttributeValues={":d": {"S": uid_map(uid)}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            continue  # deleted meanwhile
        written += 1
    return written


def backfill_substring_index(index: DynamoInstanceIndex, client: Any, table: str) -> int:
    """File every study item without ``tx`` under its trigrams (the substring index,
    ``tools/substring_backfill.py``); return how many studies were filed.

    Until a study is filed, substring searches (``*abc*``) do not find it; an instance
    stored into it files it too. One Scan (study items without ``tx``, keys only), then per
    study one GetItem, its postings, one conditional UpdateItem and its trigram counts.
    """
    keys = _scan_keys(
        client,
        table,
        "SK = :study AND attribute_not_exists(tx)",
        {":study": {"S": STUDY_SK}},
    )
    return sum(index.index_text(pk.removeprefix("STUDY#")) for pk, _ in keys)
