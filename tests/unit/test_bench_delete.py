"""The DELETE benchmark (bench/bench_delete.py) runs on a small study of the embedded
backend and says whether it met its target."""

from __future__ import annotations

from bench import bench_delete


def test_the_delete_benchmark_deletes_a_whole_study_and_reports_its_target() -> None:
    found = bench_delete.sqlite(20)
    assert found["instances"] == 20
    assert found["delete_met"] is (found["delete_s"] <= bench_delete.TARGET_SQLITE_S)
