"""The change feed on DynamoDB: one gap-free sequence (1, 2, 3...) over the sharded change log.

Each change writes its log entry in its study's shard (``CHANGES#<shard>``, ids in commit
order within the shard) in the change's own transaction: atomic with the write, and no
item that every writer updates (eight shard counters share the load). The feed numbers
those entries afterwards. A *sequencer* reads each shard past the position it numbered
last, merges what it found by id, and in one transaction puts the next entries under
``FEED#<n // FEED_PARTITION>`` / ``<n>`` and advances its state item (``FEED`` / ``#``:
the last number and each shard's position), conditioned on the state it read. Two
sequencers racing: one commits, the other reads again and numbers what is left; a number
is put once (``attribute_not_exists``), so a retry never numbers an entry twice.

A late commit in a shard behind the others gets the next number when it is read: it is
never skipped, as an integer offset over the raw ids would skip it
(docs/decisions/0008-change-feed.md). The order is the order of numbering: each study's
changes (one shard) in their commit order; across studies, by id as far as the commits
were visible.

Who numbers: the feed's readers (``changes``: up to the entries the page needs;
``latest``: all, within a time budget), and on AWS the FeedFunction, every minute and
after each stream of commits, so that events follow without a reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.dynamo_keys import (
    CHANGE_COUNTER_SK,
    CHANGE_ID_DIGITS,
    CHANGE_SHARDS,
    FEED_PARTITION,
    FEED_SEQUENCE_DIGITS,
    FEED_STATE_PK,
    FEED_STATE_SK,
    change_pk,
    feed_pk,
)
from shared.errors import StorageUnavailable

#: Entries numbered per transaction: DynamoDB takes 100 items, one is the state.
BATCH = 99
#: What a reader spends numbering at most (seconds); the rest waits for the next reader or
#: the FeedFunction.
READ_BUDGET_S = 2.0
#: Fields copied from a log entry into its feed item.
_FIELDS = ("kind", "study", "series", "sop", "key", "previous_key", "at")


@dataclass(frozen=True)
class FeedState:
    """The last number given and, for each shard, the id of the last entry numbered."""

    last: int
    positions: tuple[str, ...]

    @classmethod
    def empty(cls) -> FeedState:
        return cls(0, ("0" * CHANGE_ID_DIGITS,) * CHANGE_SHARDS)


class DynamoFeed:
    """Numbers the change log and reads it by number."""

    def __init__(
        self, client: Any, table: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    # ----------------------------------------------------------------- numbering

    def sequence(self, until: int | None = None, budget_s: float = READ_BUDGET_S) -> int:
        """Number entries not yet numbered, until the feed holds ``until`` entries (None:
        all of them) or the budget is spent; the last number given."""
        deadline = self._clock() + budget_s
        state = self.state()
        while until is None or state.last < until:
            want = BATCH if until is None else min(BATCH, until - state.last)
            found = self._pending(state, want)
            if not found:
                return state.last
            # another sequencer may have gone first: then read its state
            state = _advanced(state, found) if self._number(state, found) else self.state()
            if self._clock() > deadline:
                break
        return state.last

    def state(self) -> FeedState:
        try:
            item = self._client.get_item(
                TableName=self._table,
                Key={"PK": {"S": FEED_STATE_PK}, "SK": {"S": FEED_STATE_SK}},
                ConsistentRead=True,
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        if item is None:
            return FeedState.empty()
        return FeedState(int(item["last"]["N"]), tuple(item["positions"]["S"].split(".")))

    def _pending(self, state: FeedState, want: int) -> list[tuple[str, int, dict[str, Any]]]:
        """Up to ``want`` entries past the state's positions, by (id, shard): a prefix of
        each shard's entries in their commit order."""
        found: list[tuple[str, int, dict[str, Any]]] = []
        for shard in range(CHANGE_SHARDS):
            request: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk AND SK > :after",
                "ExpressionAttributeValues": {
                    ":pk": {"S": change_pk(shard)},
                    ":after": {"S": max(state.positions[shard], CHANGE_COUNTER_SK)},
                },
                "ConsistentRead": True,
                "Limit": want,
            }
            items = self._query(request)
            found += [(item["SK"]["S"], shard, item) for item in items]
        found.sort(key=lambda f: (f[0], f[1]))
        return found[:want]

    def _number(self, state: FeedState, found: list[tuple[str, int, dict[str, Any]]]) -> bool:
        """Put the found entries with the next numbers and advance the state, in one
        transaction conditioned on the state read; False when another sequencer went first."""
        after = _advanced(state, found)
        puts = []
        for n, (entry_id, shard, entry) in enumerate(found, start=state.last + 1):
            item = {k: entry[k] for k in _FIELDS if k in entry}
            item |= {
                "PK": {"S": feed_pk(n)},
                "SK": {"S": f"{n:0{FEED_SEQUENCE_DIGITS}d}"},
                "log": {"S": f"{shard}.{entry_id}"},
            }
            puts.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            )
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(PK)"}
            if state.last == 0
            else {
                "ConditionExpression": "#l = :was",
                "ExpressionAttributeValues": {":was": {"N": str(state.last)}},
            }
        )
        values = {
            ":last": {"N": str(after.last)},
            ":positions": {"S": ".".join(after.positions)},
        } | condition.pop("ExpressionAttributeValues", {})
        update = {
            "Update": {
                "TableName": self._table,
                "Key": {"PK": {"S": FEED_STATE_PK}, "SK": {"S": FEED_STATE_SK}},
                "UpdateExpression": "SET #l = :last, #p = :positions",
                "ExpressionAttributeNames": {"#l": "last", "#p": "positions"},
                "ExpressionAttributeValues": values,
                **condition,
            }
        }
        try:
            self._client.transact_write_items(TransactItems=[update, *puts])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("TransactionCanceledException", "TransactionConflictException"):
                return False
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        except BotoCoreError:
            return False  # it may have committed: read the state again
        return True

    # ----------------------------------------------------------------- reading

    def read(self, after: int, limit: int, last: int) -> list[tuple[int, dict[str, Any]]]:
        """The numbered entries above ``after``, up to ``limit`` and ``last``."""
        out: list[tuple[int, dict[str, Any]]] = []
        start = after + 1
        stop = min(after + max(0, limit), last)
        while start <= stop:
            partition_end = min((start // FEED_PARTITION + 1) * FEED_PARTITION - 1, stop)
            request: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {
                    ":pk": {"S": feed_pk(start)},
                    ":lo": {"S": f"{start:0{FEED_SEQUENCE_DIGITS}d}"},
                    ":hi": {"S": f"{partition_end:0{FEED_SEQUENCE_DIGITS}d}"},
                },
            }
            for item in self._query(request, whole=True):
                out.append((int(item["SK"]["S"]), item))
            start = partition_end + 1
        return out

    def _query(self, request: dict[str, Any], whole: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        try:
            while True:
                page = self._client.query(**request)
                items += page.get("Items", [])
                more = page.get("LastEvaluatedKey")
                if not whole or not more:
                    return items
                request = {**request, "ExclusiveStartKey": more}
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc


def _advanced(state: FeedState, found: list[tuple[str, int, dict[str, Any]]]) -> FeedState:
    positions = list(state.positions)
    for entry_id, shard, _ in found:
        positions[shard] = max(positions[shard], entry_id)
    return FeedState(state.last + len(found), tuple(positions))
