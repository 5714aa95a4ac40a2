"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): the instances the identifier names are listed
by QIDO-RS, read from the archive by WADO-RS (a series per request, read part by part, one
instance in memory at a time; instance by instance at IMAGE level) and sent by C-STORE
sub-operations: to the move destination on an association of their own (C-MOVE), or over
the requesting association (C-GET). The next instances are read while one is sent
(:data:`AHEAD`), so memory holds at most three instances.

pynetdicom runs the sub-operations and builds the responses: pending ones with the counts,
the final one with the counts and, when any failed, the Failed SOP Instance UID List
(0xB000 when some failed, 0xA702 when all did). An instance is sent in its stored transfer
syntax when the receiver accepted it, otherwise in one the archive transcodes to
(:func:`tools.gateway.plan.delivery`); one that cannot be read or carried is a failed
sub-operation. C-CANCEL stops before the next instance (0xFE00)."""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydicom import Dataset, dcmread
from pynetdicom import evt
from pynetdicom.presentation import build_context

from tools.gateway import plan
from tools.gateway.access import Access
from tools.gateway.archive import Archive, ArchiveError
from tools.gateway.audit import Request, Trail
from tools.gateway.find import NOT_AUTHORISED, OUT_OF_RESOURCES, path_aet, request_of
from tools.gateway.guard import no_delay_on_open
from tools.gateway.query import UNABLE_TO_PROCESS, Model, Refusal

log = logging.getLogger("dicomweb-gateway")

MODELS: dict[str, Model] = {
    "1.2.840.10008.5.1.4.1.2.1.2": "PATIENT",  # Patient Root - MOVE
    "1.2.840.10008.5.1.4.1.2.2.2": "STUDY",  # Study Root - MOVE
    "1.2.840.10008.5.1.4.1.2.1.3": "PATIENT",  # Patient Root - GET
    "1.2.840.10008.5.1.4.1.2.2.3": "STUDY",  # Study Root - GET
}
PENDING, CANCELLED = 0xFF00, 0xFE00
UNKNOWN_DESTINATION = 0xA801
VERIFICATION = "1.2.840.10008.1.1"
TOO_MANY = f"more than {plan.MAX_SUBOPERATIONS} instances: retrieve series by series"
Contexts = Callable[[], list[tuple[str, str]]]
AHEAD = 2  # instances read ahead of the one being sent (memory: AHEAD + 1 instances)
T = TypeVar("T")


@dataclass
class Plan:
    """What one request retrieves, or why it cannot."""

    instances: list[plan.Instance] = field(default_factory=list)
    by_instance: bool = False
    refusal: Refusal | None = None


def listed(event: Any, request: Request, archive: Archive, ae_title: str) -> Plan:
    """The instances the request's identifier names, listed by QIDO-RS (or a refusal)."""
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - a peer's data set pynetdicom cannot decode
        return Plan(refusal=Refusal(UNABLE_TO_PROCESS, "the identifier cannot be decoded"))
    search = plan.retrieval(identifier, MODELS.get(request.sop_class, "STUDY"))
    if isinstance(search, Refusal):
        return Plan(refusal=search)
    request.keys = [name for name, _ in search.params]
    found: list[plan.Instance] = []
    try:
        for result in archive.search(
            path_aet(request.calling, ae_title), "instances", search.query_string
        ):
            instance = plan.instance_of(result)
            if instance is not None:
                found.append(instance)
            if len(found) > plan.MAX_SUBOPERATIONS:
                return Plan(refusal=Refusal(UNABLE_TO_PROCESS, TOO_MANY))
    except ArchiveError as exc:
        status = UNABLE_TO_PROCESS if exc.status == 400 else OUT_OF_RESOURCES
        return Plan(refusal=Refusal(status, str(exc)))
    for instance in found:
        request.touched.add("studies", [instance.study])
        request.touched.add("series", [instance.series])
        request.touched.add("instances", [instance.sop_instance])
    return Plan(found, search.by_instance)


