"""How long one request may keep working, derived from the Lambda context.

API Gateway (REST) gives up on an integration after 29 s and answers a bare 504 with none of
our headers; Lambda kills a function at its timeout. A handler that loops over many items
(instances of a study, parts of a STOW request, search pages) asks its :class:`Deadline`
between items and stops in time to answer something of its own: a 503 with ``Retry-After``
(:class:`OutOfTime`), or what it has where the protocol allows a partial answer (STOW's
failed instances, QIDO's ``Warning: 299``). The figures are in docs/limits.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.errors import OutOfTime

#: API Gateway's default integration timeout for REST APIs (seconds).
API_GATEWAY_TIMEOUT_S = 29.0
#: What a cold start may spend before the handler runs (init of the runtime, the layers and
#: the module: 0.3-0.5 s measured by ``python -m bench --only imports``, more on a cold
#: layer download). API Gateway's 29 s include it; the function timeout does not.
COLD_START_ALLOWANCE_S = 3.0
#: Time kept back to answer once the deadline passed: abort a multipart upload, serialise
#: an error or a partial result, base64 it and return it through Lambda.
STOP_MARGIN_S = 3.0


@dataclass(frozen=True)
class Deadline:
    """A point in time (``clock`` seconds) after which a handler stops starting new work."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    @classmethod
    def never(cls) -> Deadline:
        """No deadline (tools, benchmarks, tests that do not test time)."""
        return cls(float("inf"))

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once passed)."""
        return self.at - self.clock()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.remaining() <= 0

    def check(self, what: str) -> None:
        """Raise :class:`OutOfTime` naming ``what`` did not finish, once the deadline passed."""
        if self.expired():
            raise OutOfTime(
                f"{what} did not finish within the time this API allows a request:"
                " retry later, or ask for less (a series or an instance at a time)"
            )


def from_context(context: object, clock: Callable[[], float] = time.monotonic) -> Deadline:
    """The deadline of the invocation described by a Lambda ``context``.

    The earlier of the function's own timeout (``get_remaining_time_in_millis``) and API
    Gateway's 29 s, less :data:`STOP_MARGIN_S`. API Gateway's clock started before the
    handler (a cold start's init counts), so its share is counted from a cold start's worst
    case: 29 - 3 s. A context without the method (a test double, a tool) gets the API's.
    """
    gateway = API_GATEWAY_TIMEOUT_S - COLD_START_ALLOWANCE_S
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    seconds = gateway
    if callable(remaining_ms):
        try:
            seconds = min(gateway, float(remaining_ms()) / 1000)
        except (TypeError, ValueError):
            seconds = gateway
    return Deadline.after(seconds - STOP_MARGIN_S, clock)
