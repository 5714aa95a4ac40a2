"""A fix to moto's DynamoDB emulation, installed wherever this project runs on moto.

moto's ``transact_write_items`` takes a rollback snapshot of the table by deep-copying it
once per item of the transaction: a transaction of n items over a table of m items costs
n x m. The substring index's postings make a new study's transaction about 60 items, so
that copying would dominate the contract tests (minutes where seconds suffice).
:func:`install` makes each transaction copy each table once: the same snapshot, since
nothing changes while it is taken.

Every ``Query`` also starts from ``Table.all_items()``: the whole table, sorted by key
(comparisons of moto's Python value objects), only to keep one partition (or the items of
an index) and sort those again by the key the Query needs. During a Query, the table's
items are handed over unsorted, and a Query on the table's own key gets its partition
alone: the same items, in the same final order. Behaviour is otherwise moto's own.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

_installed = False
_lock = threading.Lock()


class _CopyEachTableOnce:
    """Stands in for the ``copy`` module inside moto's DynamoDB models."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type
        self._local = threading.local()

    def begin(self) -> None:
        self._local.memo = {}

    def end(self) -> None:
        self._local.memo = None

    def deepcopy(self, obj: Any, memo: dict[int, Any] | None = None) -> Any:
        snapshots = getattr(self._local, "memo", None)
        if snapshots is None or not isinstance(obj, self._table_type):
            return copy.deepcopy(obj, memo)
        if id(obj) not in snapshots:
            snapshots[id(obj)] = copy.deepcopy(obj)
        return snapshots[id(obj)]

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def install() -> None:
    """Patch moto (idempotent); does nothing when moto is not installed."""
    global _installed  # noqa: PLW0603 - one patch per process
    with _lock:
        if _installed:
            return
        try:
            from moto.dynamodb import models  # noqa: PLC0415 - only on moto
            from moto.dynamodb.models.table import Table  # noqa: PLC0415
        except ImportError:  # pragma: no cover - moto is a dev dependency
            return
        stand_in = _CopyEachTableOnce(Table)
        original = models.DynamoDBBackend.transact_write_items

        @functools.wraps(original)
        def transact_write_items(self: Any, *args: Any, **kwargs: Any) -> Any:
            stand_in.begin()
            try:
                return original(self, *args, **kwargs)
            finally:
                stand_in.end()

        models.copy = stand_in  # type: ignore[attr-defined,assignment]
        models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        _query_reads_unsorted(Table)
        _installed = True


def _query_reads_unsorted(table_type: Any) -> None:
    """Patch ``Table.query`` so that ``all_items`` skips its sort (see the module doc)."""
    sorted_items = table_type.all_items
    real_query = table_type.query
    state = threading.local()

    def all_items(self: Any) -> list[Any]:
        partition = getattr(state, "partition", None)
        if getattr(state, "table", None) != id(self):  # not inside this table's Query
            return list(sorted_items(self))
        if partition is not None:
            found = self.items.get(partition)
            if found is None:
                return []
            return list(found.values()) if self.range_key_attr else [found]
        if self.range_key_attr:
            return [item for by_range in self.items.values() for item in by_range.values()]
        return list(self.items.values())

    @functools.wraps(real_query)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        state.table = id(self)
        state.partition = None if index_name else hash_key
        try:
            return real_query(self, hash_key, *args, **kwargs)
        finally:
            state.table = state.partition = None

    table_type.all_items = all_items
    table_type.query = query
