"""De-identification (PS3.15 Annex E Basic Profile) of real corpus files and of a dataset that
holds every attribute of Table E.1-1; checked independently with dciodvfy and dcmdump."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from shared.dicom import anonymize as anon
from tests.support import dicom_files
from tests.support.debian_tools import dciodvfy_errors, require_debian_tool

KEY = b"test deployment secret"

# Real files: images (native, JPEG 2000, RLE, deflate, big endian), RT, SEG, SR, enhanced MR.
FILES = [
    "CT_small.dcm",  # GEMS private groups
    "MR_small.dcm",
    "rtplan.dcm",  # implicit VR, nested beam sequences
    "rtdose.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "liver_1frame.dcm",  # SEG: source image references in functional groups
    "test-SR.dcm",  # SR: nested content, UID references
    "reportsi.dcm",
    "emri_small.dcm",  # enhanced MR: functional group sequences
    "image_dfl.dcm",  # deflated explicit VR little endian
    "ExplVR_BigEnd.dcm",
]
SKIPPED_ACTIONS = {"K", "X/Z/U*"}  # kept (cleaned inside), nothing to compare at this level


def _data(name: str) -> bytes:
    try:
        return dicom_files.data(name)
    except KeyError:
        pytest.skip(f"{name} is not in pydicom / pydicom-data")


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _walk(dataset: Dataset) -> Iterator[DataElement]:
    """Every element at every depth (file meta excluded)."""
    for element in dataset:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


def _walk_kept(dataset: Dataset) -> Iterator[DataElement]:
    """Elements at every depth, not entering sequences the profile removes or empties as a
    whole (only K, X/Z/U* and sequences outside the table keep cleaned items)."""
    table = anon.action_table()
    for element in dataset:
        yield element
        action = table.action(element.tag)
        if element.VR == "SQ" and action in (None, "K", "X/Z/U*"):
            for item in element.value:
                yield from _walk_kept(item)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    return str(value).strip()


@pytest.fixture(params=FILES)
def corpus(request: pytest.FixtureRequest) -> tuple[str, bytes, bytes]:
    name = request.param
    data = _data(name)
    return name, data, anon.anonymize(data, KEY)


# ------------------------------------------------------------------------------ the table


def test_the_table_is_the_standards_with_every_action_category() -> None:
    table = anon.action_table()
    actions = set(table.by_tag.values()) | {a for _, _, a in table.masked}
    assert actions == {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert len(table.by_tag) > 600
    expected = {
        "PatientName": "Z",
        "PatientID": "Z/D",
        "PatientBirthDate": "Z",
        "StudyDate": "Z",
        "AccessionNumber": "Z",
        "StudyInstanceUID": "U",
        "SOPInstanceUID": "U",
        "ReferencedSOPInstanceUID": "U",
        "InstitutionName": "X/Z/D",
        "StudyDescription": "X",
        "ReferencedImageSequence": "X/Z/U*",
        "ContentSequence": "D",
    }
    for keyword, action in expected.items():
        assert table.action(pydicom.datadict.tag_for_keyword(keyword)) == action, keyword
    assert table.action(0x50000010) == "X"  # curve data, a repeating group
    assert table.action(0x60003000) == "X"  # overlay data
    assert table.action(0x00080016) is None  # SOP Class UID: kept


def _original_value(vr: str) -> object:
    values: dict[str, object] = {
        "DA": "20200102",
        "TM": "101010",
        "DT": "20200102101010",
        "AS": "045Y",
        "DS": "12.5",
        "IS": "42",
        "UI": "1.2.3.4.5",
        "UR": "http://example.org/patient",
        "PN": "Original^Person",
    }
    if vr in values:
        return values[vr]
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 7
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x01\x02" * 8
    return "ORIGINAL1"


def _every_table_attribute() -> tuple[bytes, dict[int, object]]:
    """A Part 10 file holding every Table E.1-1 attribute pydicom knows, each non-empty."""
    table = anon.action_table()
    ds = Dataset()
    originals: dict[int, object] = {}
    for tag in sorted(table.by_tag):
        if tag >> 16 in (0x0000, 0x0002, 0xFFFA, 0xFFFC):
            continue  # command group, file meta, signatures, padding: not dataset content
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue  # newer than pydicom's dictionary
        if vr == "SQ":
            item = Dataset()
            item.PatientName = "Nested^Person"
            item.CodeValue = "SECRET1"
            item.CodingSchemeDesignator = "99LOCAL"
            item.CodeMeaning = "Secret code"
            ds.add(DataElement(tag, vr, Sequence([item])))
        else:
            value = _original_value(vr)
            ds.add(DataElement(tag, vr, value))
            originals[tag] = value
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.add(DataElement(0x00091010, "LO", "private"))
    ds.add(DataElement(0x50000010, "US", 1))  # curve
    ds.add(DataElement(0x60000010, "US", 4))  # overlay plane: rows...
    ds.add(DataElement(0x60003000, "OW", b"\0" * 8))  # ...and its data
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), originals


def test_every_table_attribute_gets_its_action() -> None:
    data, originals = _every_table_attribute()
    out = _read(anon.anonymize(data, KEY))
    table = anon.action_table()
    for tag, original in originals.items():
        action = table.action(tag)
        name = f"{pydicom.datadict.keyword_for_tag(tag)} {action}"
        if action == "X":
            assert tag not in out, name
        elif action in ("Z", "X/Z"):
            assert tag in out and out[tag].is_empty, name
        elif action == "U" or (out.get(tag) is not None and out[tag].VR == "UI"):
            assert out[tag].value == anon.map_uid(str(original), KEY), name
        else:  # D, Z/D, X/D, X/Z/D: a dummy
            assert tag in out and not out[tag].is_empty, name
            assert _text(out[tag].value) != _text(original), name
    assert not any(element.tag.is_private for element in _walk(out))
    assert 0x50000010 not in out and 0x60000010 not in out and 0x60003000 not in out


def test_table_sequences_follow_their_action_as_a_whole() -> None:
    data, _ = _every_table_attribute()
    out = _read(anon.anonymize(data, KEY))
    table = anon.action_table()
    for tag in table.by_tag:
        if tag in out and out[tag].VR == "SQ":
            name = pydicom.datadict.keyword_for_tag(tag)
            action = table.action(tag)
            if action in ("Z", "X/Z"):
                assert len(out[tag].value) == 0, name  # emptied
            elif action != "X/Z/U*":  # a D sequence left only where a dummy item is needed
                assert name == "VerifyingObserverSequence", name
                assert out[tag].value[0].VerifyingObserverName == "Anonymized"
            for item in out[tag].value:  # kept sequences are cleaned inside
                assert not item.get("PatientName"), name
        elif table.action(tag) in ("D", "X/D", "X/Z/D") and dictionary_VR(tag) == "SQ":
            assert tag not in out  # removed as a whole, never recursed and kept


# ------------------------------------------------------------------------------ real files


def test_no_table_value_survives_anywhere(corpus: tuple[str, bytes, bytes]) -> None:
    name, data, out_bytes = corpus
    table = anon.action_table()
    original, out = _read(data), _read(out_bytes)
    hidden: dict[int, set[str]] = {}
    for element in _walk(original):
        action = table.action(element.tag)
        if action is None or action in SKIPPED_ACTIONS or element.VR == "SQ":
            continue
        value = _text(element.value)
        if not value or value.startswith(anon.DICOM_UID_ROOT):
            continue
        hidden.setdefault(element.tag, set()).add(value)
    assert hidden, name
    for element in _walk(out):
        assert _text(element.value) not in hidden.get(element.tag, set()), (name, element.tag)
    rest = _without_pixels(out_bytes)
    for tag, values in hidden.items():  # names, IDs, dates: under no other tag either
        for value in values:
            if len(value) >= 6 and table.action(tag) in ("Z", "Z/D"):
                assert value.encode() not in rest, (name, tag, value)


def _without_pixels(data: bytes) -> bytes:
    ds = _read(data)
    if "PixelData" not in ds or not ds.PixelData:
        return data
    start = data.find(ds.PixelData)
    return data[:start] + data[start + len(ds.PixelData) :]


def test_private_attributes_are_removed(corpus: tuple[str, bytes, bytes]) -> None:
    out = corpus[2]
    assert not any(element.tag.is_private for element in _walk(_read(out)))


def test_private_groups_of_ct_small_were_there_and_are_gone() -> None:
    data = _data("CT_small.dcm")
    assert any(element.tag.is_private for element in _walk(_read(data)))
    out = anon.anonymize(data, KEY)
    assert b"GEMS" not in out
    assert b"CompressedSamples" not in out  # the patient's name


def test_deidentification_attributes_are_added(corpus: tuple[str, bytes, bytes]) -> None:
    out = _read(corpus[2])
    assert out.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in str(out.DeidentificationMethod)
    assert "o3-dpacs-serverless" in str(out.DeidentificationMethod)
    codes = [
        (i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning)
        for i in out.DeidentificationMethodCodeSequence
    ]
    assert ("113100", "DCM", "Basic Application Confidentiality Profile") in codes
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_pixel_data_and_transfer_syntax_are_unchanged(corpus: tuple[str, bytes, bytes]) -> None:
    _name, data, out_bytes = corpus
    original, out = _read(data), _read(out_bytes)
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert out.SOPClassUID == original.SOPClassUID
    assert out.file_meta.MediaStorageSOPClassUID == original.file_meta.MediaStorageSOPClassUID
    if "PixelData" in original:
        assert out["PixelData"].VR == original["PixelData"].VR
        assert out.PixelData == original.PixelData


def test_output_is_a_valid_part10_file(corpus: tuple[str, bytes, bytes]) -> None:
    _name, data, out_bytes = corpus
    assert out_bytes[128:132] == b"DICM"
    meta_end = _meta_end(out_bytes)
    (group_length,) = struct.unpack("<I", out_bytes[140:144])
    assert meta_end == 144 + group_length  # File Meta Information Group Length is right
    out = _read(out_bytes)
    original = _read(data)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == anon.map_uid(original.SOPInstanceUID, KEY)
    assert out.StudyInstanceUID == anon.map_uid(original.StudyInstanceUID, KEY)


def _meta_end(data: bytes) -> int:
    """Offset after the last group 0002 element (explicit VR little endian)."""
    offset = 132
    while offset < len(data):
        group, _element, vr = struct.unpack("<HH2s", data[offset : offset + 6])
        if group != 0x0002:
            return offset
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack("<I", data[offset + 8 : offset + 12])
            offset += 12 + length
        else:
            (length,) = struct.unpack("<H", data[offset + 6 : offset + 8])
            offset += 8 + length
    return offset


def test_well_known_uids_are_not_mapped(corpus: tuple[str, bytes, bytes]) -> None:
    _name, data, out_bytes = corpus
    table = anon.action_table()
    kept = {
        _text(e.value)
        for e in _walk_kept(_read(data))
        if e.VR == "UI"
        and _text(e.value).startswith(anon.DICOM_UID_ROOT)
        and table.action(e.tag) != "X"
    }
    out_uids = {_text(e.value) for e in _walk(_read(out_bytes)) if e.VR == "UI"}
    assert kept <= out_uids


def test_references_follow_the_referenced_instances(corpus: tuple[str, bytes, bytes]) -> None:
    _name, data, out_bytes = corpus
    referenced = (
        "ReferencedSOPInstanceUID",
        "ReferencedFrameOfReferenceUID",
        "FrameOfReferenceUID",
    )
    for keyword in referenced:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        before = {_text(e.value) for e in _walk_kept(_read(data)) if e.tag == tag and e.value}
        after = {_text(e.value) for e in _walk(_read(out_bytes)) if e.tag == tag and e.value}
        assert after == {anon.map_uid(uid, KEY) for uid in before}, keyword


# ------------------------------------------------------------------------------ determinism


def test_same_input_gives_identical_bytes() -> None:
    data = _data("CT_small.dcm")
    assert anon.anonymize(data, KEY) == anon.anonymize(data, KEY)


def test_two_instances_of_one_study_keep_one_study_uid() -> None:
    study, series = generate_uid(), generate_uid()
    first = dicom_files.with_new_uids("CT_small.dcm", study=study, series=series)
    second = dicom_files.with_new_uids("MR_small.dcm", study=study)
    a, b = _read(anon.anonymize(first, KEY)), _read(anon.anonymize(second, KEY))
    assert a.StudyInstanceUID == b.StudyInstanceUID == anon.map_uid(study, KEY)
    assert a.StudyInstanceUID != study
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    other_key = _read(anon.anonymize(first, b"another deployment"))
    assert other_key.StudyInstanceUID != a.StudyInstanceUID


def test_a_reference_maps_to_the_referenced_instances_new_uid() -> None:
    study = generate_uid()
    image_bytes = dicom_files.with_new_uids("CT_small.dcm", study=study)
    image = _read(image_bytes)
    reference = Dataset()
    reference.ReferencedSOPClassUID = image.SOPClassUID
    reference.ReferencedSOPInstanceUID = image.SOPInstanceUID
    derived_bytes = dicom_files.with_new_uids(
        "CT_small.dcm", study=study, SourceImageSequence=Sequence([reference])
    )
    new_image = _read(anon.anonymize(image_bytes, KEY))
    derived = _read(anon.anonymize(derived_bytes, KEY))
    item = derived.SourceImageSequence[0]
    assert item.ReferencedSOPInstanceUID == new_image.SOPInstanceUID
    assert item.ReferencedSOPClassUID == image.SOPClassUID  # a well-known UID stays
    assert derived.StudyInstanceUID == new_image.StudyInstanceUID


def test_map_uid_is_a_valid_uid_under_2_25() -> None:
    uid = anon.map_uid("1.2.3.4", KEY)
    assert uid == anon.map_uid("1.2.3.4", KEY) != anon.map_uid("1.2.3.5", KEY)
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid) and len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid


# ------------------------------------------------------------------------------ refusals


def test_burned_in_annotation_yes_is_refused() -> None:
    data = dicom_files.with_new_uids("CT_small.dcm", BurnedInAnnotation="YES")
    with pytest.raises(anon.BurnedInAnnotation):
        anon.anonymize(data, KEY)


def test_burned_in_annotation_no_is_anonymized() -> None:
    data = dicom_files.with_new_uids("CT_small.dcm", BurnedInAnnotation="NO")
    assert _read(anon.anonymize(data, KEY)).BurnedInAnnotation == "NO"


@pytest.mark.parametrize(
    "data",
    [b"", b"not dicom at all", b"\0" * 128 + b"DICM" + b"\xff" * 40, _data("rtstruct.dump")],
    ids=["empty", "text", "garbage-after-DICM", "text-dump"],
)
def test_non_dicom_input_raises_a_clear_error(data: bytes) -> None:
    with pytest.raises(anon.NotPart10, match=r"DICOM|TransferSyntax"):
        anon.anonymize(data, KEY)


# ------------------------------------------------------------------------------ cost


def test_a_few_megabytes_take_well_under_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _read(_data("CT_small.dcm"))
    ds.Rows, ds.Columns = 1024, 2048
    ds.PixelData = bytes(range(256)) * (1024 * 2048 * 2 // 256)  # 4 MiB
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)

    def no_decoding(_self: Dataset) -> None:
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_decoding))
    start = time.perf_counter()
    out = anon.anonymize(buffer.getvalue(), KEY)
    assert time.perf_counter() - start < 1.0
    assert _read(out).PixelData == ds.PixelData


# ------------------------------------------------------------------------------ independent tools


@pytest.mark.tools
@pytest.mark.parametrize("name", FILES)
def test_dciodvfy_reports_no_new_errors(name: str, tmp_path: Path) -> None:
    dciodvfy = require_debian_tool("dciodvfy", "dicom3tools")
    data = _data(name)
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    before.write_bytes(data)
    after.write_bytes(anon.anonymize(data, KEY))
    new = dciodvfy_errors(dciodvfy, after) - dciodvfy_errors(dciodvfy, before)
    assert not new, f"{name}: {sorted(new)}"


@pytest.mark.tools
@pytest.mark.parametrize("name", FILES)
def test_dcmdump_reads_the_output(name: str, tmp_path: Path) -> None:
    dcmdump = require_debian_tool("dcmdump", "dcmtk")
    out = tmp_path / "out.dcm"
    out.write_bytes(anon.anonymize(_data(name), KEY))
    done = subprocess.run(
        [dcmdump, "-q", "+E", str(out)],
        check=False,
        capture_output=True,
        encoding="latin-1",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "E: " not in done.stderr and "W: " not in done.stderr, done.stderr
    assert "(0012,0062) CS [YES]" in done.stdout
