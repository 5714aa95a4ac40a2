"""The change feed's events (issue 23; docs/decisions/0008-change-feed.md): after commits
(the index table's stream) and every minute (the schedule), number what the change log
gained (DynamoDB), put one event per feed entry on the bus (EventBridge; the local stack:
``events.jsonl``), and a ``StudyStable`` event for each study quiet for
``StudyStableSeconds``. The publisher's cursor is one object in the bucket
(``events/state.json``); runs that overlap put some events twice, never lose one."""

from __future__ import annotations

from typing import Any

from shared import bootstrap, deadline, logs
from shared.services import events

logger = logs.get_logger()
archive = bootstrap.Provider()
#: Seconds kept back from the invocation's time: the state is saved after each batch.
MARGIN_S = 10.0


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: a stream batch or the schedule; both read the feed itself."""
    current = archive()
    until = deadline.from_context(context)
    publisher = events.Publisher(
        index=current.index,
        catalog=current.catalog,
        store=current.objects,
        bus=current.events,
        stable_s=current.settings.study_stable_seconds,
    )
    published = publisher.run(out_of_time=lambda: until.remaining() < MARGIN_S)
    result = {
        "changes": published.changes,
        "stable": published.stable,
        "sequence": published.sequence,
    }
    if published.changes or published.stable:
        logger.info("feed events", extra=result)
    return result
