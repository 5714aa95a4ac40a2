"""WADO-RS resources for viewers over HTTP, checked with dicomweb-client and pydicom:
metadata, frames, bulk data, rendered images and thumbnails."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from local.stack import LocalStack
from shared.dicom import metadata
from shared.dicomweb import media_types
from shared.dicomweb.multipart import parse_related
from tests.support import dicom_files

pytestmark = pytest.mark.integration

FILES = {
    "ct": "CT_small.dcm",  # 16-bit, uncompressed
    "mr_frames": "emri_small.dcm",  # 10 frames, uncompressed
    "j2k": "JPEG2000.dcm",  # JPEG 2000
    "jpeg_rgb": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
    "jls": "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "rle": "SC_rgb_rle_2frame.dcm",  # RLE, 2 frames
    "rtstruct": "rtplan.dcm",  # sequences, no pixels
}


@dataclass(frozen=True)
class Item:
    data: bytes
    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        return f"/rs/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def dataset(self) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(self.data))


@pytest.fixture(scope="module")
def items(local_stack: LocalStack) -> dict[str, Item]:
    stored = {}
    for label, name in FILES.items():
        data = dicom_files.with_new_uids(name)
        reply = requests.post(
            f"{local_stack.base_url}/stowRsListener/VIEWER/studies",
            data=data,
            headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        assert reply.status_code == 200, (name, reply.text)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        stored[label] = Item(
            data, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        )
    return stored


@pytest.fixture(scope="module")
def client(local_stack: LocalStack) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(
        url=local_stack.base_url,
        qido_url_prefix="qido/VIEWER",
        wado_url_prefix="rs",
        headers={"Authorization": local_stack.api_key},
    )


def get(stack: LocalStack, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": stack.api_key, **kwargs.pop("headers", {})}
    return requests.get(f"{stack.base_url}{path}", headers=headers, timeout=60, **kwargs)


def _without_bulk(document: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON data set with every bulk data value (URI or inline) blanked."""
    out: dict[str, Any] = {}
    for tag, original in document.items():
        element = dict(original)
        if element.get("vr") == "SQ" and "Value" in element:
            element["Value"] = [_without_bulk(i) for i in element["Value"]]
        if "BulkDataURI" in element or "InlineBinary" in element:
            element.pop("BulkDataURI", None)
            element.pop("InlineBinary", None)
            element["bulk"] = True
        out[tag] = element
    return out


# ------------------------------------------------------------------ metadata


@pytest.mark.parametrize("label", list(FILES))
def test_instance_metadata_is_pydicoms_json_of_the_stored_file(
    client: Any, items: dict[str, Item], label: str
) -> None:
    item = items[label]
    got = client.retrieve_instance_metadata(item.study, item.series, item.sop)
    expected = item.dataset.to_json_dict(bulk_data_threshold=metadata.BULK_THRESHOLD)
    assert _without_bulk(got) == _without_bulk(expected)


