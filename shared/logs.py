"""Logger factory, and the one line each request or event leaves.

Never log keys, patient names, IDs, QIDO values or datasets: a line holds names, numbers,
outcomes and UIDs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import powertools_dev_is_set


def get_logger() -> Logger:
    """Return the Powertools logger (service and level from POWERTOOLS_* / LOG_LEVEL)."""
    return Logger(
        log_uncaught_exceptions=True,
        json_serializer=_serializer(),
        json_deserializer=_message_document,
    )


#: The characters a JSON text may start with, after white space.
_JSON_STARTS = frozenset('{["-0123456789tfnNI')


def _message_document(message: Any) -> Any:
    """What Powertools' formatter makes of a message that is JSON text (``json.loads``):
    a message that cannot be (a word: "qido") is refused at its first character, without
    the decoder's error."""
    if isinstance(message, str) and message.lstrip(" \t\n\r")[:1] not in _JSON_STARTS:
        raise ValueError("not a JSON text")
    return json.loads(message)


def _serializer() -> Callable[[dict[str, Any]], str]:
    """The JSON Powertools' formatter writes by default (``str`` for values JSON does not
    know, compact, non-ASCII kept, indented with ``POWERTOOLS_DEV``), from one encoder
    instead of one made per line by ``json.dumps``."""
    indent = constants.PRETTY_INDENT if powertools_dev_is_set() else constants.COMPACT_INDENT
    encoder = json.JSONEncoder(
        default=str, separators=(",", ":"), indent=indent, ensure_ascii=False
    )
    return encoder.encode


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
