"""Runs metadata updates and patient merges (``POST rs/studies/$bulkUpdate``,
shared/services/operations.py): woken when an operation's marker is written under
``jobs/operations/`` (S3 "Object Created" through EventBridge) and every 5 minutes (the
schedule finishes one cut off). A worker runs while it holds the ``operations`` lease (an
item of the index table): one at a time takes the operations in the order they were asked
for, so operations on one study run in order and never concurrently."""

from __future__ import annotations

from typing import Any

from shared import bootstrap, deadline, logs
from shared.services import operations

logger = logs.get_logger()
archive = bootstrap.Provider()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: a marker's event or the schedule; both run what is pending."""
    current = archive()
    with logs.line(logger, "operations", transaction="operations") as fields:
        counts = operations.run_pending(
            operations.Ports(
                objects=current.objects,
                index=current.index,
                catalog=lambda: current.catalog,
                audit=current.audit,
                lease=current.lease,
            ),
            deadline=deadline.from_context(context),
        )
        fields.update(counts)
    return counts
