"""Storage Commitment through ``dicomweb-gateway``, with a pynetdicom SCU in front and the
local stack behind: instances the archive holds are committed, others fail with 0x0112;
the report comes on the requesting association while it is open, else on a new one to the
requester's known address."""

from __future__ import annotations

import io
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from shared import keys
from tests.support import dicom_files
from tests.support.gateway_run import GATEWAY_AE, gateway, stow
from tests.support.served import free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("gateway")]

MODALITY = "MODALITY"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


@dataclass
class Site:
    port: int
    report_port: int
    stored: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    workdir: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("gateway-commitment")
    key, _ = keys.generate("gateway-commitment")
    (workdir / "stack").mkdir()
    with served(workdir / "stack", key) as stack:
        files = [dicom_files.with_new_uids("CT_small.dcm") for _ in range(2)]
        stow(stack.base_url, key, files)
        stored = []
        for data in files:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            stored.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        port, report_port = free_port(), free_port()
        with gateway(
            workdir,
            stack.base_url,
            key,
            port,
            workdir / "spool",
            allow=(MODALITY, "FINDONLY:find"),
            extra=["--destination", f"{MODALITY}=127.0.0.1:{report_port}"],
        ):
            yield Site(port, report_port, stored, workdir)


def request(references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = pydicom.uid.generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def commit(
    site: Site, references: list[tuple[str, str]], *, stay: bool, calling: str = MODALITY
) -> tuple[int, Dataset, tuple[int, Dataset] | None]:
    """N-ACTION; its status, the request and, when ``stay``, the report that came on the
    same association (None if none came in 30 s). Without ``stay`` it releases at once."""
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: Any) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1",
        site.port,
        ae_title=GATEWAY_AE,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    assert assoc.is_established
    ds = request(references)
    status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, WELL_KNOWN)
    report = None
    if stay:
        try:
            report = reports.get(timeout=30)
        except queue.Empty:
            report = None
    assoc.release()
    return int(status.Status), ds, report


@contextmanager
def listener(port: int) -> Iterator[queue.Queue[tuple[int, Dataset, str]]]:
    """The requester's Storage Commitment SCU side, taking reports on new associations."""
    reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()

    def on_report(event: Any) -> tuple[int, None]:
        called = str(event.assoc.acceptor.ae_title).strip()
        reports.put((event.event_type, event.event_information, called))
        return 0x0000, None

    ae = AE(ae_title=MODALITY)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        yield reports
    finally:
        server.shutdown()


def uids(items: Any) -> list[str]:
    return sorted(str(item.ReferencedSOPInstanceUID) for item in items or [])


def test_held_instances_commit_others_fail_with_0112_on_the_same_association(site: Site) -> None:
    missing = (site.stored[0][0], pydicom.uid.generate_uid())
    status, sent, report = commit(site, [*site.stored, missing], stay=True)
    assert status == 0x0000
    assert report is not None, "no report on the open association"
    event_type, info = report
    assert event_type == 2
    assert info.TransactionUID == sent.TransactionUID
    assert uids(info.ReferencedSOPSequence) == sorted(i for _, i in site.stored)
    [failed] = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == missing[1]
    assert failed.FailureReason == 0x0112


def test_all_held_is_event_type_1_and_a_wrong_class_is_0119(site: Site) -> None:
    _, _, report = commit(site, site.stored, stay=True)
    assert report is not None
    assert report[0] == 1
    assert "FailedSOPSequence" not in report[1]
    wrong = ("1.2.840.10008.5.1.4.1.1.4", site.stored[0][1])  # MR, but stored as CT
    _, _, report = commit(site, [wrong], stay=True)
    assert report is not None
    assert report[1].FailedSOPSequence[0].FailureReason == 0x0119


def test_after_release_the_report_comes_on_a_new_association(site: Site) -> None:
    with listener(site.report_port) as reports:
        status, sent, _ = commit(site, site.stored[:1], stay=False)
        assert status == 0x0000
        event_type, info, called = reports.get(timeout=30)
    assert event_type == 1
    assert called == MODALITY
    assert info.TransactionUID == sent.TransactionUID
    assert uids(info.ReferencedSOPSequence) == [site.stored[0][1]]


def test_a_malformed_request_is_0115_and_an_ae_without_store_0124(site: Site) -> None:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", site.port, ae_title=GATEWAY_AE)
    empty = Dataset()
    empty.TransactionUID = "not a uid"
    status, _ = assoc.send_n_action(empty, 1, StorageCommitmentPushModel, WELL_KNOWN)
    assoc.release()
    assert status.Status == 0x0115
    status, _, _ = commit(site, site.stored, stay=False, calling="FINDONLY")
    assert status == 0x0124
