"""Logger factory, and the one line each request or event leaves.

Never log keys, patient names, IDs, QIDO values or datasets: a line holds names, numbers,
outcomes and UIDs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger


def get_logger() -> Logger:
    """Return the Powertools logger (service and level from POWERTOOLS_* / LOG_LEVEL)."""
    return Logger(log_uncaught_exceptions=True)


@contextmanager
def line(logger: Logger, message: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """One INFO line when the block ends, however it ends: ``fields``, those the block
    added to the yielded dict, and ``duration_ms``."""
    started = time.perf_counter()
    try:
        yield fields
    finally:
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        logger.info(message, extra=fields)
