"""The few storage operations the services need, as Protocols typed with our dataclasses."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# The index's domain types, re-exported (``X as X``) with the port that speaks them.
from shared.index.records import AddOutcome as AddOutcome  # noqa: PLC0414
from shared.index.records import Change as Change  # noqa: PLC0414
from shared.index.records import ChangePage as ChangePage  # noqa: PLC0414
from shared.index.records import Entry as Entry  # noqa: PLC0414
from shared.index.records import InstanceRecord as InstanceRecord  # noqa: PLC0414
from shared.index.records import Replacement as Replacement  # noqa: PLC0414
from shared.index.records import ReplaceOutcome as ReplaceOutcome  # noqa: PLC0414
from shared.keys import KeyEntry

if TYPE_CHECKING:
    from shared.dicomweb.query import Query


@dataclass(frozen=True)
class ObjectInfo:
    """An object's key, size and last modification (seconds since the epoch)."""

    key: str
    size: int
    modified: float
    etag: str = ""


class ObjectStore(Protocol):
    """Part 10 files and other objects by key: what STOW writes, what WADO reads and serves,
    and what the upload path needs (presigned writes, multipart uploads, server-side
    copies, listing, and a local file to read a large object from)."""

    def put(self, key: str, data: bytes) -> None:
        """Store bytes under key (overwriting identical content is harmless)."""

    def delete(self, key: str) -> None:
        """Remove the object under key, if any."""

    def get(self, key: str) -> bytes:
        """The whole object."""

    def chunks(self, key: str, size: int = ...) -> Iterator[bytes]:
        """The object as a stream of chunks."""

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the object's end)."""

    def presign_get(
        self, key: str, *, expires: int, content_type: str, filename: str | None = None
    ) -> str:
        """A short-lived URL to GET the object."""

    def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, *, durable: bool = False
    ) -> None:
        """Write a body of any size from chunks; ``durable``: on stable storage once this
        returns, as ``put`` is (S3 always is; a file backend may otherwise skip the fsync
        for derived bodies a crash may lose)."""

    def presign_put(self, key: str, *, expires: int, content_type: str, size: int) -> str:
        """A short-lived URL to PUT one object of exactly ``size`` bytes under key (a PUT of
        another length is refused: 403)."""

    def start_multipart(self, key: str, content_type: str) -> str:
        """Begin a multipart upload of key; its upload id."""

    def presign_part(
        self, key: str, upload_id: str, part_number: int, *, expires: int, size: int
    ) -> str:
        """A short-lived URL to PUT one part of a multipart upload, of exactly ``size``
        bytes (another length is refused: 403)."""

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], size: int
    ) -> None:
        """Assemble the parts, given as (part number, ETag) in ascending order, into an
        object of ``size`` bytes.

        Raises ``ValueError`` when the parts do not form the upload (unknown upload, a
        missing part, an ETag that does not match, or parts that do not add up to
        ``size``); nothing is assembled then."""

    def read(self, key: str) -> bytes | None:
        """A small object whole, or None when there is none."""

    def copy(self, source: str, target: str) -> None:
        """Copy an object within the store (no bytes through this process)."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and time, or None when there is none."""

    def listing(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects under prefix in key order, after ``start_after``."""

    def local_file(self, key: str) -> AbstractContextManager[Path | None]:
        """A file holding the object while the context lasts (None when there is none)."""


class EventBus(Protocol):
    """Where the change feed's events go: EventBridge (AWS) or a JSON Lines file (local)."""

    def put(self, events: list[dict[str, Any]]) -> None:
        """Put the events, in order; raise when any was not put (they are put again)."""
        ...


class Lease(Protocol):
    """A named lease held by one holder at a time, until released or its time ends: what
    keeps a background job (the metadata updates' worker) from running twice at once."""

    def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take the lease for ``seconds`` (or extend it, when ``holder`` has it); False when
        another holder has it and its time has not ended."""
        ...

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (nothing when ``holder`` no longer has it)."""
        ...


class AuditSink(Protocol):
    """Where the audit trail is written (``shared.audit``)."""

    def write(self, record: dict[str, Any]) -> None:
        """Keep one audit record."""


class KeyStore(Protocol):
    """Where API key digests live (never the keys themselves)."""

    def load(self) -> list[KeyEntry]:
        """The active key entries."""

    def save(self, entries: list[KeyEntry]) -> None:
        """Replace the key list."""

    def add(self, entry: KeyEntry) -> None:
        """Add one key entry."""

    def revoke(self, key_id: str) -> bool:
        """Remove the entry with this id; whether one was removed."""


class Secret(Protocol):
    """A deployment secret (the anonymization key, the URL-signing key), read once."""

    def value(self) -> bytes:
        """The secret's bytes; ``StorageUnavailable`` when it cannot be read."""


class InstanceIndex(Protocol):
    """The patient/study/series/instance index: its write side, a lifecycle of changes.

    Each change (an instance added, removed or replaced) commits whole, with its series',
    study's and patient's counters and aggregates, the study's substring index, the
    de-identified lookups and one entry of the change log (what each writes is computed
    by :mod:`shared.index.writes`). Every method raises
    :class:`~shared.errors.StorageUnavailable` when the outcome is unknown (the change may
    or may not have committed): the caller must then keep every object it wrote.
    """

    def add(self, record: InstanceRecord, *, restored: bool = False) -> AddOutcome:
        """Add an instance atomically with its parents' counters and aggregates."""

    def remove(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        until: Callable[[], bool] | None = None,
        rejected: bool = False,
    ) -> tuple[Entry, ...]:
        """Remove a study, a series of it, or an instance of it from the index, one change
        per instance (a series or study goes with its last instance); the entries removed,
        none when there was nothing. The objects they name are the caller's to sweep, once
        no entry names them. Removing many instances may stop part-way (each removal is
        whole): calling again goes on. ``until`` is asked between two removals: once it
        answers True, the removal stops there (a backend that removes everything in one
        transaction may ignore it)."""

    def replace(self, record: InstanceRecord, *, moves_study: bool = False) -> Replacement:
        """Replace the record of the stored instance with the record's SOP Instance UID
        (its attributes, and its object when the bytes changed), in place: same study and
        series. The previous entry names the object to sweep when it changed. A record of
        another patient moves the whole study to that patient; with other instances in
        the study only when ``moves_study`` (a patient merge), else PATIENT_MISMATCH."""

    def changes(self, after: str = "", limit: int = 100) -> ChangePage:
        """Up to ``limit`` committed changes after the cursor ``after`` ('' : from the
        first), in commit order, and the cursor to go on from (opaque)."""

    def changes_after(self, sequence: int) -> str:
        """The cursor of ``changes`` that reads the changes numbered above ``sequence``
        (``Change.sequence``; 0: from the first)."""

    def latest_change(self) -> Change | None:
        """The last committed change (the highest ``sequence``), None when there is none."""

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the index entry of this SOP Instance UID points at ``blob_key``.

        A consistent read: the only entry that can point at an object key is the one of the
        instance whose UID the key holds. Raises ``StorageUnavailable`` when it cannot tell.
        """


@dataclass(frozen=True)
class StudyRow:
    """A study as the index returns it (attributes in DICOM JSON)."""

    study_uid: str
    attrs: dict[str, Any] = field(default_factory=dict)
    n_instances: int = 0
    n_series: int = 0
    modalities: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesRow:
    """A series with its study's attributes."""

    study_uid: str
    series_uid: str
    attrs: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)
    n_instances: int = 0

    def order(self) -> tuple[int, float, str]:
        """Place in a study's series: by SeriesNumber (unnumbered last), then UID."""
        values = (self.attrs.get("00200011") or {}).get("Value") or []
        number = values[0] if values and isinstance(values[0], (int, float)) else None
        if number is None:
            return (1, 0.0, self.series_uid)
        return (0, float(number), self.series_uid)


