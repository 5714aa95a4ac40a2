"""Ingest objects written under incoming/: S3 "Object Created" events and the sweeper.

Invoked by EventBridge for each object created under ``incoming/`` (at least once, in any
order) and on a schedule for objects whose event never came; both run
``shared.services.ingest.ingest``, the STOW code path for a file of any size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

from shared import bootstrap, budget, logs
from shared.dicom.validate import PEAK_PER_INFLATED_BYTE
from shared.services import ingest

logger = logs.get_logger()
archive = bootstrap.Provider()
#: The sweeper stops taking objects when less than this is left of its time.
_SWEEP_RESERVE_MS = 120_000


def _keys(event: dict[str, Any]) -> Iterator[str]:
    """Object keys of an EventBridge S3 event or an S3 notification (keys URL-encoded)."""
    detail = event.get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("object"), dict):
        yield str(detail["object"].get("key", ""))
    for record in event.get("Records") or []:
        yield unquote_plus(str(((record.get("s3") or {}).get("object") or {}).get("key", "")))


def _ingest(key: str, context: Any) -> str:
    outcome = None
    current = archive()
    for candidate in dict.fromkeys((key, unquote_plus(key))):
        outcome = ingest.ingest(
            candidate,
            store=current.objects,
            index=current.index,
            inflate_limit=budget.from_context(context) // PEAK_PER_INFLATED_BYTE,
            retention_days=current.settings.deleted_retention_days,
            catalog=lambda: current.catalog,
        )
        if outcome is not None:
            break
    return outcome.status if outcome is not None else "nothing"


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Ingest the event's objects, or sweep incoming/ on the schedule; one log line."""
    counts: dict[str, int] = {}
    with logs.line(logger, "ingest", transaction="ingest", outcomes=counts):
        if event.get("detail-type") == "Scheduled Event":
            for key in ingest.stale(archive().objects):
                if context.get_remaining_time_in_millis() < _SWEEP_RESERVE_MS:
                    break
                state = _ingest(key, context)
                counts[state] = counts.get(state, 0) + 1
        else:
            for key in _keys(event):
                state = _ingest(key, context)
                counts[state] = counts.get(state, 0) + 1
    return {"outcomes": counts}
