"""In-memory adapters with the semantics of the real ones (checked by tests/contract)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from shared.adapters.dynamo_keys import uid_digest
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, InstanceRecord, InstanceRow


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

    def get(self, key: str) -> bytes:
        if self.fail:
            raise StorageUnavailable("object storage is unavailable, retry later")
        return self.objects[key]

    def chunks(self, key: str, size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        data = self.get(key)
        for start in range(0, len(data), size):
            yield data[start : start + size]

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
