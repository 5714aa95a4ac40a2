"""API Gateway usage plans, emulated: a token bucket and a daily quota per usage identifier.

A method that requires an API key is metered against the plan of the caller's API key (with
the API's key source AUTHORIZER: the ``usageIdentifierKey`` the authorizer returned). The
plan's throttle is a token bucket: ``burst`` tokens when full, refilled at ``rate`` tokens a
second, one token per request; its quota counts the requests admitted per UTC day. Past
either, API Gateway answers 429 itself (gateway responses THROTTLED and QUOTA_EXCEEDED); an
identifier that is on no plan gets 403 (INVALID_API_KEY).

Which plan an identifier is on: the template's own API keys (``AWS::ApiGateway::ApiKey``
with a ``Value`` and its ``UsagePlanKey``: the legacy key) first, then the key entries of
the stack's key store: a key's own limits (``dicomweb-apikeys --local limits``) or the
default plan (the ``DefaultUsagePlanId`` output), re-read every second and whenever an
identifier is on none (a key just made). The counters live in one SQLite file that every
worker process of the local stack shares, so limits hold whatever process answers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from local.template import UsagePlan
from shared import keys

THROTTLED, QUOTA_EXCEEDED, INVALID_API_KEY = "THROTTLED", "QUOTA_EXCEEDED", "INVALID_API_KEY"


@dataclass(frozen=True)
class Usage:
    """What is known of one identifier: its bucket and the requests admitted on ``day``."""

    tokens: float
    updated: float
    day: str
    used: int


def take(tokens: float, updated: float, now: float, rate: float, burst: int) -> tuple[bool, float]:
    """One request against a token bucket last seen at ``updated`` with ``tokens`` in it.

    Return whether it is admitted and the tokens left at ``now``.
    """
    tokens = min(float(burst), tokens + max(0.0, now - updated) * rate)
    if tokens >= 1.0:
        return True, tokens - 1.0
    return False, tokens


def utc_day(now: float) -> str:
    """The UTC date of a time.time() value: quotas renew at 00:00 UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def decide(usage: Usage | None, plan: UsagePlan, now: float) -> tuple[str | None, Usage]:
    """Meter one request: (None when admitted, else THROTTLED or QUOTA_EXCEEDED; new usage).

    The quota is checked first and counts admitted requests only; a request refused for the
    quota takes no token.
    """
    day = utc_day(now)
    burst = plan.burst if plan.burst is not None else 0
    if usage is None:
        usage = Usage(tokens=float(burst), updated=now, day=day, used=0)
    used = usage.used if usage.day == day else 0
    updated = max(now, usage.updated)
    if plan.quota is not None and used >= plan.quota:
        return QUOTA_EXCEEDED, Usage(usage.tokens, usage.updated, day, used)
    tokens = usage.tokens
    if plan.rate is not None and plan.burst is not None:
        admitted, tokens = take(usage.tokens, usage.updated, now, plan.rate, plan.burst)
        if not admitted:
            return THROTTLED, Usage(tokens, updated, day, used)
    return None, Usage(tokens, updated, day, used + 1)


class Meter:
    """The usage of every identifier, in SQLite: a file shared by the stack's processes, or
    in memory for a single-process stack. Each request is metered in one transaction."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    def _connect(self) -> sqlite3.Connection:
        import os  # noqa: PLC0415 - only to notice a fork

        if self._connection is None or self._pid != os.getpid():  # a forked worker: its own
            target = str(self._path) if self._path is not None else ":memory:"
            connection = sqlite3.connect(
                target, timeout=10, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")  # counters, not records
            connection.execute(
                "CREATE TABLE IF NOT EXISTS usage (identifier TEXT PRIMARY KEY,"
                " tokens REAL NOT NULL, updated REAL NOT NULL, day TEXT NOT NULL,"
                " used INTEGER NOT NULL)"
            )
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def admit(self, identifier: str, plan: UsagePlan) -> str | None:
        """Meter one request of ``identifier`` on ``plan``: None, THROTTLED or QUOTA_EXCEEDED."""
        if plan.quota is None and (plan.rate is None or plan.burst is None):
            return None  # a plan without limits: nothing to count
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT tokens, updated, day, used FROM usage WHERE identifier = ?",
                    (identifier,),
                ).fetchone()
                usage = (
                    Usage(float(row[0]), float(row[1]), str(row[2]), int(row[3])) if row else None
                )
                verdict, after = decide(usage, plan, self._clock())
                connection.execute(
                    "INSERT OR REPLACE INTO usage VALUES (?, ?, ?, ?, ?)",
                    (identifier, after.tokens, after.updated, after.day, after.used),
                )
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        return verdict


class UsagePlans:
    """Which plan an identifier is on, and the meter that holds every identifier to its plan."""

    def __init__(  # noqa: PLR0913 - keyword-only parts
        self,
        *,
        plans: Mapping[str, UsagePlan],
        api_keys: Mapping[str, str],
        default_plan: str | None,
        entries: Callable[[], list[keys.KeyEntry]] = list,
        meter: Meter | None = None,
        reload_after: float = 1.0,
    ) -> None:
        self._plans = dict(plans)
        self._api_keys = dict(api_keys)
        self._default = plans.get(default_plan) if default_plan else None
        self._entries = entries
        self.meter = meter or Meter(None)
        self._reload_after = reload_after
        self._loaded: tuple[float, dict[str, UsagePlan]] | None = None
        self._lock = threading.Lock()

    def _by_identifier(self, *, fresh: bool = False) -> dict[str, UsagePlan]:
        now = time.monotonic()
        with self._lock:
            if fresh or self._loaded is None or now - self._loaded[0] >= self._reload_after:
                found: dict[str, UsagePlan] = {}
                for entry in self._entries():
                    if not entry.usage_key:
                        continue
                    if entry.limits is not None:
                        limits = entry.limits
                        found[entry.usage_key] = UsagePlan(
                            f"key-{entry.id}", limits.rate, limits.burst, limits.quota
                        )
                    elif self._default is not None:
                        found[entry.usage_key] = self._default
                self._loaded = (now, found)
            return self._loaded[1]

    def plan_for(self, identifier: str) -> UsagePlan | None:
        """The plan of an identifier; None when it is on none."""
        plan_name = self._api_keys.get(identifier)
        if plan_name is not None:
            return self._plans.get(plan_name)
        plan = self._by_identifier().get(identifier)
        if plan is None:  # a key made a moment ago (the authorizer has just accepted it)
            plan = self._by_identifier(fresh=True).get(identifier)
        return plan

    def admit(self, identifier: str | None) -> str | None:
        """Meter one request: None when admitted, else the gateway response type."""
        plan = self.plan_for(identifier) if identifier else None
        if plan is None or identifier is None:
            return INVALID_API_KEY
        return self.meter.admit(identifier, plan)
