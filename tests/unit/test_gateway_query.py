"""C-FIND identifiers to QIDO-RS searches and back (tools/gateway/query.py), the multipart
reader of WADO-RS answers (tools/gateway/parts.py) and the ``--allow`` policy
(tools/gateway/access.py): no network."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pynetdicom.dsutils import decode, encode

from shared.dicomweb.multipart import build_related
from tools.gateway import access, negotiation, parts, query

A900, C000 = query.IDENTIFIER_DOES_NOT_MATCH, query.UNABLE_TO_PROCESS


def identifier(level: str = "STUDY", **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def wire(ds: Dataset) -> Dataset:
    """The identifier as pynetdicom hands it to a handler: encoded and decoded again."""
    data = encode(ds, False, True)
    assert data is not None
    return decode(io.BytesIO(data), False, True)


def search_of(ds: Dataset, model: query.Model = "STUDY") -> query.Search:
    found = query.translate(wire(ds), model)
    assert isinstance(found, query.Search), found
    return found


def test_each_matching_type_travels_as_qido_takes_it() -> None:
    found = search_of(
        identifier(
            PatientName="Doe*",
            StudyDate="20200101-20201231",
            ModalitiesInStudy=["CT", "MR"],
            AccessionNumber='""',
            StudyInstanceUID="",
            StudyDescription="",
        )
    )
    params = dict(found.params)
    assert found.resource == "studies"
    assert params["PatientName"] == "Doe*"
    assert params["StudyDate"] == "20200101-20201231"
    assert params["ModalitiesInStudy"] == "CT\\MR"
    assert params["AccessionNumber"] == '""'
    assert "StudyInstanceUID" not in params  # universal: returned, not matched
    assert set(params["includefield"].split(",")) >= {"0020000D", "00081030"}


def test_spaces_are_percent_encoded_not_plus() -> None:
    found = search_of(identifier(PatientName="van Dam^Jo"))
    assert "PatientName=van%20Dam%5EJo" in found.query_string(0, 10)
    assert dict(parse_qsl(found.query_string(5, 10)))["offset"] == "5"


def test_values_are_decoded_with_the_requests_character_set() -> None:
    ds = identifier(PatientName="Buc^Jérôme", SpecificCharacterSet="ISO_IR 100")
    found = search_of(ds)
    assert dict(found.params)["PatientName"] == "Buc^Jérôme"
    assert found.charset == ("ISO_IR 100",)


@pytest.mark.parametrize(
    ("ds", "model", "status"),
    [
        (identifier("SERIES", SeriesInstanceUID=""), "STUDY", A900),  # relational
        (identifier("STUDY", StudyInstanceUID=""), "PATIENT", A900),  # no PatientID
        (identifier("STUDY", PatientID="P*"), "PATIENT", A900),  # PatientID not single
        (identifier("PATIENT", PatientID="P1"), "STUDY", A900),  # no patient level
        (identifier("BOGUS"), "STUDY", A900),
        (Dataset(), "STUDY", A900),  # no level at all
        (identifier("STUDY", Modality="CT"), "STUDY", A900),  # a series key
        (identifier("STUDY", PatientSex="M\\F"), "STUDY", A900),  # value list, not UIDs
        (identifier("STUDY", PatientComments="x"), "STUDY", C000),  # QIDO cannot match it
        (identifier("STUDY", StudyDate="2020-13-45"), "STUDY", C000),
        (identifier("STUDY", StudyInstanceUID="1.2.abc"), "STUDY", C000),
        (identifier("STUDY", StudyDate="2020-", StudyTime="10-"), "STUDY", C000),
    ],
)
def test_refusals(ds: Dataset, model: query.Model, status: int) -> None:
    found = query.translate(wire(ds), model)
    assert isinstance(found, query.Refusal)
    assert found.status == status
    assert len(found.dataset().ErrorComment) <= 64


def test_a_refusal_names_the_attribute_not_its_value() -> None:
    found = query.translate(wire(identifier(PatientBirthDate="19999999")), "STUDY")
    assert isinstance(found, query.Refusal)
    assert "PatientBirthDate" in found.comment
    assert "19999999" not in found.comment


def test_hierarchy_above_is_kept_and_uid_lists_allowed() -> None:
    found = search_of(
        identifier(
            "IMAGE", PatientID="P1", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.4\\1.2.5"
        ),
        "PATIENT",
    )
    params = dict(found.params)
    assert found.resource == "instances"
    assert params["PatientID"] == "P1"
    assert params["SeriesInstanceUID"] == "1.2.4\\1.2.5"
    assert 0x00080018 in found.returned  # the unique key of the level, always


def test_combined_date_time_when_negotiated() -> None:
    ds = wire(identifier(StudyDate="20200101-", StudyTime="1000-"))
    assert isinstance(query.translate(ds, "STUDY", combined_datetime=True), query.Search)


def test_request_attributes_items_can_be_matched_other_sequences_cannot() -> None:
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS1"
    ds = identifier("SERIES", StudyInstanceUID="1.2.3", RequestAttributesSequence=[item])
    assert ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1") in search_of(ds).params
    other = Dataset()
    other.CodeValue = "X"
    refused = query.translate(wire(identifier(ProcedureCodeSequence=[other])), "STUDY")
    assert isinstance(refused, query.Refusal)
    assert refused.status == C000
    empty = Dataset()
    empty.CodeValue = ""
    assert isinstance(
        query.translate(wire(identifier(ProcedureCodeSequence=[empty])), "STUDY"), query.Search
    )


def test_the_answer_holds_what_was_asked_in_a_charset_that_encodes_it() -> None:
    found = search_of(identifier(PatientName="", StudyInstanceUID="", StudyDescription=""))
    result = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "山田^太郎"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080020": {"vr": "DA", "Value": ["20200101"]},
    }
    ds = query.answer(result, found, "GATEWAY")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.QueryRetrieveLevel == "STUDY"
    assert "StudyDate" not in ds  # not asked for
    assert ds.StudyDescription in (None, "")
    assert str(ds.PatientName) == "山田^太郎"
    assert encode(ds, False, True) is not None
    latin = search_of(identifier(PatientName="", SpecificCharacterSet="ISO_IR 100"))
    ds = query.answer(
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Buc^Jérôme"}]}}, latin, "G"
    )
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    ds = query.answer({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "山田"}]}}, latin, "G")
    assert ds.SpecificCharacterSet == "ISO_IR 192"


_element_values = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["*", "?", "-", '""', "\\", "a\\b", "20200101-", "1.2.3\\", "=", "^^^^"]),
)
_keywords = st.sampled_from(
    [
        "PatientName", "PatientID", "StudyDate", "StudyTime", "StudyInstanceUID",
        "SeriesInstanceUID", "SOPInstanceUID", "Modality", "ModalitiesInStudy",
        "AccessionNumber", "InstanceNumber", "PatientBirthDate", "SpecificCharacterSet",
        "QueryRetrieveLevel", "NumberOfStudyRelatedInstances", "StudyDescription",
    ]
)  # fmt: skip


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None)
@given(
    keys=st.dictionaries(_keywords, _element_values, max_size=8),
    model=st.sampled_from(["PATIENT", "STUDY"]),
)
def test_any_identifier_is_translated_or_refused(keys: dict[str, str], model: query.Model) -> None:
    ds = Dataset()
    for keyword, value in keys.items():
        try:
            setattr(ds, keyword, value)
        except (ValueError, OverflowError, TypeError):
            assume(False)  # pydicom refuses to hold it; from the wire it would be raw
    found = query.translate(ds, model)
    if isinstance(found, query.Refusal):
        assert found.status in (A900, C000)
        assert found.comment
    else:
        assert found.resource in ("patients", "studies", "series", "instances")
        found.query_string(0, 10)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_bytes_as_an_identifier_never_raise(data: bytes) -> None:
    try:
        ds = decode(io.BytesIO(data), False, True)
    except Exception:  # noqa: BLE001 - pynetdicom refuses it before the handler
        return
    found = query.translate(ds, "STUDY")
    assert isinstance(found, query.Search | query.Refusal)


@pytest.mark.parametrize("size", [1, 2, 5, 64, 1 << 16])
def test_parts_are_read_at_any_chunk_size(size: int) -> None:
    contents = [b"first", b"", b"x" * 100_000, b"\r\n--notit\r\n"]
    body = b"preamble\r\n" + build_related([(c, "application/dicom") for c in contents], "bnd")
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    assert list(parts.split(chunks, "bnd")) == contents


def test_a_body_cut_off_is_malformed() -> None:
    body = build_related([(b"abc", "application/dicom")], "bnd")
    with pytest.raises(parts.MalformedMultipart):
        list(parts.split([body[:-10]], "bnd"))
    assert parts.boundary_of('multipart/related; type="application/dicom"; boundary="x y"') == "x y"


def test_allow_keeps_the_old_form_and_limits_services() -> None:
    policy = access.Access.of(["CT", "WS:find,retrieve", "CT:1", "PACS:store", "PACS:find"])
    assert policy.titles == ["CT", "WS", "CT:1", "PACS"]
    assert policy.may("CT", "store") and policy.may("CT", "retrieve")
    assert policy.may("WS", "find") and not policy.may("WS", "store")
    assert policy.may("CT:1", "find")
    assert policy.may("PACS", "find") and policy.may("PACS", "store")
    assert not policy.may("PACS", "retrieve")
    assert not policy.may("OTHER", "store")
    assert access.Access.of([]).may("ANY", "retrieve")


def test_dicom_bytes_io_is_available() -> None:
    assert DicomBytesIO(b"").read() == b""


def test_only_combined_date_time_matching_is_accepted_in_extended_negotiation() -> None:
    study_root = "1.2.840.10008.5.1.4.1.2.2.1"
    responses, combined = negotiation.answer({study_root: b"\x01\x01\x01\x01"})
    assert responses == {study_root: b"\x00\x01"}
    assert combined == {study_root}
    responses, combined = negotiation.answer({study_root: b"\x01", "1.2.3": b"\x01\x01"})
    assert responses == {study_root: b"\x00"}
    assert not combined
