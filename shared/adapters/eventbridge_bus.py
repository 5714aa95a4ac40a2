"""The change feed's events on an EventBridge bus (``PutEvents``, ten entries a call)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable

#: Entries per PutEvents call (EventBridge's limit).
BATCH = 10
ATTEMPTS = 4


class EventBridgeBus:
    """Puts events on one bus; entries EventBridge refused are put again, with backoff."""

    def __init__(
        self, client: Any, bus_name: str, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._client = client
        self._bus = bus_name
        self._sleep = sleep

    def put(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), BATCH):
            self._put_batch([self._entry(e) for e in events[start : start + BATCH]])

    def _entry(self, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps({**event["detail"], "id": event["id"]}),
            "EventBusName": self._bus,
        }

    def _put_batch(self, entries: list[dict[str, Any]]) -> None:
        for attempt in range(ATTEMPTS):
            try:
                reply = self._client.put_events(Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                if attempt == ATTEMPTS - 1:
                    raise StorageUnavailable("the event bus is unavailable") from exc
            else:
                results = reply.get("Entries", [])
                entries = [e for e, r in zip(entries, results, strict=False) if r.get("ErrorCode")]
                if not reply.get("FailedEntryCount") or not entries:
                    return
            self._sleep(0.1 * 2**attempt)
        raise StorageUnavailable("the event bus refused events")
