"""Storage commitment requests and reports (tools/gateway/commitment.py), no network."""

from __future__ import annotations

from pydicom import Dataset

from tools.gateway import commitment

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def action(transaction: str = "1.2.3", *refs: tuple[str, str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def test_a_request_needs_a_transaction_and_valid_references() -> None:
    found = commitment.parse(action("1.2.3", (CT, "1.9.1")))
    assert found == commitment.Commitment("1.2.3", ((CT, "1.9.1"),))
    assert commitment.parse(action("1.2.3")) is None  # nothing referenced
    assert commitment.parse(action("x", (CT, "1.9.1"))) is None
    assert commitment.parse(action("1.2.3", (CT, "1.9.x"))) is None
    assert commitment.parse(Dataset()) is None
    assert commitment.parse(None) is None


def test_the_report_fails_what_is_not_held_and_what_is_held_as_another_class() -> None:
    request = commitment.Commitment("1.2.3", ((CT, "1.1"), (CT, "1.2"), (MR, "1.3")))
    event_type, ds = commitment.report(request, {"1.1": CT, "1.3": CT})
    assert event_type == commitment.SOME_FAILED
    assert ds.TransactionUID == "1.2.3"
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == ["1.1"]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in ds.FailedSOPSequence] == [
        ("1.2", 0x0112),
        ("1.3", 0x0119),
    ]
    event_type, ds = commitment.report(request, None)  # the archive could not be asked
    assert event_type == commitment.SOME_FAILED
    assert {i.FailureReason for i in ds.FailedSOPSequence} == {0x0110}
    assert "ReferencedSOPSequence" not in ds
    event_type, ds = commitment.report(request, {"1.1": CT, "1.2": CT, "1.3": MR})
    assert event_type == commitment.ALL_COMMITTED
    assert "FailedSOPSequence" not in ds
