"""What a C-MOVE/C-GET retrieves and how each instance travels (tools/gateway/plan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydicom import Dataset

from tools.gateway import plan
from tools.gateway.query import IDENTIFIER_DOES_NOT_MATCH, Refusal

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
ELE, ILE, SV1, J2K, BASELINE = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.50",
)


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_unique_keys_become_an_instance_search() -> None:
    found = plan.retrieval(identifier("STUDY", StudyInstanceUID="1.2.3\\1.2.4"), "STUDY")
    assert isinstance(found, plan.Retrieval)
    assert found.params == (("StudyInstanceUID", "1.2.3\\1.2.4"),)
    assert "includefield=0020000D%2C0020000E%2C00080018%2C00080016" in found.query_string()
    assert not found.by_instance
    image = plan.retrieval(
        identifier(
            "IMAGE",
            StudyInstanceUID="1.2.3",
            SeriesInstanceUID="1.2.4",
            SOPInstanceUID="1.2.5\\1.2.6",
        ),
        "STUDY",
    )
    assert isinstance(image, plan.Retrieval)
    assert image.by_instance
    patient = plan.retrieval(identifier("PATIENT", PatientID="P1"), "PATIENT")
    assert isinstance(patient, plan.Retrieval)
    assert patient.params == (("PatientID", "P1"),)


@pytest.mark.parametrize(
    ("ds", "model"),
    [
        (identifier("SERIES", StudyInstanceUID="1.2.3"), "STUDY"),  # no series UID
        (identifier("SERIES", StudyInstanceUID="1.2.3\\1.2.4", SeriesInstanceUID="1.2.5"), "STUDY"),
        (identifier("STUDY", StudyInstanceUID="1.2.3"), "PATIENT"),  # no PatientID
        (identifier("PATIENT", PatientID="P*"), "PATIENT"),
        (identifier("PATIENT", PatientID="P1"), "STUDY"),
        (identifier("STUDY", StudyInstanceUID="1.2.x"), "STUDY"),
        (identifier("STUDY", StudyInstanceUID="1.2.3", Modality="CT"), "STUDY"),  # not unique
        (Dataset(), "STUDY"),
    ],
)
def test_identifiers_without_their_unique_keys_are_refused(ds: Dataset, model: plan.Model) -> None:
    found = plan.retrieval(ds, model)
    assert isinstance(found, Refusal)
    assert found.status == IDENTIFIER_DOES_NOT_MATCH


def test_delivery_as_stored_transcoded_or_not_at_all() -> None:
    assert plan.delivery([(CT, SV1)], CT, SV1) == ""
    assert plan.delivery([(CT, ILE)], CT, ELE) == ""  # pynetdicom re-encodes native LE
    assert plan.delivery([(CT, ELE), (CT, J2K)], CT, SV1) == ELE
    assert plan.delivery([(CT, ILE)], CT, "1.2.840.10008.1.2.2") == ILE
    assert plan.delivery([(CT, J2K)], CT, SV1) == J2K
    assert plan.delivery([(CT, BASELINE)], CT, SV1) is None  # never lossy from lossless
    assert plan.delivery([(CT, BASELINE)], CT, "1.2.840.10008.1.2.4.91") == BASELINE
    assert plan.delivery([(MR, ELE)], CT, ELE) is None  # no context for the class


def test_proposed_contexts_fit_in_128_and_keep_native_for_every_class() -> None:
    classes = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in range(40)]
    contexts = plan.proposed(classes)
    assert len(contexts) == plan.MAX_CONTEXTS
    assert {c for c, s in contexts if s == [ELE, ILE]} == set(classes)
    few = plan.proposed([CT, CT, MR])
    assert len(few) == 2 + 2 * len(plan.COMPRESSED)


def test_destinations_from_values_and_files(tmp_path: Path) -> None:
    listed = tmp_path / "dest.txt"
    listed.write_text("# workstations\nWS1=10.0.0.5:104\n\nPACS B=pacs.example:11112  # b\n")
    found = plan.destinations(["WS1=127.0.0.1:4242"], [listed])
    assert found["WS1"] == plan.Destination("WS1", "10.0.0.5", 104)  # the file's, given later
    assert found["PACS B"].host == "pacs.example"
    for bad in ("WS1", "WS1=host", "=h:1", "WS1=h:0", "WS1=h:x", "A" * 17 + "=h:1"):
        with pytest.raises(ValueError, match=r"\S"):
            plan.destination(bad)


def test_instance_of_a_qido_result() -> None:
    result = {
        "0020000D": {"vr": "UI", "Value": ["1.1"]},
        "0020000E": {"vr": "UI", "Value": ["1.2"]},
        "00080018": {"vr": "UI", "Value": ["1.3"]},
        "00080016": {"vr": "UI", "Value": [CT]},
    }
    assert plan.instance_of(result) == plan.Instance("1.1", "1.2", "1.3", CT)
    del result["00080016"]
    assert plan.instance_of(result) is None


_keywords = st.sampled_from(
    [
        "QueryRetrieveLevel", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
        "SOPInstanceUID", "Modality", "SpecificCharacterSet", "PatientName",
    ]
)  # fmt: skip
_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["STUDY", "SERIES", "IMAGE", "PATIENT", "1.2.3", "1.2.3\\1.2.4", "*", ""]),
)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None)
@given(
    keys=st.dictionaries(_keywords, _values, max_size=6),
    model=st.sampled_from(["PATIENT", "STUDY"]),
)
def test_any_retrieve_identifier_is_planned_or_refused(
    keys: dict[str, str], model: plan.Model
) -> None:
    ds = Dataset()
    for keyword, value in keys.items():
        try:
            setattr(ds, keyword, value)
        except (ValueError, OverflowError, TypeError):
            assume(False)
    found = plan.retrieval(ds, model)
    if isinstance(found, Refusal):
        assert found.status in (IDENTIFIER_DOES_NOT_MATCH, 0xC000)
    else:
        assert found.params
        found.query_string(0, 10)
