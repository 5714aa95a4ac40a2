"""shared/dicom/edit.py: checking a metadata change and applying it to real files."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from shared.dicom.edit import (
    MAX_TAGS,
    UPDATABLE,
    UTF8,
    Change,
    ChangeRefused,
    already_applied,
    apply,
    parse_change,
)
from shared.dicom.validate import InstanceRejected, validate, validate_file
from tests.support import dicom_files

MAX_SIZE = 20 << 20
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
DEFLATED = "1.2.840.10008.1.2.1.99"
TEXT_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}
#: Explicit VRs with a 4-byte length (12-byte element header).
LONG_HEADER_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}

NEW = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Edited^Patient"}]},
    "00100020": {"vr": "LO", "Value": ["EDIT-0001"]},
    "00080050": {"vr": "SH", "Value": ["ACC-EDIT-1"]},
    "00081030": {"vr": "LO", "Value": ["Edited description"]},
}


def pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def edited(data: bytes, change: Change) -> bytes:
    out = io.BytesIO()
    apply(io.BytesIO(data), change, out)
    return out.getvalue()


def read(data: bytes, **kwargs: Any) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), **kwargs)


def pixel_offset(data: bytes) -> int:
    """Where the first pixel data element starts, found apart from edit.py: from the value
    offset pydicom records for it (the end of the file when there is none)."""
    ds = read(data)
    for tag in PIXEL_TAGS:
        if tag in ds._dict:
            raw = ds._dict[pydicom.tag.BaseTag(tag)]
            header = 8 if raw.is_implicit_VR or raw.VR not in LONG_HEADER_VRS else 12
            return int(raw.value_tell) - header
    return len(data)


def raw_encoding(ds: Dataset) -> tuple[bool, bool]:
    """How the data set was really encoded (its transfer syntax may say otherwise)."""
    first = next(e for e in ds._dict.values() if isinstance(e, RawDataElement))
    return first.is_implicit_VR, first.is_little_endian


def corpus() -> list[str]:
    return dicom_files.storable(MAX_SIZE)


# --- UPDATABLE ------------------------------------------------------------------------------


def test_every_updatable_keyword_is_in_the_dictionary_and_no_uid_or_sequence() -> None:
    assert set(UPDATABLE.values()) == {"PATIENT", "STUDY"}
    for keyword in UPDATABLE:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        assert dictionary_VR(tag) not in {"SQ", "UI"}, keyword
    assert "ReasonForPerformedProcedureCodeSequence" not in UPDATABLE
    assert UPDATABLE["PatientName"] == "PATIENT" and UPDATABLE["AccessionNumber"] == "STUDY"


# --- parse_change ---------------------------------------------------------------------------


def test_a_change_parses_and_round_trips_through_json() -> None:
    document = {
        **NEW,
        "00101020": {"vr": "DS", "Value": [1.75]},
        "001021C0": {"vr": "US", "Value": [2]},
        "00101001": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}]},
        "00100030": {"vr": "DA"},  # no value: set empty
    }
    change = parse_change(document)
    assert list(change.tags) == sorted(int(key, 16) for key in document)
    assert change.keywords()[0] == "AccessionNumber"
    assert set(change.keywords()) >= {"PatientName", "PatientSize", "OtherPatientNames"}
    assert change.as_json() == document
    assert parse_change(change.as_json()).as_json() == change.as_json()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([NEW], "DICOM JSON object"),
        ("00100010", "DICOM JSON object"),
        (None, "DICOM JSON object"),
        ({}, "empty"),
        ({"0010001": pn("A")}, "8 hex digits"),
        ({"0010001G": pn("A")}, "8 hex digits"),
        ({"00101000": {"vr": "LO", "Value": ["x"]}}, "(0010,1000) may not be updated"),
        ({"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, "(0020,000D) may not be updated"),
        ({"00080018": {"vr": "UI", "Value": ["1.2.3"]}}, "(0008,0018) may not be updated"),
        ({"00081032": {"vr": "SQ", "Value": [{}]}}, "(0008,1032) may not be updated"),
        ({"00091010": {"vr": "LO", "Value": ["x"]}}, "(0009,1010) may not be updated"),
        ({"00100010": {"vr": "LO", "Value": ["Doe"]}}, "must have vr PN"),
        ({"00100010": {"Value": [{"Alphabetic": "Doe"}]}}, "has no vr"),
        ({"00080020": {"vr": "DA", "Value": ["2024-13-45"]}}, "not valid for VR DA"),
        ({"00080020": {"vr": "DA", "Value": ["20241345"]}}, "not valid for VR DA"),
        ({"00080030": {"vr": "TM", "Value": ["256161"]}}, "not valid for VR TM"),
        ({"00100040": {"vr": "CS", "Value": ["male"]}}, "not valid for VR CS"),
        ({"00080050": {"vr": "SH", "Value": ["x" * 17]}}, "not valid for VR SH"),
        ({"00101010": {"vr": "AS", "Value": ["12Y"]}}, "not valid for VR AS"),
        ({"00101020": {"vr": "DS", "Value": ["tall"]}}, "(0010,1020)"),
        ({"00100020": {"vr": "LO", "Value": ["A\\B"]}}, "backslash"),
        ({"00100020": {"vr": "LO", "Value": ["A", "B"]}}, "takes one value"),
        ({"00100020": {"vr": "LO", "Value": "A"}}, "must be an array"),
        ({"00100020": {"vr": "LO", "InlineBinary": "QUJD"}}, "bulk data"),
        ({"00100020": {"vr": "LO", "BulkDataURI": "http://x/1"}}, "bulk data"),
        ({"00100020": ["A"]}, "not a DICOM JSON attribute"),
        (
            {"001021c0": {"vr": "US", "Value": [1]}, "001021C0": {"vr": "US", "Value": [2]}},
            "(0010,21C0) is given twice",
        ),
        ({"001021C0": {"vr": "US", "Value": [70000]}}, "not valid for VR US"),
        ({f"{0x00100000 + i:08X}": pn("A") for i in range(MAX_TAGS + 1)}, "more than 64"),
    ],
)
def test_parse_change_refuses(document: object, reason: str) -> None:
    with pytest.raises(ChangeRefused) as caught:
        parse_change(document)
    assert reason in str(caught.value)


def test_a_refusal_never_echoes_the_value() -> None:
    with pytest.raises(ChangeRefused) as caught:
        parse_change({"00100020": {"vr": "LO", "Value": ["SECRET-ID\\x"]}})
    with pytest.raises(ChangeRefused) as caught_date:
        parse_change({"00100030": {"vr": "DA", "Value": ["19991399"]}})
    assert "SECRET" not in str(caught.value)
    assert "1999" not in str(caught_date.value)


# --- apply over the corpus ------------------------------------------------------------------


def comparable(element: Any) -> Any:
    """An element's VR and value as pydicom reads them, nested items included (repr: NaN
    and values pydicom keeps as read, such as an IS of "1A", compare too)."""
    if element.VR == "SQ":
        return [{int(e.tag): comparable(e) for e in item} for item in element.value]
    return element.VR, repr(element.value)


def top_level_values(ds: Dataset, skip: set[int]) -> dict[int, Any]:
    """Every top-level element before the pixel data, but group lengths (not written)."""
    return {
        int(element.tag): comparable(element)
        for element in ds
        if int(element.tag) not in skip
        and element.tag.element != 0
        and int(element.tag) < PIXEL_TAGS[0]
    }


@pytest.mark.parametrize("name", corpus())
def test_apply_to_every_stored_file(name: str) -> None:
    source = dicom_files.data(name)
    change = parse_change(NEW)
    output = edited(source, change)

    checked = validate(output)
    before, after = read(source), read(output)
    for keyword, value in [
        ("PatientName", "Edited^Patient"),
        ("PatientID", "EDIT-0001"),
        ("AccessionNumber", "ACC-EDIT-1"),
        ("StudyDescription", "Edited description"),
    ]:
        assert str(after[keyword].value) == value
    skip = {*change.tags, 0x00080005}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert top_level_values(after, skip) == top_level_values(before, skip)
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert after.preamble == before.preamble
    assert raw_encoding(read(output)) == raw_encoding(read(source))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
        assert after[keyword].value == before[keyword].value
    assert checked.sop_instance_uid == validate(source).sop_instance_uid

    if before.file_meta.TransferSyntaxUID == DEFLATED:
        for tag in PIXEL_TAGS:
            assert (tag in after) == (tag in before)
            if tag in before:
                assert after[tag].value == before[tag].value
    else:
        tail = source[pixel_offset(source) :]
        assert output.endswith(tail)
        assert pixel_offset(output) == len(output) - len(tail)

    assert edited(output, change) == output  # idempotent
    assert already_applied(read(output, stop_before_pixels=True), change)
    assert not already_applied(read(source, stop_before_pixels=True), change)


# --- charset --------------------------------------------------------------------------------


def text_values(ds: Dataset, skip: set[int], path: str = "") -> dict[str, str]:
    """Every text value at every depth, decoded, by its path."""
    found: dict[str, str] = {}
    for element in ds:
        if path == "" and int(element.tag) in skip | {0x00080005}:
            continue
        key = f"{path}/{element.tag}"
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                found.update(text_values(item, skip, f"{key}[{index}]"))
        elif element.VR in TEXT_VRS:
            found[key] = str(element.value)
    return found


def charset_files() -> list[str]:
    return sorted(pydicom.data.get_charset_files("chr*.dcm"))


@pytest.mark.parametrize("file", charset_files(), ids=lambda file: Path(file).name)
@pytest.mark.parametrize("name", ["Doe^Jané", "山田^太郎", "Иванов^Иван", "Doe^John"])
def test_a_new_name_keeps_every_other_text_value_meaning(file: str, name: str) -> None:
    source = Path(file).read_bytes()
    change = parse_change({"00100010": pn(name), "00081030": {"vr": "LO", "Value": [name]}})
    output = edited(source, change)
    before, after = read(source), read(output)
    try:
        validate(source)
    except InstanceRejected:  # a charset sample without UIDs: the text is still checked
        pass
    else:
        validate(output)
    assert str(after.PatientName) == name
    assert after.StudyDescription == name
    assert text_values(after, set(change.tags)) == text_values(before, set(change.tags))
    if name.isascii():
        assert after.get("SpecificCharacterSet") == before.get("SpecificCharacterSet")


def test_a_name_the_default_repertoire_lacks_moves_the_data_set_to_utf8() -> None:
    source = dicom_files.data("rtplan.dcm")  # implicit VR, no Specific Character Set
    assert "SpecificCharacterSet" not in read(source)
    output = edited(source, parse_change({"00100010": pn("Doe^Jané")}))
    assert read(output).SpecificCharacterSet == UTF8
    assert b"Doe^Jan\xc3\xa9" in output


def test_a_name_the_character_set_holds_keeps_it() -> None:
    source = dicom_files.data("CT_small.dcm")
    assert read(source).SpecificCharacterSet == "ISO_IR 100"
    output = edited(source, parse_change({"00100010": pn("Doe^Jané")}))
    assert read(output).SpecificCharacterSet == "ISO_IR 100"
    assert b"Doe^Jan\xe9" in output


# --- hypothesis -----------------------------------------------------------------------------

REPRESENTATIVE = [
    "rtplan.dcm",  # implicit VR, no pixel data
    "ExplVR_BigEnd.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, encapsulated
    "emri_small.dcm",  # multi-frame, native
    "J2K_pixelrep_mismatch.dcm",  # ISO 2022 IR 13 / IR 87
    "CT_small.dcm",  # ISO_IR 100
]

_text = st.characters(
    blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"),
    blacklist_characters="\\^=",
)
_component = st.text(_text, max_size=12).map(str.strip)
_names = st.lists(_component, min_size=1, max_size=3).map("^".join)
_lo = st.text(_text, max_size=64).map(str.strip)
_sh = st.text(_text, max_size=16).map(str.strip)
_cs = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ "), max_size=16).map(str.strip)
_da = st.dates(date(1900, 1, 1), date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))
_tm = st.times().map(lambda t: t.strftime("%H%M%S"))
_changes = st.fixed_dictionaries(
    {
        "00100010": _names.map(pn),
        "00100020": _lo.map(lambda v: {"vr": "LO", "Value": [v]}),
        "00081030": _lo.map(lambda v: {"vr": "LO", "Value": [v]}),
        "00080050": _sh.map(lambda v: {"vr": "SH", "Value": [v]}),
        "00100030": _da.map(lambda v: {"vr": "DA", "Value": [v]}),
        "00100032": _tm.map(lambda v: {"vr": "TM", "Value": [v]}),
        "00102160": _cs.map(lambda v: {"vr": "SH", "Value": [v]}),
        "00100022": _cs.map(lambda v: {"vr": "CS", "Value": [v]}),
    }
)


@pytest.mark.parametrize("name", REPRESENTATIVE)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_changes)
def test_random_values_read_back_equal(name: str, document: dict[str, Any]) -> None:
    source = dicom_files.data(name)
    change = parse_change(document)
    output = edited(source, change)
    validate(output)
    before, after = read(source), read(output)
    for key, attribute in document.items():
        expected = attribute["Value"][0]
        expected = expected["Alphabetic"] if isinstance(expected, dict) else expected
        assert str(after[int(key, 16)].value) == expected
    assert already_applied(after, change)
    assert text_values(after, set(change.tags)) == text_values(before, set(change.tags))
    assert edited(output, change) == output
    charset = before.get("SpecificCharacterSet")
    new_text = [str(after[tag].value) for tag in change.tags]
    if all(value.isascii() for value in new_text):
        assert after.get("SpecificCharacterSet") == charset
    elif not charset or charset == "ISO_IR 6":
        assert after.SpecificCharacterSet == UTF8


def test_hypothesis_files_are_what_they_claim() -> None:
    syntaxes = {
        name: str(read(dicom_files.data(name)).file_meta.TransferSyntaxUID)
        for name in REPRESENTATIVE
    }
    assert syntaxes["rtplan.dcm"] == "1.2.840.10008.1.2"
    assert syntaxes["ExplVR_BigEnd.dcm"] == "1.2.840.10008.1.2.2"
    assert syntaxes["image_dfl.dcm"] == DEFLATED
    assert syntaxes["SC_rgb_jpeg_dcmtk.dcm"] == "1.2.840.10008.1.2.4.50"
    assert int(read(dicom_files.data("emri_small.dcm")).NumberOfFrames) > 1


# --- empty values, already_applied, refusals of apply ---------------------------------------


def test_the_chunk_size_changes_nothing_but_the_pace() -> None:
    source = dicom_files.data("emri_small.dcm")
    change = parse_change(NEW)
    out = io.BytesIO()
    apply(io.BytesIO(source), change, out, chunk=7)
    assert out.getvalue() == edited(source, change)


def test_the_source_is_read_from_its_start() -> None:
    source = io.BytesIO(dicom_files.data("CT_small.dcm"))
    source.seek(1000)
    out = io.BytesIO()
    apply(source, parse_change(NEW), out)
    assert out.getvalue() == edited(dicom_files.data("CT_small.dcm"), parse_change(NEW))


def test_an_element_without_value_is_written_empty_and_added_when_absent() -> None:
    source = dicom_files.data("CT_small.dcm")
    assert "PatientComments" not in read(source)
    change = parse_change({"00080050": {"vr": "SH"}, "00104000": {"vr": "LT"}})
    after = read(edited(source, change))
    assert after["AccessionNumber"].value in ("", None)
    assert after["PatientComments"].value in ("", None)
    assert already_applied(after, change)


def test_already_applied_tells_absent_from_empty() -> None:
    change = parse_change({"00104000": {"vr": "LT"}})
    ds = Dataset()
    assert not already_applied(ds, change)
    ds.PatientComments = ""
    assert already_applied(ds, change)
    ds.PatientComments = "x"
    assert not already_applied(ds, change)


def test_already_applied_compares_values_as_pydicom_reads_them() -> None:
    change = parse_change(
        {
            "00100010": pn("Doe^Jane"),
            "00101020": {"vr": "DS", "Value": [1.5]},
            "00101001": {"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]},
        }
    )
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientSize = "1.50"
    ds.OtherPatientNames = ["A", "B"]
    assert already_applied(ds, change)
    ds.OtherPatientNames = ["B", "A"]
    assert not already_applied(ds, change)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not dicom at all",
        bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff",
        dicom_files.data("CT_small.dcm")[:300],
    ],
    ids=["empty", "text", "broken-meta", "cut-in-meta"],
)
def test_a_file_that_cannot_be_parsed_is_refused(data: bytes) -> None:
    with pytest.raises(ChangeRefused):
        edited(data, parse_change(NEW))


def test_an_element_cut_short_before_the_pixel_data_is_refused() -> None:
    source = dicom_files.data("CT_small.dcm")
    with pytest.raises(ChangeRefused):
        edited(source[: pixel_offset(source) - 3], parse_change(NEW))


# --- memory ---------------------------------------------------------------------------------


def big_file(path: Path, frames: int = 100, rows: int = 1024, columns: int = 1024) -> Path:
    """A native 16-bit multi-frame of ``frames`` x rows x columns: the header written by
    pydicom, the Pixel Data element appended by hand so the test never holds it whole."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Big^Image", "BIG", "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    with path.open("wb") as out:
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        size = frames * rows * columns * 2
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + size.to_bytes(4, "little"))
        frame = bytes(range(256)) * (rows * columns * 2 // 256)
        for _ in range(frames):
            out.write(frame)
    return path


def sha256(path: Path, start: int = 0) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        source.seek(start)
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_apply_to_a_200_mb_file_in_bounded_memory(tmp_path: Path) -> None:
    source = big_file(tmp_path / "big.dcm")
    assert source.stat().st_size > 200 << 20
    target = tmp_path / "edited.dcm"
    change = parse_change(NEW)
    with source.open("rb") as src, target.open("wb") as out:
        tracemalloc.start()
        try:
            apply(src, change, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 20 << 20, f"peak {peak:,} bytes"
    validate_file(target)
    with target.open("rb") as out:
        edited_ds = pydicom.dcmread(out, stop_before_pixels=True)
        edited_tail = out.tell()
    with source.open("rb") as src:
        pydicom.dcmread(src, stop_before_pixels=True)
        source_tail = src.tell()
    assert str(edited_ds.PatientName) == "Edited^Patient"
    assert source.stat().st_size - source_tail == target.stat().st_size - edited_tail
    assert sha256(target, edited_tail) == sha256(source, source_tail)


def test_the_conformance_statement_lists_exactly_the_updatable_attributes() -> None:
    """Section 15.2 says which attributes an update may change: the same list as the code."""
    text = (Path(__file__).parents[2] / "docs" / "conformance-statement.md").read_text()
    section = text.split("### 15.2", 1)[1].split("A value sets the attribute", 1)[0]
    for level in ("PATIENT", "STUDY"):
        label = "Patient:" if level == "PATIENT" else "Study:"
        listed = section.split(label, 1)[1].split(".", 1)[0]
        names = {n.strip() for n in listed.replace("\n", " ").split(",")}
        assert names == {k for k, v in UPDATABLE.items() if v == level}, level
