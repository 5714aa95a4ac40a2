"""The pack codec benchmark (bench/bench_pack_codecs.py) measures every candidate on a few
small native files (signed CT, big-endian 16-bit RGB in planar order, 1-bit SEG, 32-bit dose)
and every codec that takes a frame gives back its stored bytes exactly."""

from __future__ import annotations

from bench import bench_pack_codecs

NAMES = ["CT_small.dcm", "SC_rgb_expb_16bit.dcm", "liver_1frame.dcm", "rtdose_1frame.dcm"]


def test_every_codec_round_trips_the_stored_frames_exactly() -> None:
    found = bench_pack_codecs.run(NAMES, repeat=1)
    assert found["files"] == len(NAMES)
    assert found["frames"] == len(NAMES)
    names = {c.name for c in bench_pack_codecs.codecs()}
    assert set(found["codecs"]) == names
    assert {"jpegls", "htj2k", "zstd-3", "blosc2-zstd-shuffle"} <= names
    for name, summary in found["codecs"].items():
        assert summary["lossless_failures"] == [], name
        assert summary["frames"] == len(NAMES)
        assert summary["ratio"] > 1, name
        assert summary["encode_ms_p50"] > 0 and summary["decode_ms_p50"] > 0
        assert summary["decode_mb_s"] > 0
    # JPEG-LS stops at 16 bits: the 32-bit dose is unsupported, not a failure
    assert found["codecs"]["jpegls"]["unsupported"] == ["rtdose_1frame.dcm"]
    assert found["codecs"]["htj2k"]["unsupported"] == []
    assert set(found["groups"]) == {"CT 16/16", "OT 16/16 x3", "SEG 1/1", "RTDOSE 32/32"}
    assert "| jpegls |" in bench_pack_codecs.markdown(found)


def test_a_frame_that_does_not_round_trip_is_reported() -> None:
    frames = bench_pack_codecs.corpus(["CT_small.dcm"])
    broken = bench_pack_codecs.Codec(
        "broken", lambda f: f.raw, lambda f, stream: stream[:-1] + b"\0"
    )
    rows = bench_pack_codecs.measure(broken, frames, 1)
    assert bench_pack_codecs.summary(rows)["lossless_failures"] == ["CT_small.dcm#0: not lossless"]
