"""Logger factory. Never log keys, patient names, IDs, QIDO values or datasets."""

from __future__ import annotations

from aws_lambda_powertools import Logger


def get_logger() -> Logger:
    """Return the Powertools logger (service and level from POWERTOOLS_* / LOG_LEVEL)."""
    return Logger(log_uncaught_exceptions=True)
