"""Validation of Part 10 files received by STOW-RS, over the real corpus."""

from __future__ import annotations

import io

import pydicom
import pytest

from shared.dicom.validate import InstanceRejected, validate
from shared.dicomweb import stow_result
from tests import dicom_files


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
