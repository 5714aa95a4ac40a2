"""The gateway benchmark's table states each ratio against its target."""

from __future__ import annotations

from bench import bench_gateway


def test_the_table_holds_each_figure_and_ratio() -> None:
    side = {"find_p50_ms": 10.0, "find_only_p50_ms": 8.0, "move_instances_per_s": 100.0}
    report = {
        "orthanc": side,
        "gateway": {**side, "move_instances_per_s": 80.0},
        "ratios": {"find_p50": 1.0, "find_only_p50": 1.0, "move_rate": 0.8},
    }
    rows = bench_gateway.table(report).splitlines()
    assert len(rows) == 5
    assert "| 100.0 | 80.0 | 0.8x | >= 0.8x |" in rows[-1]
