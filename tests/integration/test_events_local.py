"""The change feed's events on the local stack (the FeedFunction, invoked as a table's
stream would invoke it): each STOW and DELETE appears in ``events.jsonl`` within seconds, in
feed order, and a study quiet for ``StudyStableSeconds`` gets one ``StudyStable`` event with
its counts; on both backends (SQLite, and DynamoDB on moto with the sequencer)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared.bootstrap import EVENTS_FILE
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["local", "moto"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp(f"events-{request.param}")
    with LocalStack(
        port=0,
        storage=request.param,
        data_dir=data_dir,
        parameter_overrides={"StudyStableSeconds": "2"},
    ) as running:
        yield running


def _store(running: LocalStack, *datas: bytes) -> None:
    boundary = new_boundary()
    stored = requests.post(
        f"{running.base_url}/stowRsListener/AE/studies",
        data=build_related([(d, "application/dicom") for d in datas], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Authorization": running.api_key,
        },
        timeout=60,
    )
    assert stored.status_code == 200, stored.text


def _events(running: LocalStack) -> list[dict[str, Any]]:
    path = running.data_dir / EVENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(running: LocalStack, found: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        seen = _events(running)
        if found(seen) or time.monotonic() > deadline:
            return seen
        requests.get(f"{running.base_url}/changefeed/latest", timeout=30)  # the API in use
        time.sleep(0.2)


def test_stores_deletes_and_a_stable_study_reach_the_events_file(stack: LocalStack) -> None:
    study = pydicom.uid.generate_uid()
    datas = [dicom_files.with_new_uids(study=study) for _ in range(3)]
    sops = [pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in datas]
    _store(stack, *datas)
    removed = requests.delete(
        f"{stack.base_url}/rs/studies/{study}/series/"
        f"{pydicom.dcmread(io.BytesIO(datas[2])).SeriesInstanceUID}/instances/{sops[2]}",
        headers={"Authorization": stack.api_key},
        timeout=60,
    )
    assert removed.status_code == 204, removed.text

    def stable(seen: list[dict[str, Any]]) -> bool:
        return any(
            e["detail-type"] == "StudyStable" and e["detail"]["StudyInstanceUID"] == study
            for e in seen
        )

    seen = _wait_for(stack, stable)
    mine = [e for e in seen if e["detail"]["StudyInstanceUID"] == study]
    changes = [e for e in mine if e["detail-type"] == "DICOM Change"]
    assert [(e["detail"]["Action"], e["detail"]["SOPInstanceUID"]) for e in changes] == [
        *(("create", sop) for sop in sops),
        ("delete", sops[2]),
    ]
    sequences = [e["detail"]["Sequence"] for e in changes]
    assert sequences == sorted(sequences)
    assert [e["id"] for e in changes] == [f"change-{n}" for n in sequences]
    (announced,) = [e for e in mine if e["detail-type"] == "StudyStable"]
    assert announced["detail"]["NumberOfStudyRelatedInstances"] == 2
    assert announced["detail"]["NumberOfStudyRelatedSeries"] >= 1
    assert mine[-1] is announced  # after the study's last change
