"""The cost model (tools/cost.py): monotone in every workload figure, only the fixed cost
for no workload, and Intelligent-Tiering cheaper than Standard for unread data exactly
where its per-object fees are paid back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import cost
from tools import prices as p

FIGURES = (
    "studies_per_month",
    "instances_per_study",
    "mb_per_instance",
    "reads_per_study",
    "months_kept",
)
FIXED = 2 * p.SECRET_MONTH.usd

workloads = st.builds(
    cost.Workload,
    studies_per_month=st.floats(0, 50_000),
    instances_per_study=st.floats(0, 3_000),
    mb_per_instance=st.floats(0, 60),
    reads_per_study=st.floats(0, 20),
    months_kept=st.integers(0, 180),
)
options = st.builds(
    cost.Options,
    tiering_after_days=st.integers(0, 400),
    read_as=st.sampled_from(["viewer", "retrieve"]),
)


def _bigger(w: cost.Workload, name: str, by: float) -> cost.Workload:
    value = getattr(w, name)
    return dataclasses.replace(
        w, **{name: int(value + by) if name == "months_kept" else value + by}
    )


@settings(max_examples=300, deadline=None)
@given(workloads, options, st.sampled_from(FIGURES), st.floats(0.01, 1_000))
def test_the_bill_never_falls_when_a_workload_figure_grows(
    w: cost.Workload, o: cost.Options, name: str, by: float
) -> None:
    more = _bigger(w, name, max(by, 1) if name == "months_kept" else by)
    for bill in (cost.serverless, cost.healthimaging):
        before, after = bill(w, o).total, bill(more, o).total
        assert after >= before - 1e-9 * max(1.0, before), (bill.__name__, name, before, after)


@settings(max_examples=100, deadline=None)
@given(workloads, options)
def test_no_studies_cost_only_the_fixed_secrets(w: cost.Workload, o: cost.Options) -> None:
    idle = dataclasses.replace(w, studies_per_month=0)
    bill = cost.serverless(idle, o)
    assert bill.total == pytest.approx(FIXED)
    assert {k for k, v in bill.lines.items() if v} == {"Secrets Manager secrets (2)"}
    assert cost.healthimaging(idle, o).total == 0


def test_the_fixed_cost_is_the_two_secrets() -> None:
    assert cost.serverless(cost.Workload(0, 0, 0, 0, 0)).total == pytest.approx(FIXED)


@settings(max_examples=300, deadline=None)
@given(
    w=workloads.filter(lambda w: w.mb_per_instance >= 1),
    days=st.integers(1, 365),
    extra_months=st.integers(0, 120),
)
def test_tiering_unread_data_costs_no_more_once_its_fees_are_paid_back(
    w: cost.Workload, days: int, extra_months: int
) -> None:
    # Objects of 1 MB and more, kept at least 4 months beyond the transition.
    months = days // 30 + 4 + extra_months
    unread = dataclasses.replace(w, reads_per_study=0, months_kept=months)
    standard = cost.serverless(unread, cost.Options(tiering_after_days=0)).total
    tiered = cost.serverless(unread, cost.Options(tiering_after_days=days)).total
    assert tiered <= standard + 1e-9 * standard


def test_tiering_small_objects_or_a_short_keep_costs_more_and_the_model_says_so() -> None:
    # The monitoring fee per object outweighs even the lowest rate's saving for objects
    # just over 128 KB (break-even near 138 KB); a 1 MB object kept 2 months never reaches
    # the cheaper tiers but pays the transition and the monitoring.
    for w in (
        cost.Workload(1_000, 100, 0.13, 0, 84),
        cost.Workload(1_000, 100, 1.0, 0, 2),
    ):
        standard = cost.serverless(w).total
        tiered = cost.serverless(w, cost.Options(tiering_after_days=30)).total
        assert tiered > standard, w


def test_objects_below_128_kb_are_never_tiered() -> None:
    w = cost.Workload(1_000, 100, 0.1, 0, 84)
    assert cost.serverless(w, cost.Options(tiering_after_days=30)).total == pytest.approx(
        cost.serverless(w).total
    )


def test_a_stow_instance_is_one_put_one_read_one_transaction_plus_a_new_studys_postings() -> None:
    w = cost.Workload(1, 1, 1.0, 0, 0)
    bill = cost.serverless(w)
    # and two GET-class reads: the object once indexed, its (absent) rejection record
    assert bill.lines["S3 requests"] == pytest.approx(
        p.S3_PUT.usd + cost.STOW_S3_READS * p.S3_GET.usd
    )
    writes = cost.STOW_WRITE_UNITS + cost.GSI_WRITES_PER_INSTANCE + cost.GSI_WRITES_PER_STUDY
    writes += cost.GSI_WRITES_PER_SERIES * cost.SERIES_PER_STUDY
    writes += cost.SUBSTRING_WRITE_UNITS_PER_STUDY
    assert bill.lines["DynamoDB writes"] == pytest.approx(writes * p.DDB_WRITE_UNIT.usd)
    assert bill.lines["DynamoDB reads"] == pytest.approx(cost.STOW_READ_UNITS * p.DDB_READ_UNIT.usd)
    assert len(cost.STOW_ITEM_KB) == 5


def test_healthimaging_bills_an_image_set_at_least_5_mb() -> None:
    tiny = cost.healthimaging(cost.Workload(1_000, 1, 0.5, 0, 1)).lines
    assert tiny["HealthImaging storage"] == pytest.approx(
        1_000 * 5 / 1024 * p.HI_FREQUENT_GB_MONTH.usd
    )


def test_every_price_names_its_source_and_how_it_was_seen() -> None:
    for name, price in p.table():
        assert price.usd > 0, name
        assert price.source, name
        assert price.seen in ("aws", "third-party", "unverified"), name


@pytest.mark.parametrize("document", ["README.md", "docs/cost.md"])
def test_the_documented_table_is_what_the_model_prints(document: str) -> None:
    text = (Path(__file__).resolve().parents[2] / document).read_text(encoding="utf-8")
    for row in cost.reference_table().splitlines()[2:]:
        assert row in text, f"{document}'s table is stale: dicomweb-cost --table\n{row}"