def test_series_and_study_metadata_list_every_instance(
    local_stack: LocalStack, client: Any
) -> None:
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    sops = []
    for _ in range(5):
        data = dicom_files.with_new_uids(study=study, series=series)
        sops.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
        reply = requests.post(
            f"{local_stack.base_url}/stowRsListener/VIEWER/studies",
            data=data,
            headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        assert reply.status_code == 200
    by_series = client.retrieve_series_metadata(study, series)
    by_study = client.retrieve_study_metadata(study)
    for listing in (by_series, by_study):
        assert sorted(d["00080018"]["Value"][0] for d in listing) == sorted(sops)


def test_bulk_data_uris_are_absolute_and_answered(
    local_stack: LocalStack, client: Any, items: dict[str, Item]
) -> None:
    item = items["ct"]
    document = client.retrieve_instance_metadata(item.study, item.series, item.sop)
    uri = document["7FE00010"]["BulkDataURI"]
    assert uri == f"{local_stack.base_url}{item.path}/bulk/7FE00010"
    (value,) = client.retrieve_bulkdata(uri)
    assert value == item.dataset.PixelData


def test_metadata_etag_gives_304_and_gzip_is_used_when_accepted(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    item = items["rtstruct"]
    path = f"{item.path}/metadata"
    first = get(local_stack, path, headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("application/dicom+json")
    tag = first.headers["ETag"]
    again = get(local_stack, path, headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert not again.content
    raw = get(local_stack, path, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw.raw.read()) == first.content


def test_metadata_accept_other_than_json_is_406(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    reply = get(local_stack, f"{items['ct'].path}/metadata", headers={"Accept": "image/jpeg"})
    assert reply.status_code == 406


# ------------------------------------------------------------------ frames


def _frames(ds: pydicom.Dataset) -> list[bytes]:
    text = str(ds.get("NumberOfFrames") or 1).strip()
    count = int(text) if text.isdigit() else 1  # IS "1A": one frame, as the server reads it
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    from pydicom.pixels.utils import get_expected_length

    if int(ds.BitsAllocated) == 1:  # packed bits: the frames as pydicom unpacks them
        import numpy as np
        from pydicom.pixels import pack_bits

        frames = ds.pixel_array.reshape(count, -1).astype(np.uint8)
        return [pack_bits(frame) for frame in frames]
    size = get_expected_length(ds, unit="bytes") // count  # without the padding of odd lengths
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


@pytest.mark.parametrize("label", ["ct", "mr_frames", "j2k", "jpeg_rgb", "jls", "rle"])
def test_frames_as_stored_equal_pydicoms(client: Any, items: dict[str, Item], label: str) -> None:
    item = items[label]
    expected = _frames(item.dataset)
    numbers = [1, len(expected)] if len(expected) > 1 else [1]
    got = client.retrieve_instance_frames(
        item.study,
        item.series,
        item.sop,
        frame_numbers=numbers,
        media_types=(("application/octet-stream", "*"),),
    )
    assert got == [expected[n - 1] for n in numbers]


def test_omitted_quotes_and_compressed_media_types(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    item = items["jpeg_rgb"]
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    reply = get(local_stack, f"{item.path}/frames/1", headers={"Accept": accept})
    assert reply.status_code == 200
    media = media_types.parse(reply.headers["Content-Type"])
    (part,) = parse_related(reply.content, media.param("boundary") or "")
    assert part.content == _frames(item.dataset)[0]
    reply = get(
        local_stack,
        f"{item.path}/frames/1",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert reply.status_code == 200
    media = media_types.parse(reply.headers["Content-Type"])
    (part,) = parse_related(reply.content, media.param("boundary") or "")
    assert (part.content_type or "").startswith(
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    )
    assert Image.open(io.BytesIO(part.content)).size == (item.dataset.Columns, item.dataset.Rows)


def test_compressed_frames_are_decoded_when_octet_stream_is_asked_without_syntax(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    item = items["jls"]
    accept = 'multipart/related; type="application/octet-stream"'
    reply = get(local_stack, f"{item.path}/frames/1", headers={"Accept": accept})
    assert reply.status_code == 200
    media = media_types.parse(reply.headers["Content-Type"])
    (part,) = parse_related(reply.content, media.param("boundary") or "")
    import imagecodecs

    (frame,) = _frames(item.dataset)
    expected = imagecodecs.jpegls_decode(frame).astype("<u2").tobytes()
    assert part.content == expected


@pytest.mark.parametrize(("frames", "status"), [("0", 400), ("1,x", 400), ("2", 404), ("", 404)])
def test_bad_frame_lists(
    local_stack: LocalStack, items: dict[str, Item], frames: str, status: int
) -> None:
    reply = get(local_stack, f"{items['ct'].path}/frames/{frames}")
    assert reply.status_code in (status, 403 if not frames else status)


# ------------------------------------------------------------------ rendered and thumbnails


def test_rendered_instance_series_and_frames(client: Any, items: dict[str, Item]) -> None:
    item = items["mr_frames"]
    for image in (
        client.retrieve_instance_rendered(item.study, item.series, item.sop),
        client.retrieve_series_rendered(item.study, item.series),
        client.retrieve_instance_frames_rendered(item.study, item.series, item.sop, [3]),
    ):
        picture = Image.open(io.BytesIO(image))
        assert picture.format == "JPEG"
        assert picture.size == (item.dataset.Columns, item.dataset.Rows)


def test_rendered_window_viewport_and_png(local_stack: LocalStack, items: dict[str, Item]) -> None:
    item = items["ct"]
    reply = get(
        local_stack,
        f"{item.path}/rendered",
        params={"window": "40,400,sigmoid", "viewport": "64,64"},
        headers={"Accept": "image/png"},
    )
    assert reply.status_code == 200, reply.text
    picture = Image.open(io.BytesIO(reply.content))
    assert (picture.format, picture.size) == ("PNG", (64, 64))
    assert (
        get(local_stack, f"{item.path}/rendered", params={"viewport": "1,2,3"}).status_code == 400
    )
    assert get(local_stack, f"{item.path}/rendered", params={"annotation": "x"}).status_code == 400


def test_thumbnails_are_small(local_stack: LocalStack, items: dict[str, Item]) -> None:
    item = items["j2k"]
    for path in (
        f"/rs/studies/{item.study}/thumbnail",
        f"/rs/studies/{item.study}/series/{item.series}/thumbnail",
        f"{item.path}/thumbnail",
        f"{item.path}/frames/1/thumbnail",
    ):
        reply = get(local_stack, path)
        assert reply.status_code == 200, (path, reply.text)
        assert max(Image.open(io.BytesIO(reply.content)).size) == 128


def test_rendering_an_object_without_pixels_is_406(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    assert get(local_stack, f"{items['rtstruct'].path}/rendered").status_code == 406
    assert get(local_stack, f"{items['rtstruct'].path}/frames/1").status_code == 406


# ------------------------------------------------------------------ anonymize=true


def test_anonymized_metadata_is_the_anonymized_instances(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    item = items["ct"]
    document = get(local_stack, f"{item.path}/metadata", params={"anonymize": "true"}).json()[0]
    (part,) = parse_related(
        (reply := get(local_stack, item.path, params={"anonymize": "true"})).content,
        media_types.parse(reply.headers["Content-Type"]).param("boundary") or "",
    )
    anonymized = pydicom.dcmread(io.BytesIO(part.content))
    expected = anonymized.to_json_dict(
        bulk_data_element_handler=lambda _: "dropped", bulk_data_threshold=metadata.BULK_THRESHOLD
    )
    referenced = {tag for tag, element in expected.items() if "BulkDataURI" in element}
    assert referenced == {"7FE00010"}
    expected["7FE00010"] = {"vr": expected["7FE00010"]["vr"]}  # no URI: the value is left out
    assert document == expected
    assert document["00100010"] != item.dataset.to_json_dict()["00100010"]
    # No URI naming the original UIDs reaches a caller who asked for de-identified data.
    assert "BulkDataURI" not in json.dumps(document)
    assert item.study not in json.dumps(document)
    assert document["7FE00010"] == {"vr": "OW"}


def test_anonymized_frames_and_rendered_images_are_the_anonymized_instances(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    from shared.dicom import render
    from shared.dicom.render_params import RenderParameters

    item = items["jpeg_rgb"]
    reply = get(local_stack, item.path, params={"anonymize": "true"})
    (part,) = parse_related(
        reply.content, media_types.parse(reply.headers["Content-Type"]).param("boundary") or ""
    )
    anonymized = part.content
    frames = get(
        local_stack,
        f"{item.path}/frames/1",
        params={"anonymize": "true"},
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    (frame,) = parse_related(
        frames.content, media_types.parse(frames.headers["Content-Type"]).param("boundary") or ""
    )
    assert frame.content == _frames(pydicom.dcmread(io.BytesIO(anonymized)))[0]
    image = get(local_stack, f"{item.path}/rendered", params={"anonymize": "true"})
    assert image.status_code == 200
    assert image.content == render.render_bytes(anonymized, RenderParameters())


def _corpus_images() -> list[str]:
    return dicom_files.storable(max_size=4_000_000)


def _reference_json(ds: pydicom.Dataset) -> dict[str, Any]:
    """pydicom's JSON; where pydicom cannot write a value (IS "1A"), the element's VR alone,
    as the conformance statement says."""
    try:
        return ds.to_json_dict(bulk_data_threshold=metadata.BULK_THRESHOLD)
    except ValueError:
        document: dict[str, Any] = {}
        for element in ds:
            try:
                document.update(
                    Dataset({element.tag: element}).to_json_dict(
                        bulk_data_threshold=metadata.BULK_THRESHOLD
                    )
                )
            except ValueError:
                document[f"{element.tag:08X}"] = {"vr": element.VR}
        return document


def test_every_corpus_file_metadata_and_first_frame(local_stack: LocalStack, client: Any) -> None:
    """Metadata equals pydicom's JSON and frame 1 its frame, for every transfer syntax."""
    syntaxes: set[str] = set()
    unreadable: list[str] = []
    for name in _corpus_images():
        data = dicom_files.data(name)
        reply = requests.post(
            f"{local_stack.base_url}/stowRsListener/VIEWER/studies",
            data=data,
            headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
            timeout=60,
        )
        if reply.status_code != 200:
            continue  # the same SOP Instance UID with other bytes, stored by another test
        ds = pydicom.dcmread(io.BytesIO(data))
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        got = client.retrieve_instance_metadata(*uids)
        assert _without_bulk(got) == _without_bulk(_reference_json(ds)), name
        if "PixelData" not in ds or "Rows" not in ds:
            continue
        try:
            frames = _frames(ds)
        except (TypeError, ValueError):  # attributes pydicom cannot compute a length from
            unreadable.append(name)
            continue
        (frame,) = client.retrieve_instance_frames(
            *uids, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
        )
        assert frame == frames[0], name
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    assert len(syntaxes) >= 8, syntaxes
    assert set(unreadable) <= {"badVR.dcm"}, unreadable


def test_uncompressed_frames_are_gzipped_when_accepted_and_compressed_ones_are_not(
    local_stack: LocalStack, items: dict[str, Item]
) -> None:
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    for label, gzipped in (("ct", True), ("jpeg_rgb", False)):
        path = f"{items[label].path}/frames/1"
        plain = get(local_stack, path, headers={"Accept": accept, "Accept-Encoding": "identity"})
        packed = get(
            local_stack, path, headers={"Accept": accept, "Accept-Encoding": "gzip"}, stream=True
        )
        assert "Content-Encoding" not in plain.headers
        assert (packed.headers.get("Content-Encoding") == "gzip") is gzipped, label
        raw = packed.raw.read()
        body = gzip.decompress(raw) if gzipped else raw
        boundary = media_types.parse(packed.headers["Content-Type"]).param("boundary") or ""
        (part,) = parse_related(body, boundary)
        assert part.content == _frames(items[label].dataset)[0]
        if gzipped:
            assert len(raw) < len(plain.content) * 0.9
