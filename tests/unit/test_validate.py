"""Validation of Part 10 files received by STOW-RS, over the real corpus."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dicom import metadata
from shared.dicom.validate import InstanceRejected, is_deferred, validate, validate_file
from shared.dicomweb import stow_result
from tests.support import dicom_files


@pytest.mark.parametrize(("ts", "name"), sorted(dicom_files.BY_TRANSFER_SYNTAX.items()))
def test_each_transfer_syntax_is_accepted(ts: str, name: str) -> None:
    instance = validate(dicom_files.data(name))
    assert instance.transfer_syntax == ts
    assert instance.sha256 and instance.study_uid and instance.series_uid


def test_every_well_formed_corpus_file_is_accepted() -> None:
    rejected_names = {r.name for r in dicom_files.REJECTED}
    accepted = 0
    for name in dicom_files.part10_files():
        if name in rejected_names or name.startswith("DICOMDIR"):
            continue
        try:
            validate(dicom_files.data(name))
            accepted += 1
        except InstanceRejected as exc:
            # Only files lacking the identifying UIDs may fail here.
            assert "missing" in exc.message or "valid UID" in exc.message, name
    assert accepted > 150


@pytest.mark.parametrize("case", dicom_files.REJECTED, ids=lambda c: c.name)
def test_broken_files_are_rejected_with_reason(case: dicom_files.Rejected) -> None:
    with pytest.raises(InstanceRejected) as caught:
        validate(dicom_files.data(case.name))
    assert caught.value.reason == case.reason


def test_non_dicom_bytes_are_rejected() -> None:
    with pytest.raises(InstanceRejected):
        validate(b"%PDF-1.4 not dicom" * 20)
    with pytest.raises(InstanceRejected):
        validate(b"")


def test_study_uid_must_match_the_url() -> None:
    data = dicom_files.with_new_uids(study="1.2.3.4")
    assert validate(data, "1.2.3.4").study_uid == "1.2.3.4"
    with pytest.raises(InstanceRejected) as caught:
        validate(data, "1.2.3.5")
    assert caught.value.reason == stow_result.STUDY_UID_MISMATCH
    assert caught.value.sop_instance_uid  # the failed item still names the instance


def test_invalid_uid_is_rejected() -> None:
    data = dicom_files.with_new_uids(SeriesInstanceUID="1.2.3.04")
    with pytest.raises(InstanceRejected, match="SeriesInstanceUID"):
        validate(data)


def test_unknown_transfer_syntax_is_c122() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_files.with_new_uids()))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False, implicit_vr=False, little_endian=True)
    with pytest.raises(InstanceRejected) as caught:
        validate(out.getvalue())
    assert caught.value.reason == stow_result.TRANSFER_SYNTAX_NOT_SUPPORTED


def test_truncating_any_real_file_is_detected() -> None:
    data = dicom_files.data("CT_small.dcm")
    for cut in (len(data) - 1, len(data) - 1000, len(data) // 2):
        with pytest.raises(InstanceRejected):
            validate(data[:cut])


def _rejected(data: bytes, **kwargs: int) -> InstanceRejected:
    with pytest.raises(InstanceRejected) as caught:
        validate(data, **kwargs)
    return caught.value


def _peak_refusing(bomb: bytes, tmp_path: Path) -> tuple[int, str, int]:
    """(reason, message, tracemalloc peak) of validating ``bomb`` in a process of its own:
    threads of this process (a session's local stack polling its bucket) would count too."""
    source = tmp_path / "bomb.dcm"
    source.write_bytes(bomb)
    script = textwrap.dedent(
        f"""
        import json, sys, tracemalloc
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from shared.dicom.validate import InstanceRejected, validate
        data = Path({str(source)!r}).read_bytes()
        tracemalloc.start()
        try:
            validate(data, inflate_limit=32 << 20)
            found = (0, "")
        except InstanceRejected as error:
            found = (error.reason, error.message)
        _, peak = tracemalloc.get_traced_memory()
        print(json.dumps([found[0], found[1], peak]))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    reason, message, peak = json.loads(run.stdout.strip().splitlines()[-1])
    return int(reason), str(message), int(peak)


def test_a_deflate_bomb_is_refused_with_the_numbers_before_it_is_inflated(tmp_path) -> None:
    import random

    from tests.support import fuzz

    bomb = fuzz.deflate_bomb(random.Random(1), b"")  # 1 KB..1 MB inflating to 64 MB..1 GB
    reason, message, peak = _peak_refusing(bomb, tmp_path)
    assert reason == stow_result.TOO_LARGE
    assert "33,554,432 bytes" in message
    assert peak < 4 * len(bomb) + (1 << 20), f"peak {peak:,} B while checking"


def test_a_deflated_file_within_the_limit_is_accepted() -> None:
    assert validate(dicom_files.data("image_dfl.dcm"), inflate_limit=1 << 20).transfer_syntax


@pytest.mark.parametrize("depth", [65, 300, 3000])
def test_sequences_nested_too_deeply_are_refused(depth: int) -> None:
    from tests.support import fuzz

    data = dicom_files.with_new_uids() + fuzz.nested_sequences(depth)
    error = _rejected(data)
    assert error.reason == stow_result.CANNOT_UNDERSTAND
    assert "nested more than 64 levels" in error.message


def test_sequences_nested_64_deep_are_accepted() -> None:
    from tests.support import fuzz

    assert validate(dicom_files.with_new_uids() + fuzz.nested_sequences(64)).sop_instance_uid


def _with_raw(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize("vr", [b"ZZ", b"QL", b"LG", b"GS"])
def test_an_unknown_vr_is_refused_not_crashed_on(vr: bytes) -> None:
    data = dicom_files.with_new_uids(StationName="STATION1")
    error = _rejected(_with_raw(data, b"SH\x08\x00STATION1", vr + b"\x08\x00STATION1"))
    assert error.reason == stow_result.CANNOT_UNDERSTAND
    assert "(0008,1010)" in error.message


def test_a_length_that_is_not_a_multiple_of_the_value_size_is_refused() -> None:
    data = dicom_files.with_new_uids(StationName="STAT1")  # padded to 6 bytes
    error = _rejected(_with_raw(data, b"SH\x06\x00STAT1 ", b"FD\x06\x00STAT1 "))
    assert error.reason == stow_result.CANNOT_UNDERSTAND
    assert "(0008,1010)" in error.message


def test_a_value_json_cannot_carry_is_kept_without_value_in_the_index() -> None:
    from shared.dicom import attributes

    data = dicom_files.with_new_uids(InstanceNumber="7")
    data = _with_raw(data, b"IS\x02\x007 ", b"IS\x02\x001A")
    instance = validate(data)
    doc = attributes.level_json(instance.dataset, ("InstanceNumber",))
    assert doc == {"00200013": {"vr": "IS"}}


def test_a_deflate_bomb_is_refused_whatever_its_meta_group_length_says(tmp_path) -> None:
    import random

    from tests.support import fuzz

    bomb = bytearray(fuzz.deflate_bomb(random.Random(2), b""))
    assert bomb[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    for declared in (0, 4, 0xFFFFFFFF):
        bomb[140:144] = declared.to_bytes(4, "little")
        reason, _, peak = _peak_refusing(bytes(bomb), tmp_path)
        assert reason in (stow_result.TOO_LARGE, stow_result.CANNOT_UNDERSTAND)
        assert peak < 4 * len(bomb) + (1 << 20), f"peak {peak:,} B: the data set was inflated"


# ---------------------------------------------------------------- files on disk: uploads


def _both(data: bytes, path) -> tuple[object, object]:
    """What validate and validate_file make of the same bytes (an instance or the refusal)."""
    path.write_bytes(data)
    results = []
    for check in (lambda: validate(data), lambda: validate_file(path)):
        try:
            results.append(check())
        except InstanceRejected as exc:
            results.append(exc)
    return results[0], results[1]


def _same(memory: object, disk: object) -> None:
    if isinstance(memory, InstanceRejected) or isinstance(disk, InstanceRejected):
        assert type(memory) is type(disk)
        assert memory.reason == disk.reason  # type: ignore[union-attr]
        return
    for field in (
        "sha256",
        "size",
        "sop_instance_uid",
        "study_uid",
        "series_uid",
        "transfer_syntax",
    ):
        assert getattr(memory, field) == getattr(disk, field), field
    assert metadata.instance_json(memory.dataset) == metadata.instance_json(disk.dataset)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", dicom_files.part10_files())
def test_a_file_is_judged_as_its_bytes_are(name: str, tmp_path) -> None:
    """The upload path's check from disk says exactly what STOW's says from memory, and
    builds the same metadata, for every Part 10 file of the corpus (broken ones too)."""
    _same(*_both(dicom_files.data(name), tmp_path / "f.dcm"))


@given(cut=st.integers(min_value=1, max_value=7_200_000))
@settings(max_examples=25, deadline=None)
def test_a_large_file_cut_anywhere_is_refused_from_disk(cut: int) -> None:
    """RG1_UNCR's 7 MB of pixel data stays on disk, yet any truncation is seen."""
    data = dicom_files.data("RG1_UNCR.dcm")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cut.dcm"
        path.write_bytes(data[: len(data) - cut])
        with pytest.raises(InstanceRejected) as caught:
            validate_file(path)
    assert caught.value.reason == dicom_files.CANNOT_UNDERSTAND


def test_large_values_stay_on_disk(tmp_path) -> None:
    path = tmp_path / "rg1.dcm"
    path.write_bytes(dicom_files.data("RG1_UNCR.dcm"))
    instance = validate_file(path)
    assert is_deferred(instance.dataset, 0x7FE00010)
    assert instance.data == b""
    assert instance.size == path.stat().st_size
    document = metadata.instance_json(instance.dataset)
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulk:7FE00010"}
