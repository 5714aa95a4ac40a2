"""After any sequence of stores, rejection notes (any code, of instances stored or not yet),
admin DELETEs and restores, searches answer what a reference model of the visible instances
answers: the instance search of the study and its count (Hypothesis state machine, on the
fake, files + SQLite, and S3 + DynamoDB on moto)."""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pydicom
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.dicomweb.multipart import Part
from shared.dicomweb.query import parse
from shared.errors import NotFound
from shared.services import lifecycle, rejection
from shared.services import search as search_service
from shared.services.lifecycle import Target
from shared.services.store import StoreRequest, store
from tests.support import backends, dicom_files, notes

STUDY = "1.2.826.0.1.3680043.8.498.7900"
SERIES = (f"{STUDY}.1", f"{STUDY}.2")
POOL = [
    dicom_files.with_new_uids(study=STUDY, series=SERIES[n % 2], patient_id="IOCM-M")
    for n in range(4)
]
SOPS = [str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID) for d in POOL]


@dataclass
class _Record:
    code: str
    applied: bool = False

    @property
    def hides(self) -> bool:
        return self.code != rejection.RETENTION_EXPIRED or not self.applied


class Rejections(RuleBasedStateMachine):
    """The archive and its model: visible instances, kept (deleted/) copies, records."""

    kind: ClassVar[str] = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.objects, self.index, self.catalog = backends.empty(
            self.kind, Path(tempfile.mkdtemp()), name=f"model-{uuid.uuid4().hex[:12]}"
        )
        self.visible: set[int] = set()
        self.kept: set[int] = set()
        self.records: dict[int, _Record] = {}
        self.notes: set[str] = set()

    def _stow(self, data: bytes) -> Any:
        request = StoreRequest([Part(data, {"content-type": "application/dicom"})], "AE", "h")
        result = store(request, objects=self.objects, index=self.index)
        assert result.status == 200, result.to_json()
        return result.stored[0]

    def _hide(self, n: int) -> None:
        self.visible.discard(n)
        self.kept.add(n)
        self.records[n].applied = True

    @rule(n=st.integers(0, len(POOL) - 1))
    def store_instance(self, n: int) -> None:
        stored = self._stow(POOL[n])
        record = self.records.get(n)
        if n not in self.visible and record is not None and record.hides:
            self._hide(n)
            assert stored.hidden
        else:
            self.visible.add(n)
            assert not stored.hidden

    @rule(
        named=st.sets(st.integers(0, len(POOL) - 1), min_size=1, max_size=3),
        code=st.sampled_from(sorted(rejection.CODES)),
    )
    def send_a_note(self, named: set[int], code: str) -> None:
        note = notes.rejection_note([POOL[n] for n in sorted(named)], code)
        stored = self._stow(note)
        self.notes.add(stored.sop_instance_uid)
        for n in named:
            prior = self.records.get(n)
            self.records[n] = _Record(code, applied=prior is not None and prior.applied)
            if n in self.visible:
                self._hide(n)

    @rule(n=st.integers(0, len(POOL) - 1))
    def delete(self, n: int) -> None:
        """An admin's DELETE of the instance: rejection records stay as they are."""
        target = Target(STUDY, SERIES[n % 2], SOPS[n])
        try:
            lifecycle.delete(target, objects=self.objects, index=self.index, retention_days=30)
        except NotFound:
            assert n not in self.visible
            return
        assert n in self.visible
        self.visible.discard(n)
        self.kept.add(n)

    @precondition(lambda self: bool(self.kept) or bool(self.records))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(sorted(self.kept | set(self.records))))
        sop = SOPS[n]
        target = Target(STUDY, SERIES[n % 2], sop)
        try:
            lifecycle.restore(
                target, objects=self.objects, index=self.index, calling_aet="AE", base_url="h"
            )
        except NotFound:
            assert n not in self.kept
            return
        assert n in self.kept
        self.kept.discard(n)
        self.records.pop(n, None)
        self.visible.add(n)

    @invariant()
    def searches_equal_the_model(self) -> None:
        query = parse({"StudyInstanceUID": [STUDY]}, "INSTANCE")
        found = search_service.search(query, self.catalog(), "h").datasets
        uids = {d["00080018"]["Value"][0] for d in found}
        assert uids == {SOPS[n] for n in self.visible} | self.notes
        studies = list(
            search_service.search(
                parse({"StudyInstanceUID": [STUDY]}, "STUDY"), self.catalog(), "h"
            ).datasets
        )
        if uids:
            (study,) = studies
            assert int(study["00201208"]["Value"][0]) == len(uids)
        else:
            assert studies == []

    @invariant()
    def the_listing_equals_the_model(self) -> None:
        listed, _ = rejection.listing(self.objects)
        assert {r.sop_instance_uid: (r.code, r.applied) for r in listed} == {
            SOPS[n]: (r.code, r.applied) for n, r in self.records.items()
        }


def _case(kind: str, examples: int) -> Callable[[], Any]:
    machine = type(f"RejectionsOn{kind.title()}", (Rejections,), {"kind": kind})
    case = machine.TestCase
    case.settings = settings(
        max_examples=examples,
        stateful_step_count=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return case


TestRejectionsOnFakes = _case("fake", 60)
TestRejectionsOnSqlite = _case("sqlite", 20)


def test_rejections_on_moto(mocked_aws: None) -> None:
    """The same machine on S3 + DynamoDB (moto), fewer examples: moto is slow."""
    _case("dynamodb", 6)().runTest()
