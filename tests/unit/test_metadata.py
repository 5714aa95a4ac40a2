"""Whole-instance DICOM JSON kept at store time: content, bulk data references, paths."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from shared.dicom import metadata
from tests.support import dicom_files

BASE = "https://h/v1/o3-dpacs-wado/rs/studies/1/series/2/instances/3"


def _blank_bulk(document: dict) -> dict:
    out = {}
    for tag, original in document.items():
        element = dict(original)
        if element.get("vr") == "SQ" and "Value" in element:
            element["Value"] = [_blank_bulk(i) for i in element["Value"]]
        for key in ("BulkDataURI", "InlineBinary"):
            if element.pop(key, None) is not None:
                element["bulk"] = True
        out[tag] = element
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "emri_small.dcm"])
def test_it_is_pydicoms_json_with_bulk_data_by_reference(name: str) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_files.data(name)))
    document = metadata.instance_json(ds)
    expected = ds.to_json_dict(bulk_data_threshold=metadata.BULK_THRESHOLD)
    assert _blank_bulk(document) == _blank_bulk(expected)
    if len(ds.get("PixelData") or b"") > metadata.BULK_THRESHOLD:
        assert document["7FE00010"] == {"vr": ds["PixelData"].VR, "BulkDataURI": "bulk:7FE00010"}


def test_nested_bulk_data_gets_a_path_through_its_sequences() -> None:
    inner = Dataset()
    inner.add_new(0x00281201, "OW", b"\x01\x02" * 1000)  # Red Palette LUT Data
    ds = Dataset()
    ds.add_new(0x00082112, "SQ", [Dataset(), inner])
    document = metadata.instance_json(ds)
    uri = document["00082112"]["Value"][1]["00281201"]["BulkDataURI"]
    assert uri == "bulk:00082112.1.00281201"
    assert metadata.bulk_element(ds, uri.removeprefix("bulk:")).value == b"\x01\x02" * 1000


@pytest.mark.parametrize(
    "path", ["", "7FE0001", "ZZZZZZZZ", "00082112.9.00281201", "00082112.x.00281201", "00100010.0"]
)
def test_paths_that_name_nothing(path: str) -> None:
    ds = Dataset()
    ds.add_new(0x00082112, "SQ", [Dataset()])
    ds.PatientName = "A^B"
    assert metadata.bulk_element(ds, path) is None


def test_pack_round_trip_and_urls() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_files.data("CT_small.dcm")))
    text = metadata.with_urls(metadata.unpack(metadata.pack(metadata.instance_json(ds))), BASE)
    document = json.loads(text)
    assert document["7FE00010"]["BulkDataURI"] == f"{BASE}/bulk/7FE00010"
    assert document["00100010"] == ds.to_json_dict()["00100010"]


@given(st.text(max_size=60))
def test_no_value_is_mistaken_for_a_bulk_data_reference(value: str) -> None:
    ds = Dataset()
    ds.StudyDescription = value
    ds.add_new(0x7FE00010, "OB", b"\x00" * 2048)
    document = json.loads(
        metadata.with_urls(metadata.unpack(metadata.pack(metadata.instance_json(ds))), BASE)
    )
    assert document["00081030"] == ds.to_json_dict()["00081030"]
    assert document["7FE00010"]["BulkDataURI"] == f"{BASE}/bulk/7FE00010"
