"""The retrieve service's up-front refusals (before any instance is read)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import NotAcceptable, PayloadTooLarge
from shared.ports import InstanceRow
from shared.services import retrieve

J2K = "1.2.840.10008.1.2.4.90"
ELE = "1.2.840.10008.1.2.1"


class _Untouched:
    """An object store that fails the test if anything is read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name}) before the request was refused")


def _row(number: int, *, side: int = 4096, bits: int = 16, ts: str = J2K) -> InstanceRow:
    attrs = {
        "00280010": {"vr": "US", "Value": [side]},
        "00280011": {"vr": "US", "Value": [side]},
        "00280100": {"vr": "US", "Value": [bits]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
    }
    return InstanceRow("1.2", "1.2.3", f"1.2.3.{number}", attrs=attrs, transfer_syntax=ts)


def _delivery() -> retrieve.Delivery:
    return retrieve.Delivery(
        store=_Untouched(),  # type: ignore[arg-type]
        inline_limit=4_500_000,
        presign_ttl=300,
        anonymizer=lambda data: data,
    )


def test_a_study_over_the_transcoding_budget_is_413_before_any_read() -> None:
    rows = [_row(i) for i in range(9)]  # 9 x 32 MiB of 16-bit pixels
    with pytest.raises(PayloadTooLarge, match="series by series"):
        retrieve.retrieve_rs(rows, transfer_syntax=ELE, anonymize=False, delivery=_delivery())


def test_instances_already_in_the_asked_syntax_do_not_count() -> None:
    rows = [_row(i, ts=ELE) for i in range(20)]
    with pytest.raises(AssertionError, match="store was used"):  # served, not refused
        retrieve.retrieve_rs(rows, transfer_syntax=ELE, anonymize=False, delivery=_delivery())


def test_a_single_large_instance_is_always_tried() -> None:
    with pytest.raises(AssertionError, match="store was used"):
        retrieve.retrieve_rs(
            [_row(1, side=12000)], transfer_syntax=ELE, anonymize=False, delivery=_delivery()
        )


def test_jpeg_baseline_of_16_bit_instances_is_406_before_any_read() -> None:
    with pytest.raises(NotAcceptable, match="8-bit"):
        retrieve.retrieve_rs(
            [_row(1, side=512)],
            transfer_syntax="1.2.840.10008.1.2.4.50",
            anonymize=False,
            delivery=_delivery(),
        )


def test_an_unsupported_target_is_406_unless_already_stored_so() -> None:
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    with pytest.raises(NotAcceptable, match="not supported"):
        retrieve.retrieve_rs(
            [_row(1, side=512)], transfer_syntax=jpeg_ls, anonymize=False, delivery=_delivery()
        )
    with pytest.raises(AssertionError, match="store was used"):
        retrieve.retrieve_rs(
            [_row(1, side=512, ts=jpeg_ls)],
            transfer_syntax=jpeg_ls,
            anonymize=False,
            delivery=_delivery(),
        )
