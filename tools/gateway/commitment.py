"""Storage Commitment Push Model SCP (PS3.4 Annex J).

An N-ACTION (Request Storage Commitment, action type 1) is answered at once: 0x0000 when
its Action Information holds a Transaction UID and a Referenced SOP Sequence, 0x0115
(invalid argument) otherwise. The instances are then looked up in the archive by QIDO-RS
(SOP Instance UID lists; what the spool holds counts for nothing), and an N-EVENT-REPORT
tells the result: event type 1 when every instance is held, 2 otherwise, with the Failed
SOP Sequence giving each missing instance Failure Reason 0x0112 (no such object instance),
an instance held under another SOP class 0x0119 (class/instance conflict), and 0x0110
(processing failure) when the archive could not be asked.

The report goes on the requesting association when it is still open, otherwise on a new
association to the requester, whose address must be a known destination (``--destination``,
the same list C-MOVE uses); the gateway proposes the SOP class with the SCP role
(PS3.4 J.3.3, role selection)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, build_context, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from shared.dicom import quiet  # noqa: F401 - no dataset values in the logs
from shared.dicomweb.uids import valid_uid
from tools.gateway.access import Access
from tools.gateway.archive import Archive, ArchiveError
from tools.gateway.audit import Request, Trail
from tools.gateway.find import NOT_AUTHORISED, path_aet, request_of
from tools.gateway.guard import no_delay_on_open
from tools.gateway.plan import Destination

log = logging.getLogger("dicomweb-gateway")
#: Seconds a report sent on the requester's own association waits for its answer before it
#: goes on a new association (the requester may have been releasing).
SAME_ASSOCIATION_S = 5.0

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
REQUEST_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs
SUCCESS = 0x0000
INVALID_ARGUMENT, NO_SUCH_ACTION = 0x0115, 0x0123
PROCESSING_FAILURE, NO_SUCH_OBJECT, CLASS_INSTANCE_CONFLICT = 0x0110, 0x0112, 0x0119
CHUNK = 40  # SOP Instance UIDs per QIDO-RS request


@dataclass(frozen=True)
class Commitment:
    """A storage commitment request: its transaction and the instances it names."""

    transaction: str
    references: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)


def parse(info: Dataset | None) -> Commitment | None:
    """The request in an N-ACTION's Action Information (None when it is not one)."""
    try:
        transaction = str(info.TransactionUID) if info is not None else ""
        items = info.ReferencedSOPSequence if info is not None else []
        references = tuple(
            (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)) for item in items
        )
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    if not valid_uid(transaction) or not references:
        return None
    if not all(valid_uid(c) and valid_uid(i) for c, i in references):
        return None
    return Commitment(transaction, references)


def held(archive: Archive, aet: str, uids: list[str]) -> dict[str, str] | None:
    """The SOP Class UID of each of ``uids`` the archive holds (None: it could not say)."""
    found: dict[str, str] = {}
    for start in range(0, len(uids), CHUNK):
        group = "\\".join(uids[start : start + CHUNK])

        def query(offset: int, limit: int, group: str = group) -> str:
            return (
                f"SOPInstanceUID={group}&includefield=00080016&offset={offset}&limit={limit}"
            ).replace("\\", "%5C")

        try:
            for result in archive.search(aet, "instances", query):
                uid = _first(result, "00080018")
                if uid:
                    found[uid] = _first(result, "00080016")
        except ArchiveError as exc:
            log.warning("storage commitment: the archive could not be asked: %s", exc)
            return None
    return found


def _first(result: Mapping[str, Any], tag: str) -> str:
    element = result.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]) if isinstance(values, list) and values else ""


def report(commitment: Commitment, holding: Mapping[str, str] | None) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's event type and Event Information."""
    ds = Dataset()
    ds.TransactionUID = commitment.transaction
    done: list[Dataset] = []
    failed: list[Dataset] = []
    for sop_class, sop_instance in commitment.references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if holding is None:
            item.FailureReason = PROCESSING_FAILURE
        elif sop_instance not in holding:
            item.FailureReason = NO_SUCH_OBJECT
        elif holding[sop_instance] and holding[sop_instance] != sop_class:
            item.FailureReason = CLASS_INSTANCE_CONFLICT
        (failed if "FailureReason" in item else done).append(item)
    if done:
        ds.ReferencedSOPSequence = done
    if failed:
        ds.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_COMMITTED), ds


