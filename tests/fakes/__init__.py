"""In-memory adapters with the semantics of the real ones (checked by tests/contract)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.adapters.dynamo_keys import uid_digest
from shared.errors import StorageUnavailable
from shared.ports import AddOutcome, InstanceRecord


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
