"""The gateway's audit trail: one record per C-FIND, C-MOVE, C-GET and Storage Commitment
request, in the archive's format (:class:`shared.audit.AuditRecord`, docs/audit.md) and
appended to a JSON-lines file as the local stack's trail is, so ``dicomweb-audit
--data-dir`` reads it.

The calling AE title is the ``keyLabel`` (who asked), ``sourceIp`` its address, ``method``
the DIMSE service, ``route`` the SOP class. A record holds the UIDs the request named or
its answer held and the names of the matching keys, never their values: no patient name
or ID ever reaches the trail.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shared.adapters.audit_log import FileAuditSink
from shared.audit import QUERY, TRANSFERRED, AuditRecord, Touched

log = logging.getLogger("dicomweb-gateway")
#: The archive's meaning of each DIMSE service (PS3.15 A.5.3).
EVENTS = {
    "C-FIND": (QUERY, "E"),
    "C-MOVE": (TRANSFERRED, "R"),
    "C-GET": (TRANSFERRED, "R"),
    "N-ACTION": (("Storage Commitment", "110104"), "R"),
}


@dataclass
class Request:
    """What one request did, filled in while it runs."""

    service: str
    calling: str
    address: str
    sop_class: str
    started: float = field(default_factory=time.perf_counter)
    touched: Touched = field(default_factory=Touched)
    keys: list[str] = field(default_factory=list)
    status: int = 0
    size: int = 0

    def record(self) -> AuditRecord:
        """The request as the archive's audit record."""
        (event, event_id), action = EVENTS[self.service]
        failed = self.status not in (0x0000, 0xFE00) and not 0xB000 <= self.status <= 0xBFFF
        return AuditRecord(
            time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            requestId=str(uuid.uuid4()),
            event=event,
            eventId=event_id,
            action=action,
            outcome=(4 if self.status in (0x0124, 0xA801) or self.status >> 8 == 0xA9 else 8)
            if failed
            else 0,
            status=self.status,
            keyId="",
            keyLabel=self.calling,
            sourceIp=self.address,
            method=self.service,
            route=self.sop_class,
            transaction=f"DIMSE {self.service}",
            bytes=self.size,
            durationMs=round((time.perf_counter() - self.started) * 1000, 1),
            studies=self.touched.studies,
            series=self.touched.series,
            instances=self.touched.instances,
            moreUids=self.touched.more,
            queryKeys=sorted(set(self.keys)),
        )


class Trail:
    """Where the records go (``None``: nowhere); the folder is made on the first record."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sink: FileAuditSink | None = None

    def write(self, request: Request) -> None:
        """Append the record; a trail that cannot be written is logged, not fatal."""
        if self.path is None:
            return
        try:
            if self.sink is None:
                self.sink = FileAuditSink(self.path)
            self.sink.write(request.record().as_dict())
        except OSError:
            log.exception("could not write the audit trail")