@dataclass(frozen=True)
class InstanceRow:
    """An instance with its series' and study's attributes, and where its file is."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    attrs: dict[str, Any] = field(default_factory=dict)
    series_attrs: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)
    transfer_syntax: str = ""
    blob_key: str = ""
    size: int = 0
    calling_aet: str = ""  # the AE title that stored it (STOW's CALLING_AET)
    metadata: bytes = b""  # compressed DICOM JSON of the whole instance, if kept


@dataclass(frozen=True)
class PatientRow:
    """A patient with its counters."""

    attrs: dict[str, Any] = field(default_factory=dict)
    n_instances: int = 0
    n_studies: int = 0
    n_series: int = 0


Row = StudyRow | SeriesRow | InstanceRow | PatientRow


@dataclass(frozen=True)
class Candidates:
    """What a catalog found for a query: rows of the query's level, lazily, in its order.

    Every row that matches the query is among them; others may be too (the search service
    checks each one with the matcher). ``skipped``: how many matching rows the catalog left
    out at the start because the query's ``offset`` passes over them (it may only do so when
    it knows they match, for example when nothing narrows the search).
    """

    rows: Iterator[Any]
    skipped: int = 0


class Catalog(Protocol):
    """The read side of the index; every method reads lazily, in a stable order.

    ``search`` takes the parsed QIDO query and plans its own access (indexes, key ranges,
    joins); the other methods are the lookups by UID that searches and retrievals share.
    Orders: studies newest first (StudyDate, StudyTime, UID, descending), except that a
    catalog answering from a name index may return them in name order and one given
    StudyInstanceUIDs returns them in the order given; series by study, then
    :meth:`SeriesRow.order`; instances by study, series UID, then InstanceNumber
    (unnumbered last); patients by normalised name.
    """

    def search(self, query: Query) -> Candidates:
        """Candidate rows for the query at its level (``Query.level``)."""

    def studies_by_uid(self, uids: Iterable[str]) -> Iterator[StudyRow]:
        """Studies by UID, in the order given."""

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        """Every series of a study."""

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRow]:
        """Instances of a study or series, by series then InstanceNumber."""

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[InstanceRow]:
        """Instances by SOP Instance UID."""


class SearchTimeUp(Exception):
    """Raised from a catalog's candidates when the time it was given to read has passed
    (:class:`TimeBounded`); the search answers with what it found so far."""


@runtime_checkable
class TimeBounded(Protocol):
    """A catalog that may read for a long time between two candidates (index entries it
    filters out itself) and so must be told when to stop."""

    def stop_reading_at(self, deadline: float | None, clock: Callable[[], float]) -> None:
        """Raise :class:`SearchTimeUp` from reads begun once ``clock()`` passes ``deadline``."""


class DeidentifiedLookup(Protocol):
    """The index's de-identified UIDs (written at store time with the deployment key)."""

    def original_uids(self, level: str, deidentified: Iterable[str]) -> dict[str, str]:
        """``{de-identified UID: original UID}`` for those of ``level`` (STUDY, SERIES or
        INSTANCE) the index knows; unknown ones are absent."""
