"""The write path keeps its invariant under any fault (a hypothesis state machine).

Invariant: every index entry's object exists and hashes to the entry's SHA-256; an instance
the archive acknowledged (200) stays indexed with the bytes it acknowledged; counters count
each instance once. An object is deleted only when the index refused *that* object and no
entry points at its key. A 503 after a fault before the index write leaves the index as it
was, and a retry is safe.

Faults are injected before and after each storage call (object put and delete, index
transaction and read), once or for a whole store; a "concurrent" store of the same or other
content is run in the middle of another store's calls (a deterministic interleaving). The
machine runs on the in-memory fakes (many examples) and on moto through botocore's event
hooks, so the DynamoDB adapter's own retries and read-backs are exercised (fewer examples).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from botocore.exceptions import ConnectionClosedError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from local import template as local_template
from shared.adapters.dynamo_index import DynamoInstanceIndex
from shared.adapters.dynamo_keys import study_pk
from shared.adapters.dynamo_search import DynamoSearch
from shared.adapters.file_blobs import FileBlobStore
from shared.adapters.s3_blobs import S3BlobStore
from shared.adapters.sqlite_catalog import SqliteCatalog
from shared.adapters.sqlite_index import SqliteIndex
from shared.dicom import edit
from shared.dicom.validate import validate
from shared.dicomweb import stow_result
from shared.dicomweb.multipart import Part
from shared.errors import NotFound, StorageUnavailable
from shared.ports import ReplaceOutcome
from shared.services import lifecycle, operations, rejection
from shared.services.lifecycle import Target
from shared.services.store import StoreRequest, _record, store
from tests.fakes import FakeBlobStore, FakeIndex, FakeObjectStore, FakeSearchCatalog

TABLE, BUCKET = "faults-table", "faults-bucket"
STUDY = "1.2.826.0.1.3680043.8.498.900"
SERIES = "1.2.826.0.1.3680043.8.498.900.1"
SOPS = tuple(f"1.2.826.0.1.3680043.8.498.900.1.{i}" for i in range(1, 4))
VARIANTS = ("a", "b", "other-patient")
OPS = ("put", "delete", "transact", "read")
PHASES = ("before", "after")
LEVELS = ("STUDY", "SERIES", "INSTANCE")
#: A step's fault: none, or one op failing once before or after it happens.
ONE_FAULT = st.none() | st.tuples(
    st.sampled_from(OPS), st.sampled_from(PHASES), st.sampled_from(["once"])
)


def _target(level: str, sop: str) -> Target:
    return Target(
        STUDY,
        SERIES if level != "STUDY" else None,
        sop if level == "INSTANCE" else None,
    )


def _instance(sop: str, variant: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientID = "P2" if variant == "other-patient" else "P1"
    ds.PatientName = "Fault^Test"
    ds.Modality = "OT"
    ds.SeriesDescription = f"variant {variant}"
    ds.file_meta = Dataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


CONTENT = {(sop, v): _instance(sop, v) for sop in SOPS for v in VARIANTS}


@dataclass
class FaultPlan:
    """Faults armed for the next store: (op, phase) -> 'once', 'always' or a concurrent store."""

    armed: dict[tuple[str, str], Any] = field(default_factory=dict)
    raise_fault: Callable[[], None] = lambda: None
    quiet: bool = False

    def hit(self, op: str, phase: str) -> None:
        if self.quiet:
            return
        action = self.armed.get((op, phase))
        if action is None:
            return
        if action != "always":
            del self.armed[(op, phase)]
        if action in ("once", "always"):
            self.raise_fault()
            return
        self.quiet = True  # the concurrent store runs without faults of its own
        try:
            action()
        finally:
            self.quiet = False


class FaultyBlobs:
    def __init__(self, inner: FakeBlobStore, plan: FaultPlan) -> None:
        self.inner, self.plan = inner, plan

    def put(self, key: str, data: bytes) -> None:
        self.plan.hit("put", "before")
        self.inner.put(key, data)
        self.plan.hit("put", "after")

    def delete(self, key: str) -> None:
        self.plan.hit("delete", "before")
        self.inner.delete(key)
        self.plan.hit("delete", "after")

    def copy(self, source: str, target: str) -> None:
        self.plan.hit("put", "before")
        self.inner.copy(source, target)
        self.plan.hit("put", "after")

    def put_stream(self, key: str, chunks: Any, content_type: str, **options: Any) -> None:
        self.plan.hit("put", "before")
        self.inner.put_stream(key, chunks, content_type, **options)
        self.plan.hit("put", "after")

    def __getattr__(self, name: str) -> Any:  # reads: get, read, stat, listing
        return getattr(self.inner, name)


class FaultyIndex:
    def __init__(self, inner: FakeIndex, plan: FaultPlan) -> None:
        self.inner, self.plan = inner, plan

    def add(self, record: Any, **options: Any) -> Any:
        self.plan.hit("transact", "before")
        outcome = self.inner.add(record, **options)
        self.plan.hit("transact", "after")
        return outcome

    def references(self, sop: str, key: str) -> bool:
        self.plan.hit("read", "before")
        found = self.inner.references(sop, key)
        self.plan.hit("read", "after")
        return found

    def remove(self, *uids: str | None, **options: Any) -> Any:
        self.plan.hit("transact", "before")
        removed = self.inner.remove(*uids, **options)
        self.plan.hit("transact", "after")
        return removed

    def replace(self, record: Any, **options: Any) -> Any:
        self.plan.hit("transact", "before")
        replaced = self.inner.replace(record, **options)
        self.plan.hit("transact", "after")
        return replaced


def _storage_fault() -> None:
    raise StorageUnavailable("injected fault")


def _connection_fault() -> None:
    raise ConnectionClosedError(endpoint_url="https://injected.invalid")


class Backend:
    """What the machine needs from a backend: adapters and a view of the stored state."""

    blobs: Any
    index: Any
    raw_index: Any
    plan: FaultPlan

    def entries(self) -> dict[str, tuple[str, str, str]]:
        """SOP Instance UID -> (sha256, object key, study) of every index entry."""
        raise NotImplementedError

    def object(self, key: str) -> bytes | None:
        raise NotImplementedError

    def study_count(self, study: str) -> int:
        raise NotImplementedError

    #: Whether object times order two writes within a second (S3's LastModified does not).
    precise_times = True

    def keys(self, prefix: str) -> list[str]:
        """Every object key under prefix (no faults)."""
        quiet, self.plan.quiet = self.plan.quiet, True
        try:
            return [info.key for info in self.raw_blobs.listing(prefix)]
        finally:
            self.plan.quiet = quiet

    def residue(self) -> list[str]:
        """What the index holds besides its change log and trigram counts (names of what is
        left), read when it has no entry: none may be left."""
        raise NotImplementedError

    def catalog(self) -> Any:
        """The read side of the index (what an update lists a study's instances with)."""
        raise NotImplementedError

    def changes(self) -> list[Any]:
        """Every entry of the change log, read page by page."""
        found, cursor = [], ""
        while True:
            page = self.raw_index.changes(after=cursor, limit=4)
            if not page.changes:
                return found
            found += page.changes
            cursor = page.cursor


class FakeBackend(Backend):
    def __init__(self) -> None:
        self.plan = FaultPlan(raise_fault=_storage_fault)
        self.raw_blobs, self.raw_index = FakeObjectStore(), FakeIndex()
        self.blobs = FaultyBlobs(self.raw_blobs, self.plan)
        self.index = FaultyIndex(self.raw_index, self.plan)

    def catalog(self) -> Any:
        return FakeSearchCatalog(self.raw_index)

    def entries(self) -> dict[str, tuple[str, str, str]]:
        return {
            sop: (r.sha256, r.blob_key, r.study_uid) for sop, r in self.raw_index.instances.items()
        }

    def object(self, key: str) -> bytes | None:
        return self.raw_blobs.objects.get(key)

    def study_count(self, study: str) -> int:
        found = self.raw_index.studies.get(study)
        return 0 if found is None else int(str(found["instances"]))

    def residue(self) -> list[str]:
        index = self.raw_index
        parts = ("instances", "studies", "series", "patients", "lookups")
        return [name for name in parts if getattr(index, name, None)]


class LocalBackend(Backend):
    """Files and SQLite (the embedded backend), faults around each of their calls."""

    def __init__(self, root: Path) -> None:
        self.plan = FaultPlan(raise_fault=_storage_fault)
        self.raw_blobs = FileBlobStore(root / "objects")
        self.raw_index = SqliteIndex(root / "index.sqlite3")
        self.blobs = FaultyBlobs(self.raw_blobs, self.plan)  # type: ignore[arg-type]
        self.index = FaultyIndex(self.raw_index, self.plan)  # type: ignore[arg-type]
        self._db = sqlite3.connect(root / "index.sqlite3")
        self._path = root / "index.sqlite3"

    def catalog(self) -> Any:
        return SqliteCatalog(self._path)

    def entries(self) -> dict[str, tuple[str, str, str]]:
        rows = self._db.execute("SELECT sop, sha256, key, study FROM instances")
        return {sop: (sha, key, study) for sop, sha, key, study in rows}

    def object(self, key: str) -> bytes | None:
        path = self.raw_blobs.path(key)
        return path.read_bytes() if path.exists() else None

    def study_count(self, study: str) -> int:
        row = self._db.execute("SELECT n_instances FROM studies WHERE study = ?", (study,))
        found = row.fetchone()
        return 0 if found is None else int(found[0])

    def residue(self) -> list[str]:
        tables = (
            "instances", "series", "studies", "study_terms", "study_modalities",
            "study_sop_classes", "patients", "patient_studies", "patient_series", "deid_uids",
        )  # fmt: skip
        return [t for t in tables if self._db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]  # noqa: S608 - our table names


_BOTO_OPS = {
    "put": ("s3", "PutObject"),
    "delete": ("s3", "DeleteObject"),
    "transact": ("dynamodb", "TransactWriteItems"),
    "read": ("dynamodb", "GetItem"),
}


class MotoBackend(Backend):
    """The real adapters on moto; faults raised from botocore's before/after-call hooks."""

    def __init__(self, s3: Any, dynamodb: Any) -> None:
        self.plan = FaultPlan(raise_fault=_connection_fault)
        self.s3, self.dynamodb = s3, dynamodb
        self.blobs = self.raw_blobs = S3BlobStore(s3, BUCKET)
        self.index = self.raw_index = DynamoInstanceIndex(dynamodb, TABLE, sleep=lambda _: None)
        for op, (service, operation) in _BOTO_OPS.items():
            client = s3 if service == "s3" else dynamodb
            for phase in PHASES:
                client.meta.events.register(
                    f"{phase}-call.{service}.{operation}", self._hook(op, phase)
                )

    def catalog(self) -> Any:
        return DynamoSearch(self.dynamodb, TABLE)

    def _hook(self, op: str, phase: str) -> Callable[..., None]:
        def hook(**_: Any) -> None:
            self.plan.hit(op, phase)

        return hook

    def entries(self) -> dict[str, tuple[str, str, str]]:
        found = {}
        with self._quiet():
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=TABLE):
                for item in page["Items"]:
                    if item["SK"]["S"] == "SOP":
                        sop = item["PK"]["S"].split("#", 1)[1]
                        found[sop] = (item["sha256"]["S"], item["key"]["S"], item["study"]["S"])
        return found

    def object(self, key: str) -> bytes | None:
        with self._quiet():
            try:
                return bytes(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            except self.s3.exceptions.NoSuchKey:
                return None

    def study_count(self, study: str) -> int:
        with self._quiet():
            item = self.dynamodb.get_item(
                TableName=TABLE, Key={"PK": {"S": study_pk(study)}, "SK": {"S": "STUDY"}}
            ).get("Item")
        return 0 if item is None else int(item["n_instances"]["N"])

    def changes(self) -> list[Any]:
        with self._quiet():
            return super().changes()

    precise_times = False

    def residue(self) -> list[str]:
        left = []
        with self._quiet():
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=TABLE):
                for item in page["Items"]:
                    pk, sk = item["PK"]["S"], item["SK"]["S"]
                    # The change log (and the feed's numbering of it) outlives its entries.
                    if pk.startswith(("CHANGES#", "FEED")) or (
                        pk.startswith("GRAM#") and sk == "#"
                    ):
                        continue
                    left.append(f"{pk} {sk}")
        return left

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        self.plan.quiet = True
        try:
            yield
        finally:
            self.plan.quiet = False


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class WritePath(RuleBasedStateMachine):
    backend_factory: Callable[[], Backend] = FakeBackend

    def __init__(self) -> None:
        super().__init__()
        self.backend = type(self).backend_factory()
        self.acknowledged: dict[str, str] = {}  # SOP Instance UID -> sha256 answered with 200
        self.deleted: dict[str, str] = {}  # SOP Instance UID -> sha256 of its entry deleted
        self.updated: dict[str, str] = {}  # sha256 of an updated version -> its variant
        self.rejected: set[str] = set()  # SOP Instance UIDs a rejection note may have named
        self.stray: set[str] = set()  # SOP Instance UIDs whose store or update may have
        # left other bytes under dicom/ (a refusal or a fault), which a restore may take

    def _store(self, data: bytes) -> Any:
        request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "AE", "h")
        try:
            result = store(request, objects=self.backend.blobs, index=self.backend.index)
        except StorageUnavailable:
            return 503, None
        return result.status, result

    def _acknowledge(self, sop: str, data: bytes, status: int, faulty: bool = True) -> None:
        if status != 200 and (faulty or status == 503):  # a refusal alone leaves no object
            self.stray.add(sop)
        if status == 200 and sop in self.rejected and sop not in self.backend.entries():
            return  # stored, and hidden at once: a rejection note named it before it came
        if status == 200:
            self.acknowledged.setdefault(sop, _sha(data))
            assert self.acknowledged[sop] == _sha(data), "200 for content other than the stored"

    @rule(
        sop=st.sampled_from(SOPS),
        variant=st.sampled_from(VARIANTS),
        fault=st.none()
        | st.tuples(st.sampled_from(OPS), st.sampled_from(PHASES), st.sampled_from(["once"]))
        | st.tuples(st.sampled_from(OPS), st.sampled_from(PHASES), st.just("always")),
    )
    def store_with_fault(self, sop: str, variant: str, fault: tuple[str, str, str] | None) -> None:
        data = CONTENT[(sop, variant)]
        before = self.backend.entries()
        if fault is not None:
            op, phase, mode = fault
            self.backend.plan.armed[(op, phase)] = mode
        status, result = self._store(data)
        self.backend.plan.armed.clear()
        assert status in (200, 409, 503), status
        self._acknowledge(sop, data, status, faulty=fault is not None)
        after = self.backend.entries()
        if fault is None:
            self._check_prediction(sop, variant, data, before, after, status, result)
        elif status == 503 and (fault[0] == "put" or fault[:2] == ("transact", "before")):
            assert after == before, "a 503 before the index write changed the index"

    def _check_prediction(  # noqa: PLR0917 - the whole step
        self,
        sop: str,
        variant: str,
        data: bytes,
        before: dict[str, tuple[str, str, str]],
        after: dict[str, tuple[str, str, str]],
        status: int,
        result: Any,
    ) -> None:
        patient = "P2" if variant == "other-patient" else "P1"
        stored_patients = {
            ("P2" if self._variant_of(sop_, sha) == "other-patient" else "P1")
            for sop_, (sha, _, _) in before.items()
        }
        if sop in before:
            expected = 200 if before[sop][0] == _sha(data) else 409
        elif stored_patients and patient not in stored_patients:
            expected = 409
        else:
            expected = 200
        assert status == expected, (status, expected)
        if expected == 409:
            assert after == before
            reason = result.failed[0].reason
            assert reason in (stow_result.DUPLICATE_SOP_INSTANCE, stow_result.PROCESSING_FAILURE)
            key = f"dicom/{STUDY}/{SERIES}/{sop}.{_sha(data)}.dcm"
            if after.get(sop, ("", "", ""))[1] != key:
                assert self.backend.object(key) is None, "a refused object was left behind"
        elif sop not in self.rejected or sop in after:
            assert after[sop][0] == _sha(data)

    def _variant_of(self, sop: str, sha: str) -> str:
        if sha in self.updated:
            return self.updated[sha]
        return next(v for (s, v), d in CONTENT.items() if s == sop and _sha(d) == sha)

    @rule(
        sop=st.sampled_from(SOPS),
        variant=st.sampled_from(VARIANTS),
        other=st.sampled_from(VARIANTS),
        other_sop=st.sampled_from(SOPS),
        op=st.sampled_from(OPS),
        phase=st.sampled_from(PHASES),
    )
    def concurrent_stores(  # noqa: PLR0917 - hypothesis passes rule arguments by name
        self, sop: str, variant: str, other: str, other_sop: str, op: str, phase: str
    ) -> None:
        data, other_data = CONTENT[(sop, variant)], CONTENT[(other_sop, other)]
        outcome: dict[str, int] = {}

        def concurrent() -> None:
            outcome["other"], _ = self._store(other_data)

        self.backend.plan.armed[(op, phase)] = concurrent
        status, _ = self._store(data)
        self.backend.plan.armed.clear()
        assert status in (200, 409, 503)
        self._acknowledge(sop, data, status)
        if "other" in outcome:
            assert outcome["other"] in (200, 409, 503)
            self._acknowledge(other_sop, other_data, outcome["other"])

    @rule(
        sop=st.sampled_from(SOPS),
        fault=st.none()
        | st.tuples(st.sampled_from(OPS), st.sampled_from(PHASES), st.sampled_from(["once"]))
        | st.tuples(st.sampled_from(OPS), st.sampled_from(PHASES), st.just("always")),
    )
    def remove_with_fault(self, sop: str, fault: tuple[str, str, str] | None) -> None:
        """The index's part of a deletion: the entry goes whole or not at all."""
        before = self.backend.entries()
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        try:
            removed = self.backend.index.remove(STUDY, SERIES, sop)
        except StorageUnavailable:
            removed = None
        self.backend.plan.armed.clear()
        after = self.backend.entries()
        if removed is not None:
            assert sop not in after
            assert [e.sop_instance_uid for e in removed] == ([sop] if sop in before else [])
        if sop not in after:
            self.acknowledged.pop(sop, None)
            if sop in before:
                self.deleted[sop] = before[sop][0]
        else:
            assert after[sop] == before[sop], "a failed removal changed the entry"

    @rule(
        sop=st.sampled_from(SOPS),
        variant=st.sampled_from(VARIANTS),
        fault=st.none()
        | st.tuples(st.sampled_from(OPS), st.sampled_from(PHASES), st.sampled_from(["once"])),
    )
    def replace_with_fault(
        self, sop: str, variant: str, fault: tuple[str, str, str] | None
    ) -> None:
        """A metadata update: the new bytes first, then the index switched in one change."""
        data = CONTENT[(sop, variant)]
        record = _record(validate(data), "AE", datetime.now(UTC))
        before = self.backend.entries()
        self.stray.add(sop)
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        try:
            self.backend.blobs.put(record.blob_key, data)
            outcome = self.backend.index.replace(record).outcome
        except StorageUnavailable:
            outcome = None
        self.backend.plan.armed.clear()
        after = self.backend.entries()
        if sop not in before:
            assert after == before
            return
        if outcome is ReplaceOutcome.REPLACED:
            assert after[sop][:2] == (_sha(data), record.blob_key)
        elif outcome is not None:
            assert after == before
        assert after[sop] in (before[sop], (_sha(data), record.blob_key, STUDY))
        if sop in self.acknowledged:
            self.acknowledged[sop] = after[sop][0]

    @rule(level=st.sampled_from(LEVELS), sop=st.sampled_from(SOPS), fault=ONE_FAULT)
    def delete_with_fault(self, level: str, sop: str, fault: tuple[str, str, str] | None) -> None:
        """A DELETE: its entries leave the index (each whole), then its objects move to
        deleted/; 404 only when nothing of it was indexed; a fault keeps every object."""
        target = _target(level, sop)
        before = self.backend.entries()
        hit = [s for s in before if target.holds((STUDY, SERIES, s))]
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        outcome = "done"
        try:
            lifecycle.delete(
                target, objects=self.backend.blobs, index=self.backend.index, retention_days=30
            )
        except NotFound:
            outcome = "404"
        except StorageUnavailable:
            outcome = "503"
        self.backend.plan.armed.clear()
        after = self.backend.entries()
        if outcome == "done":
            assert not [s for s in hit if s in after], "a deleted instance is still indexed"
        if outcome == "404":
            assert not hit, "404 for a target the index held"
        assert {s: e for s, e in after.items() if s not in hit} == {
            s: e for s, e in before.items() if s not in hit
        }, "a delete changed another instance"
        for s in hit:
            if s in after:
                assert after[s] == before[s]
            else:
                self.acknowledged.pop(s, None)
                self.deleted[s] = before[s][0]

    @rule(level=st.sampled_from(LEVELS), sop=st.sampled_from(SOPS), fault=ONE_FAULT)
    def restore_with_fault(self, level: str, sop: str, fault: tuple[str, str, str] | None) -> None:
        """A restore stores kept bytes again: the same bytes as the entry deleted, and never
        changes an entry the index holds."""
        target = _target(level, sop)
        before = self.backend.entries()
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        try:
            result = lifecycle.restore(
                target,
                objects=self.backend.blobs,
                index=self.backend.index,
                calling_aet="AE",
                base_url="h",
            )
        except (NotFound, StorageUnavailable):
            result = None
        self.backend.plan.armed.clear()
        after = self.backend.entries()
        assert {s: after.get(s) for s in before} == before, "a restore changed a stored entry"
        restored = result.restored if result is not None else []
        self.rejected -= set(restored)  # a restore ends the rejection of what it restores
        for s in restored:
            assert s in after, "a restored instance is not indexed"
            self.acknowledged[s] = after[s][0]
            if s in self.deleted and s not in self.stray and self.backend.precise_times:
                assert after[s][0] == self.deleted[s], "a restore brought back other bytes"

    @rule(name=st.sampled_from(["Update^One", "Update^Two"]), fault=ONE_FAULT)
    def update_with_fault(self, name: str, fault: tuple[str, str, str] | None) -> None:
        """A metadata update of the study (PatientName): each instance keeps its entry,
        pointing at bytes that hash to it: the new version (holding the change) or, after a
        fault, the one it had; a replaced version's bytes are kept under versions/."""
        before = self.backend.entries()
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        change = edit.parse_change({"00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}})
        operation = operations.Operation(
            id=operations.new_id(), studies=[STUDY], change=change.as_json(), created=""
        )
        ports = operations.Ports(
            objects=self.backend.blobs, index=self.backend.index, catalog=self.backend.catalog
        )
        try:
            result = operations.update_study(STUDY, change, ports, operation)
        except StorageUnavailable:
            result = None
        self.backend.plan.armed.clear()
        after = self.backend.entries()
        assert set(after) == set(before), "an update added or removed an instance"
        if fault is not None:
            self.stray |= set(before)  # a new version may be left unnamed under dicom/
        for sop, (sha, key, _) in after.items():
            if sha == before[sop][0]:
                continue
            stored = self.backend.object(key) or b""
            assert str(pydicom.dcmread(io.BytesIO(stored)).PatientName) == name
            kept = self.backend.object(operations.version_key(before[sop][1]))
            assert kept is not None and _sha(kept) == before[sop][0], "the replaced bytes"
            self.updated[sha] = self._variant_of(sop, before[sop][0])
            if sop in self.acknowledged:
                self.acknowledged[sop] = sha
        if fault is None and result is not None:
            assert result.errors == ([] if before else [f"study {STUDY}: not found"])
            for _, key, _ in after.values():
                stored = self.backend.object(key) or b""
                assert str(pydicom.dcmread(io.BytesIO(stored)).PatientName) == name

    @rule(sop=st.sampled_from(SOPS), fault=ONE_FAULT)
    def reject_with_fault(self, sop: str, fault: tuple[str, str, str] | None) -> None:
        """An IOCM rejection note naming one instance: it leaves every answer as a DELETE
        takes it (its bytes kept under deleted/), and stays hidden if stored again; a fault
        changes no other instance and keeps every object."""
        before = self.backend.entries()
        named = rejection.Rejection(
            STUDY, SERIES, sop, "113001", f"{SOPS[0]}.99", "2026-12-08T00:00:00Z"
        )
        if fault is not None:
            self.backend.plan.armed[(fault[0], fault[1])] = fault[2]
        try:
            rejection.apply_note(
                (named,), objects=self.backend.blobs, index=self.backend.index, retention_days=30
            )
            failed = False
        except StorageUnavailable:
            failed = True
        self.backend.plan.armed.clear()
        self.rejected.add(sop)
        self.stray.add(sop)  # what a restore brings back may be any copy kept of it
        after = self.backend.entries()
        if not failed:
            assert sop not in after, "a rejected instance is still answered"
        assert {s: e for s, e in after.items() if s != sop} == {
            s: e for s, e in before.items() if s != sop
        }, "a rejection changed another instance"
        if sop not in after:
            self.acknowledged.pop(sop, None)
            if sop in before:
                self.deleted[sop] = before[sop][0]

    @rule()
    def purge(self) -> None:
        """Cut-off deletes finished (their job records, then a late sweep), then the
        restore window ends (the lifecycle rule expires deleted/): nothing is left of a
        purged instance: no object, index entry, posting or lookup."""
        self.backend.plan.quiet = True
        try:
            rejection.finish_pending(
                objects=self.backend.blobs, index=self.backend.index, retention_days=30
            )
            for target in list(lifecycle.pending(self.backend.blobs)):
                self._finish(target, time.time)  # the client sends its DELETE again
            entries = self.backend.entries()
            for sop in SOPS:
                if sop not in entries:  # a sweep an hour later takes any unnamed object
                    self._finish(Target(STUDY, SERIES, sop), lambda: time.time() + 7200)
            for key in self.backend.keys(lifecycle.DELETED_PREFIX):
                self.backend.raw_blobs.delete(key)
        finally:
            self.backend.plan.quiet = False
        entries = self.backend.entries()
        for sop in [s for s in self.acknowledged if s not in entries]:
            del self.acknowledged[sop]  # deleted by a DELETE sent again
        # A rejection's record stays (it hides the instance if it comes again) until a
        # restore: not a residue of the purged bytes.
        left = [k for k in self.backend.keys("") if not k.startswith(lifecycle.REJECTIONS_PREFIX)]
        for sop in SOPS:
            if sop not in entries:
                assert not [k for k in left if f"/{sop}." in k or f"/{sop}/" in k], left
        assert not self.backend.keys(lifecycle.JOBS_PREFIX)
        if not entries:
            assert self.backend.residue() == []
        self.deleted.clear()
        self.stray = {s for s in self.stray if s in entries}

    def _finish(self, target: Target, clock: Callable[[], float]) -> None:
        with contextlib.suppress(NotFound):
            lifecycle.delete(
                target,
                objects=self.backend.blobs,
                index=self.backend.index,
                retention_days=30,
                clock=clock,
            )

    @invariant()
    def the_change_log_replays_to_the_entries(self) -> None:
        """An entry of the change log exists if and only if its change committed, in the
        order of the commits: replaying it gives the index's entries."""
        replayed: dict[str, str] = {}
        for change in self.backend.changes():
            if change.kind in ("remove", "reject"):
                assert replayed.pop(change.sop_instance_uid) == change.blob_key
            else:
                assert (change.kind in ("add", "restore")) == (
                    change.sop_instance_uid not in replayed
                )
                assert replayed.get(change.sop_instance_uid, "") == change.previous_key
                replayed[change.sop_instance_uid] = change.blob_key
        assert replayed == {sop: key for sop, (_, key, _) in self.backend.entries().items()}

    @invariant()
    def every_entry_has_its_object(self) -> None:
        for sop, (sha, key, _) in self.backend.entries().items():
            stored = self.backend.object(key)
            assert stored is not None, f"index entry of {sop} has no object"
            assert _sha(stored) == sha, f"object of {sop} does not hash to its entry"

    @invariant()
    def acknowledged_instances_are_kept(self) -> None:
        entries = self.backend.entries()
        for sop, sha in self.acknowledged.items():
            assert sop in entries, f"acknowledged {sop} is no longer indexed"
            assert entries[sop][0] == sha, f"acknowledged {sop} changed content"

    @invariant()
    def each_instance_counted_once(self) -> None:
        entries = self.backend.entries()
        assert self.backend.study_count(STUDY) == len(entries)


TestWritePathOnFakes = WritePath.TestCase
TestWritePathOnFakes.settings = settings(
    max_examples=150, stateful_step_count=12, deadline=None, derandomize=True
)


@pytest.fixture
def moto_clients(mocked_aws: None) -> tuple[Any, Any]:
    return boto3.client("s3"), boto3.client("dynamodb")


def _run(machine: type[WritePath], examples: int, steps: int) -> None:
    """Run a state machine on another backend with fewer, slower examples."""
    case = machine.TestCase
    case.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    case().runTest()


def test_write_path_on_moto(moto_clients: tuple[Any, Any]) -> None:
    s3, dynamodb = moto_clients
    create_args = local_template.load().tables["IndexTable"].create_args

    def fresh() -> Backend:
        if TABLE in dynamodb.list_tables()["TableNames"]:
            dynamodb.delete_table(TableName=TABLE)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
        else:
            s3.create_bucket(Bucket=BUCKET)
        dynamodb.create_table(TableName=TABLE, **create_args)
        # New clients each time, so hooks of earlier examples are not carried along.
        return MotoBackend(boto3.client("s3"), boto3.client("dynamodb"))

    class OnMoto(WritePath):
        backend_factory = staticmethod(fresh)

    _run(OnMoto, examples=25, steps=8)


def test_lost_reply_of_the_index_write_reads_back_as_stored(
    moto_clients: tuple[Any, Any],
) -> None:
    """A transaction that committed but whose reply was lost is retried and answered 200."""
    s3, dynamodb = moto_clients
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    s3.create_bucket(Bucket=BUCKET)
    backend = MotoBackend(s3, dynamodb)
    backend.plan.armed[("transact", "after")] = "once"
    data = CONTENT[(SOPS[0], "a")]
    request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "AE", "h")
    assert store(request, objects=backend.blobs, index=backend.index).status == 200
    assert backend.study_count(STUDY) == 1


def test_resending_identical_bytes_during_an_outage_keeps_the_object() -> None:
    """The reported loss: an identical re-send while the index fails deleted the object."""
    backend = FakeBackend()
    data = CONTENT[(SOPS[0], "a")]
    request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "AE", "h")
    assert store(request, objects=backend.blobs, index=backend.index).status == 200
    backend.plan.armed[("transact", "before")] = "always"
    with pytest.raises(StorageUnavailable):
        store(request, objects=backend.blobs, index=backend.index)
    ((sha, key, _),) = backend.entries().values()
    assert backend.object(key) is not None and _sha(backend.object(key) or b"") == sha


