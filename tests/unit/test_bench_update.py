"""The update benchmark (bench/bench_update.py) runs on a small study of the embedded
backend and says whether it met its target."""

from __future__ import annotations

from bench import bench_update


def test_the_update_benchmark_merges_a_whole_study_and_reports_its_target() -> None:
    found = bench_update.sqlite(12, rounds=1)
    assert found["instances"] == 12
    assert found["met"] is (found["instances_per_s"] >= bench_update.TARGET_INSTANCES_PER_S)
