"""Usage plans of the local stack: token bucket, daily quota, plan of each identifier."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.api_gateway import usage
from local.template import UsagePlan, load
from shared import keys

DAY = 86_400.0
NOON = 1_790_000_000.0 - 1_790_000_000.0 % DAY + DAY / 2  # 12:00 UTC of some day


def run(plan: UsagePlan, times: list[float]) -> list[str | None]:
    """Verdicts of requests at ``times`` (non-decreasing), one identifier."""
    state: usage.Usage | None = None
    verdicts = []
    for now in times:
        verdict, state = usage.decide(state, plan, now)
        verdicts.append(verdict)
    return verdicts


request_times = st.lists(
    st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60
).map(lambda gaps: list(itertools.accumulate(gaps, initial=NOON))[1:])
rates = st.floats(min_value=0.1, max_value=50, allow_nan=False)
bursts = st.integers(min_value=1, max_value=20)


@settings(max_examples=300, deadline=None)
@given(times=request_times, rate=rates, burst=bursts)
def test_never_more_than_burst_plus_rate_times_the_window(
    times: list[float], rate: float, burst: int
) -> None:
    verdicts = run(UsagePlan("p", rate, burst), times)
    admitted = [t for t, v in zip(times, verdicts, strict=True) if v is None]
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6


@settings(max_examples=200, deadline=None)
@given(rate=rates, burst=bursts, n=st.integers(min_value=1, max_value=40))
def test_a_full_bucket_admits_the_burst_at_once_then_the_rate(
    rate: float, burst: int, n: int
) -> None:
    plan = UsagePlan("p", rate, burst)
    assert run(plan, [NOON] * (burst + 1)) == [None] * burst + [usage.THROTTLED]
    # One request per token refilled (plus 10 us: times near 1.8e9 s carry 0.2 us of rounding).
    paced = [NOON + k * (1 / rate + 1e-5) for k in range(n)]
    assert run(plan, paced) == [None] * n


@settings(max_examples=200, deadline=None)
@given(times=request_times, quota=st.integers(min_value=0, max_value=30))
def test_the_quota_counts_admitted_requests_per_utc_day(times: list[float], quota: int) -> None:
    plan = UsagePlan("p", None, None, quota)
    verdicts = run(plan, times)
    assert verdicts.count(None) == min(quota, len(times))
    assert set(verdicts) <= {None, usage.QUOTA_EXCEEDED}
    next_day = run(plan, [*times, times[-1] + DAY])[-1]
    assert next_day == (None if quota else usage.QUOTA_EXCEEDED)


def test_throttled_requests_do_not_count_against_the_quota() -> None:
    plan = UsagePlan("p", 1.0, 1, 2)
    assert run(plan, [NOON, NOON, NOON, NOON + 1, NOON + 2]) == [
        None,
        usage.THROTTLED,
        usage.THROTTLED,
        None,
        usage.QUOTA_EXCEEDED,
    ]


@pytest.fixture
def meters(tmp_path: Path) -> Iterator[tuple[usage.Meter, usage.Meter, list[float]]]:
    clock = [NOON]
    path = tmp_path / "usage.sqlite3"
    yield usage.Meter(path, lambda: clock[0]), usage.Meter(path, lambda: clock[0]), clock


def test_processes_sharing_the_file_share_the_bucket_and_the_quota(meters) -> None:
    first, second, clock = meters
    plan = UsagePlan("p", 1.0, 2, 3)
    assert first.admit("k", plan) is None
    assert second.admit("k", plan) is None
    assert first.admit("k", plan) == usage.THROTTLED
    assert second.admit("other", plan) is None  # its own bucket
    clock[0] += 1
    assert second.admit("k", plan) is None
    clock[0] += 10
    assert first.admit("k", plan) == usage.QUOTA_EXCEEDED


def test_a_plan_without_limits_is_not_counted(tmp_path: Path) -> None:
    meter = usage.Meter(tmp_path / "usage.sqlite3")
    assert all(meter.admit("legacy", UsagePlan("p")) is None for _ in range(1000))
    assert not (tmp_path / "usage.sqlite3").exists()


def test_identifiers_are_on_the_template_plans_or_their_own() -> None:
    template = load()
    legacy_value = next(iter(template.api_keys))
    default = template.outputs["DefaultUsagePlanId"]
    _, plain = keys.generate("old")
    _, entry = keys.generate("viewer")
    on_default = dataclasses.replace(entry, usage_key=keys.new_usage_key())
    _, other = keys.generate("script")
    own = dataclasses.replace(
        other, usage_key=keys.new_usage_key(), limits=keys.Limits(2.0, 4, 100)
    )
    entries = [plain, on_default, own]
    plans = usage.UsagePlans(
        plans=template.usage_plans,
        api_keys=template.api_keys,
        default_plan=default,
        entries=lambda: entries,
        reload_after=0,
    )
    legacy_plan = plans.plan_for(legacy_value)
    assert legacy_plan is not None and legacy_plan.rate is None and legacy_plan.quota is None
    assert plans.plan_for(on_default.usage_key) == template.usage_plans[default]
    assert plans.plan_for(own.usage_key) == UsagePlan(f"key-{own.id}", 2.0, 4, 100)
    assert plans.admit("o3u_unknown") == usage.INVALID_API_KEY
    assert plans.admit(None) == usage.INVALID_API_KEY
    entries.remove(own)  # revoked
    assert plans.admit(own.usage_key) == usage.INVALID_API_KEY


def test_the_template_plans_are_read_with_their_parameters() -> None:
    template = load(parameter_overrides={"KeyRateLimit": "7", "KeyDailyQuota": "500"})
    default = template.usage_plans[template.outputs["DefaultUsagePlanId"]]
    assert (default.rate, default.burst, default.quota) == (7.0, 100, 500)
    assert load().usage_plans[template.outputs["DefaultUsagePlanId"]].quota is None
    assert {route.api_key_required for route in template.routes if route.method == "OPTIONS"} == {
        False
    }
    assert all(route.api_key_required for route in template.routes if route.method != "OPTIONS")