def test_write_path_on_files_and_sqlite(tmp_path: Path) -> None:
    runs = iter(range(10_000))

    def fresh() -> Backend:
        return LocalBackend(tmp_path / f"run-{next(runs)}")

    class OnLocal(WritePath):
        backend_factory = staticmethod(fresh)

    _run(OnLocal, examples=60, steps=10)


def test_lost_reply_of_a_removal_reads_back_as_removed(moto_clients: tuple[Any, Any]) -> None:
    """A removal that committed but whose reply was lost is retried: the entry is gone, so
    it reads back as removed, and the change log holds it once."""
    s3, dynamodb = moto_clients
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    s3.create_bucket(Bucket=BUCKET)
    backend = MotoBackend(s3, dynamodb)
    data = CONTENT[(SOPS[0], "a")]
    request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "AE", "h")
    assert store(request, objects=backend.blobs, index=backend.index).status == 200
    backend.plan.armed[("transact", "after")] = "once"
    (removed,) = backend.index.remove(STUDY, SERIES, SOPS[0])
    assert removed.sop_instance_uid == SOPS[0]
    assert backend.entries() == {}
    assert backend.study_count(STUDY) == 0
    assert [c.kind for c in backend.changes()] == ["add", "remove"]
    assert backend.object(removed.blob_key) == data  # the bytes are the sweep's to remove


