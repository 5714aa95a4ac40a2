"""The side-by-side table compares a QIDO latency only between equal answers."""

from __future__ import annotations

from bench import bench_peer


def _side(ms: float, results: int) -> dict[str, dict[str, float]]:
    return {
        "qido_p50_ms": {"PatientName prefix": ms, "PatientID": ms},
        "qido_results": {"PatientName prefix": results, "PatientID": 1},
    }


def test_a_row_whose_answers_differ_is_not_compared() -> None:
    table = bench_peer.table(_side(1.0, 0), _side(1.5, 6)).splitlines()
    (prefix,) = [r for r in table if "PatientName prefix" in r]
    (lookup,) = [r for r in table if "PatientID" in r]
    assert "not comparable: Orthanc answered 0, this archive 6" in prefix
    assert lookup.endswith("<= 1.0x: miss |")
    assert not any("qido_results" in r for r in table)


def test_equal_answers_are_judged_against_the_target() -> None:
    table = bench_peer.table(_side(2.0, 6), _side(1.0, 6))
    assert table.count("<= 1.0x: pass") == 2