def move_handler(  # noqa: PLR0913 - the gateway's parts, keyword-only past the archive
    archive: Archive,
    ae_title: str,
    access: Access,
    trail: Trail,
    destinations: Mapping[str, plan.Destination],
    *,
    association: Mapping[str, Any] | None = None,
) -> Callable[[Any], Iterator[Any]]:
    """The ``EVT_C_MOVE`` handler; ``association``: more arguments of ``AE.associate`` for
    the association with the destination (``tls_args``)."""

    def handle(event: Any) -> Iterator[Any]:
        request = request_of(event, "C-MOVE")
        try:
            yield from _move(event, request)
        finally:
            trail.write(request)

    def _move(event: Any, request: Request) -> Iterator[Any]:
        title = str(event.move_destination or "").strip()
        target = destinations.get(title)
        if target is None:
            request.status = UNKNOWN_DESTINATION
            log.warning("C-MOVE from %s to unknown destination %r", request.calling, title)
            yield None, None
            return
        wanted = (
            Plan(refusal=Refusal(NOT_AUTHORISED, "retrieve is not allowed to this AE"))
            if not access.may(request.calling, "retrieve")
            else listed(event, request, archive, ae_title)
        )
        store: list[Any] = []
        classes = [i.sop_class for i in wanted.instances] or [VERIFICATION]
        contexts = [build_context(c, syntaxes) for c, syntaxes in plan.proposed(classes)]
        handlers = [
            (evt.EVT_ESTABLISHED, lambda e: store.append(e.assoc)),
            (evt.EVT_CONN_OPEN, no_delay_on_open),
        ]
        yield (
            target.host,
            target.port,
            {
                "contexts": contexts,
                "evt_handlers": handlers,
                **(association or {}),
            },
        )

        def accepted() -> list[tuple[str, str]]:
            return _pairs(store[0].accepted_contexts if store else [], as_scu=True)

        yield from _suboperations(event, request, wanted, archive, accepted)

    return handle


def get_handler(
    archive: Archive, ae_title: str, access: Access, trail: Trail
) -> Callable[[Any], Iterator[Any]]:
    """The ``EVT_C_GET`` handler: sub-operations over the requesting association, on the
    storage contexts whose SCP role the requestor took."""

    def handle(event: Any) -> Iterator[Any]:
        request = request_of(event, "C-GET")
        try:
            wanted = (
                Plan(refusal=Refusal(NOT_AUTHORISED, "retrieve is not allowed to this AE"))
                if not access.may(request.calling, "retrieve")
                else listed(event, request, archive, ae_title)
            )

            def accepted() -> list[tuple[str, str]]:
                return _pairs(event.assoc.accepted_contexts, as_scu=True)

            yield from _suboperations(event, request, wanted, archive, accepted)
        finally:
            trail.write(request)

    return handle


def _pairs(contexts: list[Any], *, as_scu: bool) -> list[tuple[str, str]]:
    return [
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in contexts
        if bool(cx.as_scu) == as_scu and cx.transfer_syntax
    ]


def _suboperations(
    event: Any, request: Request, wanted: Plan, archive: Archive, accepted: Contexts
) -> Iterator[Any]:
    """The count, then one (pending, data set) per instance; a refusal as one final status."""
    if wanted.refusal is not None:
        request.status = wanted.refusal.status
        log.info("%s from %s refused: %s", request.service, request.calling, wanted.refusal.comment)
        yield 1
        yield wanted.refusal.dataset(), None
        return
    yield len(wanted.instances)
    yield from _sent(event, request, wanted, archive, accepted)


def _sent(
    event: Any, request: Request, wanted: Plan, archive: Archive, accepted: Contexts
) -> Iterator[Any]:
    """One (pending, data set) per instance; the status for the trail."""
    failed = 0
    arriving = fetched(archive, wanted.instances, by_instance=wanted.by_instance)
    for instance, data in ahead(arriving, AHEAD):
        if event.is_cancelled:
            request.status = CANCELLED
            yield CANCELLED, None
            return
        ds = _deliverable(archive, instance, data, accepted())
        if ds is None:
            failed += 1
            yield PENDING, _unsendable(instance)
            continue
        request.size += len(data or b"")
        yield PENDING, ds
    total = len(wanted.instances)
    request.status = 0x0000 if not failed else 0xA702 if failed == total else 0xB000


def ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced in a thread of their own at most ``depth`` ahead of the consumer:
    the next instances are read from the archive while this one is sent. Leaving the loop
    early (a cancel, a closed association) stops the producer at its next item."""
    producer = _Producer(items, depth)
    threading.Thread(target=producer.run, name="retrieve-ahead", daemon=True).start()
    try:
        while True:
            kind, value = producer.waiting.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        producer.stop.set()


class _Producer:
    """The thread side of :func:`ahead`."""

    def __init__(self, items: Iterator[Any], depth: int) -> None:
        self.items = items
        self.waiting: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def put(self, entry: tuple[str, Any]) -> bool:
        """Queue ``entry`` unless the consumer left first."""
        while not self.stop.is_set():
            try:
                self.waiting.put(entry, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def run(self) -> None:
        """Produce every item, then "done" (or the exception that ended them)."""
        try:
            for item in self.items:
                if not self.put(("item", item)):
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self.put(("error", exc))
            return
        self.put(("done", None))


def _deliverable(
    archive: Archive, instance: plan.Instance, data: bytes | None, accepted: list[tuple[str, str]]
) -> Dataset | None:
    """The instance as it is sent: as stored, or transcoded by the archive (None: it
    could not be read, or no accepted context carries it)."""
    if data is None:
        return None
    try:
        ds = dcmread(io.BytesIO(data))
        stored = str(ds.file_meta.TransferSyntaxUID)
        how = plan.delivery(accepted, instance.sop_class, stored)
        if how is None:
            log.warning(
                "no accepted context for %s in %s: %s fails",
                instance.sop_class,
                stored,
                instance.sop_instance,
            )
            return None
        if how:
            again = archive.retrieve(
                instance.study, instance.series, instance.sop_instance, transfer_syntax=how
            )
            ds = dcmread(io.BytesIO(next(iter(again))))
    except ArchiveError as exc:
        log.warning("%s could not be transcoded: %s", instance.sop_instance, exc)
        return None
    except Exception:
        log.exception("%s could not be read", instance.sop_instance)
        return None
    return ds


def _unsendable(instance: plan.Instance) -> Dataset:
    """A data set pynetdicom cannot send (no SOP Class UID): it counts the sub-operation as
    failed and lists the SOP Instance UID in the Failed SOP Instance UID List."""
    ds = Dataset()
    ds.SOPInstanceUID = instance.sop_instance
    return ds


def fetched(
    archive: Archive, instances: list[plan.Instance], *, by_instance: bool
) -> Iterator[tuple[plan.Instance, bytes | None]]:
    """Each instance with its Part 10 bytes (None when the archive did not give it), series
    by series: a series in one WADO-RS request read part by part, unless ``by_instance``
    or the archive refuses the series as a whole (then instance by instance)."""
    series: dict[tuple[str, str], list[plan.Instance]] = {}
    for instance in instances:
        series.setdefault((instance.study, instance.series), []).append(instance)
    for (study, uid), members in series.items():
        if by_instance or len(members) == 1:
            for instance in members:
                yield instance, _one(archive, instance)
            continue
        wanted: dict[str, plan.Instance | None] = {m.sop_instance: m for m in members}
        try:
            for data in archive.retrieve(study, uid):
                found = wanted.pop(_sop_instance_uid(data), None)
                if found is not None:
                    yield found, data
        except ArchiveError as exc:
            log.info("series %s by WADO-RS: %s; instance by instance", uid, exc)
        for left in wanted.values():
            if left is not None:
                yield left, _one(archive, left)


def _one(archive: Archive, instance: plan.Instance) -> bytes | None:
    try:
        return next(iter(archive.retrieve(instance.study, instance.series, instance.sop_instance)))
    except (ArchiveError, StopIteration) as exc:
        log.warning("%s not retrieved: %s", instance.sop_instance, exc)
        return None


def _sop_instance_uid(data: bytes) -> str:
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.get("SOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 - an unreadable part matches nothing
        return ""