def _fresh_moto(s3: Any, dynamodb: Any) -> Backend:
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    s3.create_bucket(Bucket=BUCKET)
    return MotoBackend(s3, dynamodb)


@pytest.mark.parametrize("where", ["fake", "local", "moto"])
@pytest.mark.parametrize("cut_off", [False, True])
def test_a_restore_brings_back_the_bytes_deleted_last(
    where: str, cut_off: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Stored with one content, deleted, stored with another, deleted again (its sweep
    cut off, or not): a restore brings back the second content, byte for byte."""
    if where == "fake":
        backend: Backend = FakeBackend()
    elif where == "local":
        backend = LocalBackend(tmp_path)
    else:
        backend = _fresh_moto(*request.getfixturevalue("moto_clients"))
    sop, target = SOPS[0], Target(STUDY, SERIES, SOPS[0])

    def store_and_delete(variant: str, fault: bool) -> None:
        request = StoreRequest(
            [Part(CONTENT[(sop, variant)], {"content-type": "application/dicom"})], "AE", "h"
        )
        assert store(request, objects=backend.blobs, index=backend.index).status == 200
        if fault:
            backend.plan.armed[("delete", "before")] = "once"
        try:
            lifecycle.delete(target, objects=backend.blobs, index=backend.index, retention_days=30)
        except StorageUnavailable:
            assert fault
        backend.plan.armed.clear()
        assert sop not in backend.entries()

    store_and_delete("a", fault=False)
    if not backend.precise_times:
        time.sleep(1.1)  # S3 dates objects to the second
    store_and_delete("b", fault=cut_off)
    result = lifecycle.restore(
        target, objects=backend.blobs, index=backend.index, calling_aet="AE", base_url="h"
    )
    assert result.restored == [sop]
    sha, key, _ = backend.entries()[sop]
    assert sha == _sha(CONTENT[(sop, "b")])
    assert backend.object(key) == CONTENT[(sop, "b")]