def action_handler(  # noqa: PLR0913 - the gateway's parts
    archive: Archive,
    ae: AE,
    access: Access,
    trail: Trail,
    destinations: Mapping[str, Destination],
    *,
    association: Mapping[str, Any] | None = None,
) -> Callable[[Any], tuple[int, Dataset | None]]:
    """The ``EVT_N_ACTION`` handler: answers, then checks and reports in a thread."""
    committer = _Committer(archive, ae, trail, destinations, dict(association or {}))

    def handle(event: Any) -> tuple[int, Dataset | None]:
        request = request_of(event, "N-ACTION")
        status, commitment = _accepted(event, access.may(request.calling, "store"))
        if commitment is None:
            request.status = status
            trail.write(request)
            return status, None
        threading.Thread(
            target=committer.commit,
            args=(event.assoc, commitment, request),
            name="storage-commitment",
            daemon=True,
        ).start()
        return SUCCESS, None

    return handle


def _accepted(event: Any, allowed: bool) -> tuple[int, Commitment | None]:
    """The N-ACTION's status and, when it is accepted, its request."""
    if not allowed:
        return NOT_AUTHORISED, None
    if event.action_type != REQUEST_COMMITMENT:
        return NO_SUCH_ACTION, None
    try:
        info = event.action_information
    except Exception:  # noqa: BLE001 - a data set pynetdicom cannot decode
        return INVALID_ARGUMENT, None
    commitment = parse(info)
    return (SUCCESS, commitment) if commitment is not None else (INVALID_ARGUMENT, None)


@dataclass
class _Committer:
    """Checks a request against the archive and delivers the report."""

    archive: Archive
    ae: AE
    trail: Trail
    destinations: Mapping[str, Destination]
    association: dict[str, Any]

    def commit(self, assoc: Any, commitment: Commitment, request: Request) -> None:
        """Check, report, audit (in its own thread)."""
        aet = path_aet(request.calling, str(self.ae.ae_title))
        holding = held(self.archive, aet, [i for _, i in commitment.references])
        event_type, info = report(commitment, holding)
        request.touched.add("instances", [i for _, i in commitment.references])
        request.status = SUCCESS if event_type == ALL_COMMITTED else 0xB000
        try:
            delivered = self._deliver(assoc, request.calling, event_type, info)
        except Exception:
            log.exception("storage commitment report to %s failed", request.calling)
            delivered = False
        if not delivered:
            request.status = PROCESSING_FAILURE
            log.warning("storage commitment report not delivered to %s", request.calling)
        self.trail.write(request)

    def _deliver(self, assoc: Any, calling: str, event_type: int, info: Dataset) -> bool:
        """On the requester's association while it is open, else on a new one. A requester
        that releases right after its N-ACTION may do so while the report is on its way:
        it ignores a report received during its release (pynetdicom does), so the report
        waits :data:`SAME_ASSOCIATION_S` at most for its answer there, then goes on a new
        association once the first has ended."""
        if assoc.is_established:
            timeout = assoc.dimse_timeout
            assoc.dimse_timeout = min(timeout or SAME_ASSOCIATION_S, SAME_ASSOCIATION_S)
            try:
                if self._send(assoc, event_type, info):
                    return True
            finally:
                assoc.dimse_timeout = timeout
            if assoc.is_established:
                return False  # open, and no answer
        return self._send_anew(calling, event_type, info)

    @staticmethod
    def _send(assoc: Any, event_type: int, info: Dataset) -> bool:
        """Send the report; True once the requester answered (whatever its status)."""
        status, _ = assoc.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        if "Status" not in status:
            return False
        if status.Status != SUCCESS:
            log.warning("the storage commitment report was answered 0x%04X", status.Status)
        return True

    def _send_anew(self, calling: str, event_type: int, info: Dataset) -> bool:
        target = self.destinations.get(calling)
        if target is None:
            log.warning("storage commitment: %s is not a known destination", calling)
            return False
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid, role.scu_role, role.scp_role = STORAGE_COMMITMENT, False, True
        assoc = self.ae.associate(
            target.host,
            target.port,
            contexts=[build_context(STORAGE_COMMITMENT)],
            ae_title=calling,
            ext_neg=[role],
            evt_handlers=[(evt.EVT_CONN_OPEN, no_delay_on_open)],
            **self.association,
        )
        if not assoc.is_established:
            return False
        try:
            return self._send(assoc, event_type, info)
        finally:
            assoc.release()
