"""In-memory adapters with the semantics of the real ones (checked by tests/contract)."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.dicom.normalize import person_name_key
from shared.dicomweb.query import Query
from shared.errors import StorageUnavailable
from shared.index import writes
from shared.index.order import instance_sort_key, study_sort_key
from shared.index.records import ChangeKind
from shared.ports import (
    AddOutcome,
    Candidates,
    Change,
    ChangePage,
    Entry,
    InstanceRecord,
    InstanceRow,
    ObjectInfo,
    PatientRow,
    Replacement,
    ReplaceOutcome,
    SeriesRow,
    StudyRow,
)


@dataclass
class FakeBlobStore:
    objects: dict[str, bytes] = field(default_factory=dict)
    fail: bool = False
    puts: int = 0

    def put(self, key: str, data: bytes) -> None:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        self.puts += 1
        self.objects[key] = data
        self.modified[key] = self.now()

    def delete(self, key: str) -> None:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        self.objects.pop(key, None)
        self.modified.pop(key, None)

    # The listing side (objects in key order, with the time each was written).
    modified: dict[str, float] = field(default_factory=dict)
    now: Callable[[], float] = field(default=time.time)

    def copy(self, source: str, target: str) -> None:
        data = self.get(source)
        self.put(target, data)

    def get(self, key: str) -> bytes:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        return self.objects[key]

    def read(self, key: str) -> bytes | None:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        return self.objects.get(key)

    def stat(self, key: str) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        return ObjectInfo(key, len(self.objects[key]), self.modified.get(key, 0.0))

    def listing(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        for key in sorted(k for k in self.objects if k.startswith(prefix) and k > start_after):
            info = self.stat(key)
            if info is not None:
                yield info


@dataclass
class FakeIndex:
    """The InstanceIndex port in memory: each change is computed by
    :mod:`shared.index.writes` and persisted here, under one lock (its transaction)."""

    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    patients: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lookups: dict[tuple[str, str], str] = field(default_factory=dict)
    log: list[Change] = field(default_factory=list)
    uid_map: Callable[[str], str] | None = None
    fail: bool = False
    max_item_bytes: int = writes.MAX_ENTRY_BYTES  # DynamoDB's item size limit
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: InstanceRecord, *, restored: bool = False) -> AddOutcome:
        self._available()
        with self._lock:
            if writes.entry_size(record) > self.max_item_bytes:
                return AddOutcome.REJECTED
            existing = self.instances.get(record.sop_instance_uid)
            if existing is not None:
                return writes.existing(record, existing.sha256)
            kind = "restore" if restored else "add"
            plan = writes.add(record, self._state(record.study_uid), self.uid_map, kind)
            if isinstance(plan, AddOutcome):
                return plan
            self._persist(plan)
            return AddOutcome.STORED

    def remove(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        until: Callable[[], bool] | None = None,
        rejected: bool = False,
    ) -> tuple[Entry, ...]:
        """As DynamoDB removes: one change per instance, asking ``until`` after each."""
        self._available()
        with self._lock:
            entries = sorted(
                (
                    writes.entry_of(r)
                    for r in self.instances.values()
                    if r.study_uid == study_uid
                    and series_uid in (None, r.series_uid)
                    and sop_instance_uid in (None, r.sop_instance_uid)
                ),
                key=lambda e: e.sort_key,
            )
            removed: list[Entry] = []
            for entry in entries:
                if removed and until is not None and until():
                    break
                kind: ChangeKind = "reject" if rejected else "remove"
                holding = self._holding(study_uid)
                self._persist(writes.remove(entry, holding, self.uid_map, _now(), kind))
                removed.append(entry)
            return tuple(removed)

    def replace(self, record: InstanceRecord, *, moves_study: bool = False) -> Replacement:
        self._available()
        with self._lock:
            stored = self.instances.get(record.sop_instance_uid)
            if stored is None:
                return Replacement(ReplaceOutcome.NOT_FOUND)
            entry = writes.entry_of(stored)
            holding = self._holding(stored.study_uid)
            plan = writes.replace(
                entry, record, holding, self.uid_map, _now(), moves_study=moves_study
            )
            if isinstance(plan, ReplaceOutcome):
                return Replacement(plan)
            self._persist(plan)
            return Replacement(ReplaceOutcome.REPLACED, entry)

    def changes(self, after: str = "", limit: int = 100) -> ChangePage:
        self._available()
        start = int(after) if after else 0
        found = tuple(self.log[start : start + max(0, limit)])
        return ChangePage(found, found[-1].position if found else after)

    def changes_after(self, sequence: int) -> str:
        return str(sequence) if sequence > 0 else ""

    def latest_change(self) -> Change | None:
        self._available()
        return self.log[-1] if self.log else None

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        self._available()
        existing = self.instances.get(sop_instance_uid)
        return existing is not None and existing.blob_key == blob_key

    def _available(self) -> None:
        if self.fail:
            raise StorageUnavailable("the index is unavailable, retry later")

    def _state(self, study_uid: str) -> writes.StudyState:
        study = self.studies.get(study_uid)
        if study is None:
            return writes.StudyState()
        return writes.StudyState(
            exists=True,
            patient_id=study["patient_id"],
            issuer=writes.issuer_of(study["attrs"]),
            sort_key=study["sort_key"],
            texts=study["texts"],
            texts_sort_key=study["texts_sort_key"],
            instances=study["instances"],
        )

    def _holding(self, study_uid: str) -> writes.Holding:
        state = self._state(study_uid)
        mine = [r for r in self.instances.values() if r.study_uid == study_uid]
        study = self.studies.get(study_uid, {})
        patient = self.patients.get((state.patient_id, state.issuer), {})
        return writes.Holding(
            state,
            {r.sop_instance_uid: writes.Member(r.series_uid, r.sop_class_uid) for r in mine},
            dict(study.get("modalities_of", {})),
            patient.get("instances", 0),
        )

    def _persist(self, w: writes.Writes) -> None:
        if w.removed is not None:
            del self.instances[w.removed.sop_instance_uid]
        if w.put is not None:
            self.instances[w.put.sop_instance_uid] = w.put
        self._persist_study(w.study)
        self._persist_parts(w)
        for lookup in w.lookups_removed:
            self.lookups.pop((lookup.level, lookup.deidentified), None)
        for lookup in w.lookups_added:
            self.lookups[(lookup.level, lookup.deidentified)] = lookup.uid
        n = len(self.log) + 1
        self.log.append(copy(w.change, position=str(n), sequence=n))

    def _persist_study(self, s: writes.StudyWrite) -> None:
        if s.gone:
            self.studies.pop(s.study_uid, None)
        else:
            study = self.studies.setdefault(
                s.study_uid,
                {"instances": 0, "series": set(), "modalities": set(), "sop_classes": set(),
                 "modalities_of": {}, "texts": None, "texts_sort_key": None},
            )  # fmt: skip
            if s.attrs is not None:
                study.update(attrs=s.attrs, patient_id=s.patient_id, sort_key=s.sort_key)
            study["instances"] += s.instances
            study["series"] |= set(s.series_added)
            study["series"] -= set(s.series_removed)
            for name, added, whole in (
                ("modalities", s.modalities_added, s.modalities),
                ("sop_classes", s.sop_classes_added, s.sop_classes),
            ):
                study[name] = set(whole) if whole is not None else study[name] | set(added)
            if s.text is not None:
                study.update(texts=s.text.texts, texts_sort_key=s.text.sort_key)

    def _persist_parts(self, w: writes.Writes) -> None:
        for e in w.series:
            if e.gone:
                self.series.pop(e.series_uid, None)
                self.studies.get(e.study_uid, {}).get("modalities_of", {}).pop(e.series_uid, None)
                continue
            self.series[e.series_uid] = self.series.get(e.series_uid, 0) + e.instances
            if e.modality:
                self.studies[e.study_uid]["modalities_of"][e.series_uid] = e.modality
            else:
                self.studies[e.study_uid]["modalities_of"].setdefault(e.series_uid, "")
        for p in w.patients:
            key = (p.patient_id, p.issuer)
            if p.gone:
                self.patients.pop(key, None)
                continue
            patient = self.patients.setdefault(
                key, {"instances": 0, "studies": set(), "series": set()}
            )
            patient["instances"] += p.instances
            patient["studies"] = (patient["studies"] | set(p.studies_added)) - set(
                p.studies_removed
            )
            patient["series"] = (patient["series"] | set(p.series_added)) - set(p.series_removed)

    def original_uids(self, level: str, deidentified: Iterable[str]) -> dict[str, str]:
        """The de-identified lookup (port ``DeidentifiedLookup``) this index keeps."""
        return {d: self.lookups[(level, d)] for d in deidentified if (level, d) in self.lookups}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeObjectStore(FakeBlobStore):
    """FakeBlobStore plus the reading side WADO uses; presigned URLs are fake addresses."""

    ranged: int = 0  # bytes read by read_range

    def get(self, key: str) -> bytes:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        return self.objects[key]

    def chunks(self, key: str, size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        data = self.get(key)
        for start in range(0, len(data), size):
            yield data[start : start + size]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        data = self.objects[key][start : start + length]
        self.ranged += len(data)
        return data

    def presign_get(
        self, key: str, *, expires: int, content_type: str, filename: str | None = None
    ) -> str:
        return f"https://objects.invalid/{key}?expires={expires}"

    def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, *, durable: bool = False
    ) -> None:
        self.put(key, b"".join(chunks))

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path | None]:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        data = self.objects.get(key)
        if data is None:
            yield None
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "object.dcm"
            path.write_bytes(data)
            yield path


@dataclass
class FakeCatalog:
    """The few Catalog reads WADO makes, over a list of instance rows."""

    rows: list[InstanceRow] = field(default_factory=list)

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[InstanceRow]:
        wanted = set(sop_uids)
        return iter([r for r in self.rows if r.sop_instance_uid in wanted])

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRow]:
        return iter(
            [
                r
                for r in self.rows
                if r.study_uid == study_uid and series_uid in (None, r.series_uid)
            ]
        )


@dataclass
class FakeSearchCatalog:
    """The whole Catalog port over a FakeIndex's records, with no index at all: ``search``
    returns every row of the query's level, in the port's documented order, and leaves the
    matching to the search service (the plan every real adapter must agree with)."""

    index: FakeIndex

    def _records(self) -> list[InstanceRecord]:
        return list(self.index.instances.values())

    def _study(self, uid: str, records: list[InstanceRecord]) -> StudyRow:
        mine = [r for r in records if r.study_uid == uid]
        return StudyRow(
            uid,
            json.loads(mine[-1].study_json),
            n_instances=len(mine),
            n_series=len({r.series_uid for r in mine}),
            modalities=tuple(sorted({r.modality for r in mine if r.modality})),
            sop_classes=tuple(sorted({r.sop_class_uid for r in mine})),
        )

    def _study_order(self, records: list[InstanceRecord]) -> list[str]:
        keys = {
            r.study_uid: study_sort_key(r.study_date, r.study_time, r.study_uid) for r in records
        }
        return sorted(keys, key=keys.__getitem__, reverse=True)

    def search(self, query: Query) -> Candidates:
        records = self._records()
        studies = self._study_order(records)
        if query.study_uid is not None:
            studies = [s for s in studies if s == query.study_uid]
        if query.level == "STUDY":
            return Candidates(iter([self._study(uid, records) for uid in studies]))
        if query.level == "SERIES":
            return Candidates(
                row
                for uid in studies
                for row in sorted(self.series_of_study(uid), key=SeriesRow.order)
            )
        if query.level == "INSTANCE":
            return Candidates(row for uid in studies for row in self.instances(uid))
        patients: dict[tuple[str, str], list[InstanceRecord]] = {}
        for r in records:
            if r.patient_id:
                patients.setdefault((r.patient_id, r.issuer_of_patient_id), []).append(r)
        rows = [
            PatientRow(
                json.loads(rs[-1].patient_json),
                n_instances=len(rs),
                n_studies=len({r.study_uid for r in rs}),
                n_series=len({r.series_uid for r in rs}),
            )
            for _, rs in sorted(
                patients.items(), key=lambda kv: (person_name_key(kv[1][-1].patient_name), kv[0])
            )
        ]
        return Candidates(iter(rows))

    def studies_by_uid(self, uids: Iterable[str]) -> Iterator[StudyRow]:
        records = self._records()
        known = {r.study_uid for r in records}
        return iter([self._study(uid, records) for uid in uids if uid in known])

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        series: dict[str, list[InstanceRecord]] = {}
        for r in self._records():
            if r.study_uid == study_uid:
                series.setdefault(r.series_uid, []).append(r)
        return [
            SeriesRow(
                study_uid,
                uid,
                json.loads(rs[-1].series_json),
                json.loads(rs[-1].study_json),
                len(rs),
            )
            for uid, rs in sorted(series.items())
        ]

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRow]:
        mine = [
            r
            for r in self._records()
            if r.study_uid == study_uid and series_uid in (None, r.series_uid)
        ]
        mine.sort(
            key=lambda r: instance_sort_key(r.series_uid, r.instance_number, r.sop_instance_uid)
        )
        return iter([instance_row(r) for r in mine])

    def instances_by_uid(self, sop_uids: Iterable[str]) -> Iterator[InstanceRow]:
        found = (self.index.instances.get(uid) for uid in sop_uids)
        return iter([instance_row(r) for r in found if r is not None])


def instance_row(r: InstanceRecord) -> InstanceRow:
    """The row a catalog returns for a stored record."""
    return InstanceRow(
        r.study_uid,
        r.series_uid,
        r.sop_instance_uid,
        json.loads(r.instance_json),
        json.loads(r.series_json),
        json.loads(r.study_json),
        transfer_syntax=r.transfer_syntax,
        blob_key=r.blob_key,
        size=r.size,
        calling_aet=r.calling_aet,
        metadata=r.metadata,
    )


@dataclass
class FakeAuditSink:
    """An audit sink that keeps the records it is given (port ``AuditSink``)."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
