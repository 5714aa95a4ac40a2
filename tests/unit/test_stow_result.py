"""Store Instances Response Module (PS3.18 Annex I) and the HTTP status rules."""

from __future__ import annotations

from shared.dicomweb import stow_result
from shared.dicomweb.stow_result import Failed, Stored, StoreResult

OK = Stored(
    "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "https://h/rs/studies/1/series/2/instances/3", "1"
)
BAD = Failed(stow_result.CANNOT_UNDERSTAND, "truncated", "", "")


def test_status_200_when_all_stored() -> None:
    assert StoreResult(stored=[OK]).status == 200


def test_status_202_when_some_failed() -> None:
    assert StoreResult(stored=[OK], failed=[BAD]).status == 202


def test_status_409_when_none_stored() -> None:
    assert StoreResult(failed=[BAD]).status == 409


def test_json_has_sequences_in_tag_order_with_retrieve_urls() -> None:
    result = StoreResult(stored=[OK], failed=[BAD], study_retrieve_url="https://h/rs/studies/1")
    document = result.to_json()
    assert list(document) == ["00081190", "00081198", "00081199"]
    assert document["00081190"] == {"vr": "UR", "Value": ["https://h/rs/studies/1"]}
    referenced = document["00081199"]["Value"][0]
    assert list(referenced) == ["00081150", "00081155", "00081190"]
    assert referenced["00081190"]["Value"] == [OK.retrieve_url]
    failed = document["00081198"]["Value"][0]
    assert failed["00081197"] == {"vr": "US", "Value": [0xC000]}
    assert failed["00081155"] == {"vr": "UI"}  # unknown UID: empty, never ""


def test_no_study_url_when_nothing_stored() -> None:
    assert "00081190" not in StoreResult(failed=[BAD], study_retrieve_url="x").to_json()
