"""In-memory adapters with the semantics of the real ones (checked by tests/contract)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from shared.adapters.dynamo_keys import instance_sk, study_sort_key, uid_digest
from shared.dicom.normalize import person_name_key
from shared.dicomweb.query import Query
from shared.errors import StorageUnavailable
from shared.ports import (
    AddOutcome,
    Candidates,
    InstanceRecord,
    InstanceRow,
    PatientRow,
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

    def delete(self, key: str) -> None:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        self.objects.pop(key, None)


@dataclass
class FakeIndex:
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    studies: dict[str, dict[str, object]] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    fail: bool = False
    max_item_bytes: int = 400 * 1024  # DynamoDB's item size limit
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: InstanceRecord) -> AddOutcome:
        if self.fail:
            raise StorageUnavailable("the index is unavailable, retry later")
        size = sum(len(v) for v in (record.instance_json, record.series_json, record.study_json))
        size += len(record.metadata)
        with self._lock:
            if size > self.max_item_bytes:
                return AddOutcome.REJECTED
            existing = self.instances.get(record.sop_instance_uid)
            if existing is not None:
                if existing.sha256 == record.sha256:
                    return AddOutcome.ALREADY_STORED
                return AddOutcome.DIFFERENT_CONTENT
            study = self.studies.get(record.study_uid)
            if study is not None and study["patient_id"] != record.patient_id:
                return AddOutcome.PATIENT_MISMATCH
            if study is None:
                study = {"patient_id": record.patient_id, "instances": 0, "series": set()}
                self.studies[record.study_uid] = study
            study["instances"] = int(str(study["instances"])) + 1
            series_keys = study["series"]
            assert isinstance(series_keys, set)
            series_keys.add(uid_digest(record.series_uid))
            self.series[record.series_uid] = self.series.get(record.series_uid, 0) + 1
            self.instances[record.sop_instance_uid] = record
            return AddOutcome.STORED

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        if self.fail:
            raise StorageUnavailable("the index is unavailable, retry later")
        existing = self.instances.get(sop_instance_uid)
        return existing is not None and existing.blob_key == blob_key


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

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        self.put(key, b"".join(chunks))


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
        mine.sort(key=lambda r: instance_sk(r.series_uid, r.instance_number, r.sop_instance_uid))
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
