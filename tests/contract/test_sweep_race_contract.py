"""A DELETE's sweep and an identical re-STOW, interleaved deterministically, on every
backend: what the archive accepted is never lost.

The sweep checks the index for an entry naming an object and then removes the object; an
identical STOW (same bytes, so the same key ``dicom/{study}/{series}/{sop}.{sha256}.dcm``)
may write the object and commit its entry anywhere in between. Each test runs the STOW at
one point of the sweep and checks that, in the end, the entry names an object that exists
with the same bytes (docs/decisions/0007-delete-and-restore.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.dicom.validate import validate
from shared.dicomweb.stow_result import Stored
from shared.services import lifecycle, store
from shared.services.lifecycle import Target
from tests.support import backends, dicom_files

STUDY = "1.2.826.0.1.3680043.8.498.7600"
SERIES = f"{STUDY}.1"


@pytest.fixture(params=backends.KINDS)
def archive(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> Any:
    objects, index, _ = backends.empty(request.param, tmp_path)
    return objects, index


def _restow(data: bytes, objects: Any, index: Any, write: Callable[[str], None]) -> Any:
    return store.commit(
        validate(data),
        calling_aet="AE",
        base_url="h",
        objects=objects,
        index=index,
        write=write,
        clock=lambda: datetime.now(UTC),
    )


def _stored(data: bytes, objects: Any, index: Any) -> str:
    outcome = _restow(data, objects, index, lambda key: objects.put(key, data))
    assert isinstance(outcome, Stored)
    return store.blob_key(validate(data))


def _intact(objects: Any, index: Any, data: bytes, key: str) -> None:
    instance = validate(data)
    assert index.references(instance.sop_instance_uid, key), "the entry is back"
    assert objects.stat(key) is not None, "the object its entry names exists"
    assert objects.get(key) == data


class _Hooked:
    """An index whose ``references`` runs ``hook`` once, after the call ``at`` (1: the
    sweep's first check of the object; 2: its check after the removal)."""

    def __init__(self, inner: Any, hook: Callable[[], None], at: int) -> None:
        self._inner, self._hook, self._at, self.calls = inner, hook, at, 0

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        found = self._inner.references(sop_instance_uid, blob_key)
        self.calls += 1
        if self.calls == self._at:
            self._hook()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("days", [30, 0])
def test_a_restow_committed_between_the_check_and_the_removal_keeps_its_object(
    archive, days: int
) -> None:
    """The whole STOW (write, entry, answer) runs after the sweep's first check, before the
    object is removed: the sweep's second check sees the entry and puts the object back."""
    objects, index = archive
    data = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="RACE-1")
    key = _stored(data, objects, index)
    hooked = _Hooked(index, lambda: _stored(data, objects, index), at=1)
    deletion = lifecycle.delete(
        Target(STUDY, SERIES), objects=objects, index=hooked, retention_days=days
    )
    assert deletion.swept == 0
    _intact(objects, index, data, key)
    assert objects.stat(lifecycle.deleted_key(key)) is None, "no stale kept copy"


@pytest.mark.parametrize("days", [30, 0])
def test_a_restow_written_before_the_removal_and_indexed_after_the_sweep_keeps_its_object(
    archive, days: int
) -> None:
    """The STOW writes its object, the whole DELETE (index and sweep) runs, then the STOW
    commits its entry: the STOW finds its object gone and writes it again."""
    objects, index = archive
    data = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="RACE-2")
    key = _stored(data, objects, index)

    writes: list[str] = []

    def write_then_delete(final: str) -> None:
        objects.put(final, data)
        writes.append(final)
        if len(writes) == 1:  # the DELETE runs once, between the write and the entry
            lifecycle.delete(
                Target(STUDY, SERIES), objects=objects, index=index, retention_days=days
            )

    outcome = _restow(data, objects, index, write_then_delete)
    assert isinstance(outcome, Stored)
    assert not outcome.already_stored
    assert len(writes) == 2, "written again once its entry was committed"
    _intact(objects, index, data, key)


def test_a_restow_indexed_between_the_removal_and_the_second_check_keeps_its_object(
    archive,
) -> None:
    """The STOW's entry commits after the object was removed, before the sweep asks again
    (its write came before the removal): the sweep puts the object back."""
    objects, index = archive
    data = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="RACE-3")
    key = _stored(data, objects, index)
    record = store.record_of(validate(data), "AE", datetime.now(UTC))

    class _Late(_Hooked):
        def references(self, sop_instance_uid: str, blob_key: str) -> bool:
            self.calls += 1
            if self.calls == self._at:
                self._hook()
            return self._inner.references(sop_instance_uid, blob_key)

    late = _Late(index, lambda: index.add(record), at=2)
    lifecycle.delete(Target(STUDY, SERIES), objects=objects, index=late, retention_days=30)
    _intact(objects, index, data, key)


def test_without_a_race_the_sweep_still_moves_every_object(archive) -> None:
    objects, index = archive
    data = dicom_files.with_new_uids(study=STUDY, series=SERIES, patient_id="RACE-4")
    key = _stored(data, objects, index)
    deletion = lifecycle.delete(Target(STUDY), objects=objects, index=index, retention_days=30)
    assert deletion.swept == 1
    assert objects.stat(key) is None
    assert objects.get(lifecycle.deleted_key(key)) == data
