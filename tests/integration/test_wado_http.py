"""WADO-RS and WADO-URI end to end over HTTP: byte-identical retrieval, negotiation, redirects."""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from PIL import Image

from local.stack import LocalStack
from shared.dicomweb import media_types
from shared.dicomweb.multipart import Part, parse_related
from shared.services.store import StoreRequest, store
from tests.support import dicom_files

pytestmark = pytest.mark.integration

MULTIPART = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True)
class Stored:
    name: str
    data: bytes
    study: str
    series: str
    sop: str


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _corpus() -> list[str]:
    return dicom_files.storable(max_size=4_000_000)


CORPUS = _corpus()


@pytest.fixture(scope="module")
def stored(local_stack: LocalStack) -> dict[str, Stored]:
    """The corpus stored through STOW-RS (files another module stored already count too)."""
    result = {}
    headers = {"Authorization": local_stack.api_key, "Content-Type": "application/dicom"}
    for name in CORPUS:
        data = dicom_files.data(name)
        response = requests.post(
            f"{local_stack.base_url}/stowRsListener/WADOTEST/studies",
            data=data,
            headers=headers,
            timeout=60,
        )
        if response.status_code != 200:
            continue  # the same SOP Instance UID with other bytes, stored by another test
        result[name] = Stored(name, data, *_uids(data))
    assert len(result) > 120
    return result


def get(stack: LocalStack, path: str, **kwargs: object) -> requests.Response:
    headers = {"Authorization": stack.api_key, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return requests.get(f"{stack.base_url}{path}", headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def parts(response: requests.Response) -> list[Part]:
    media = media_types.parse(response.headers["Content-Type"])
    assert media.essence == "multipart/related"
    assert media.param("type") == "application/dicom"
    return parse_related(response.content, media.param("boundary") or "")


def uri_params(item: Stored, **extra: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": item.study,
        "seriesUID": item.series,
        "objectUID": item.sop,
        **extra,
    }


def test_every_stored_corpus_file_comes_back_byte_identical(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    for item in stored.values():
        path = f"/rs/studies/{item.study}/series/{item.series}/instances/{item.sop}"
        (part,) = parts(get(local_stack, path))
        assert part.content == item.data, item.name
        assert part.content_type is not None
        assert part.content_type.startswith("application/dicom; transfer-syntax=")
        response = get(
            local_stack, "/wado", params=uri_params(item, contentType="application/dicom")
        )
        assert response.status_code == 200
        assert response.content == item.data, item.name
        assert response.headers["Content-Type"] == "application/dicom"
        assert f'filename="{item.sop}.dcm"' in response.headers["Content-Disposition"]


def test_series_and_study_levels_hold_every_instance_byte_identical(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    by_series: dict[tuple[str, str], set[bytes]] = {}
    by_study: dict[str, set[bytes]] = {}
    for item in stored.values():
        by_series.setdefault((item.study, item.series), set()).add(item.data)
        by_study.setdefault(item.study, set()).add(item.data)
    for (study, series), datas in by_series.items():
        got = {p.content for p in parts(get(local_stack, f"/rs/studies/{study}/series/{series}"))}
        assert datas <= got, series
    for study, datas in by_study.items():
        got = {p.content for p in parts(get(local_stack, f"/rs/studies/{study}"))}
        assert datas <= got, study


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        MULTIPART,
        "multipart/related; type=application/dicom",
        f"{MULTIPART}; transfer-syntax=*",
        "multipart/related",
        "application/dicom",
        "text/html, */*;q=0.1",
    ],
)
def test_acceptable_media_types_give_the_original(
    local_stack: LocalStack, stored: dict[str, Stored], accept: str | None
) -> None:
    item = stored["CT_small.dcm"]
    headers = {"Accept": accept} if accept else {}
    response = get(local_stack, f"/rs/studies/{item.study}/series/{item.series}", headers=headers)
    assert response.status_code == 200
    assert item.data in {p.content for p in parts(response)}


def test_transfer_syntax_parameter(local_stack: LocalStack, stored: dict[str, Stored]) -> None:
    item = stored["CT_small.dcm"]
    path = f"/rs/studies/{item.study}/series/{item.series}/instances/{item.sop}"
    same = get(
        local_stack, path, headers={"Accept": f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.1"}
    )
    assert same.status_code == 200
    baseline = get(
        local_stack,
        path,
        headers={"Accept": f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50"},
    )
    assert baseline.status_code == 406  # a 16-bit CT
    assert "8-bit" in baseline.json()["message"]
    unsupported = get(
        local_stack,
        path,
        headers={"Accept": f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.80"},
    )
    assert unsupported.status_code == 406
    assert "not supported" in unsupported.json()["message"]
    # the range the transcoder can produce wins over the one it cannot
    accept = f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.80, {MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.90; q=0.5"
    (part,) = parts(get(local_stack, path, headers={"Accept": accept}))
    assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
    ds = pydicom.dcmread(io.BytesIO(part.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    original = pydicom.dcmread(io.BytesIO(item.data))
    assert (ds.pixel_array == original.pixel_array).all()


@pytest.mark.parametrize(
    "accept",
    ["application/dicom+json", 'multipart/related; type="application/octet-stream"', "image/jpeg"],
)
def test_unacceptable_media_types_are_406(
    local_stack: LocalStack, stored: dict[str, Stored], accept: str
) -> None:
    item = stored["CT_small.dcm"]
    response = get(local_stack, f"/rs/studies/{item.study}", headers={"Accept": accept})
    assert response.status_code == 406
    assert response.json()["message"]


def test_unknown_uids_404_and_malformed_400(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    item = stored["CT_small.dcm"]
    assert get(local_stack, "/rs/studies/1.2.3.4.5.6.7").status_code == 404
    assert get(local_stack, f"/rs/studies/{item.study}/series/1.2.3").status_code == 404
    wrong_series = f"/rs/studies/{item.study}/series/1.2.3/instances/{item.sop}"
    assert get(local_stack, wrong_series).status_code == 404
    assert get(local_stack, "/rs/studies/1.02.3").status_code == 400
    assert get(local_stack, f"/rs/studies/{item.study}?anonymize=perhaps").status_code == 400


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"requestType": "WADOX"}, 400),
        ({"requestType": None}, 400),
        ({"studyUID": None}, 400),
        ({"objectUID": "1.02"}, 400),
        ({"anonymize": "perhaps"}, 400),
        ({"rows": "64", "contentType": "application/dicom"}, 400),
        ({"windowCenter": "40", "windowWidth": "400", "contentType": "application/dicom"}, 400),
        ({"windowCenter": "40"}, 400),
        ({"windowCenter": "40", "windowWidth": "0.5"}, 400),
        ({"windowCenter": "high", "windowWidth": "400"}, 400),
        ({"rows": "0"}, 400),
        ({"columns": "-3"}, 400),
        ({"rows": "99999"}, 400),
        ({"frameNumber": "0"}, 400),
        ({"frameNumber": "2"}, 400),  # CT_small has one frame
        ({"imageQuality": "101"}, 400),
        ({"region": "0.5,0.5,0.2,1"}, 400),
        ({"annotation": "patient"}, 400),
        ({"presentationUID": "1.2.3"}, 400),
        ({"transferSyntax": "abc"}, 400),
        ({"contentType": "image/jpeg", "transferSyntax": "1.2.840.10008.1.2.1"}, 400),
        ({"rows": "64", "transferSyntax": "1.2.840.10008.1.2.1"}, 400),
        ({"contentType": "image/gif"}, 406),
        ({"contentType": "text/html"}, 406),
        ({"transferSyntax": "1.2.840.10008.1.2.4.50"}, 406),  # 16-bit
        ({"transferSyntax": "1.2.840.10008.1.2.4.80"}, 406),  # not produced
        ({"seriesUID": "1.2.3.4"}, 404),
        ({"objectUID": "1.2.3.4"}, 404),
    ],
)
def test_wado_uri_errors(
    local_stack: LocalStack, stored: dict[str, Stored], change: dict[str, str | None], status: int
) -> None:
    params = {**uri_params(stored["CT_small.dcm"]), **change}
    response = get(local_stack, "/wado", params={k: v for k, v in params.items() if v is not None})
    assert response.status_code == status
    assert response.json()["message"]


@pytest.mark.parametrize("ts", ["original", "*", "1.2.840.10008.1.2.1"])
def test_wado_uri_transfer_syntax_original(
    local_stack: LocalStack, stored: dict[str, Stored], ts: str | None
) -> None:
    item = stored["CT_small.dcm"]
    extra = {"transferSyntax": ts} if ts else {}
    response = get(local_stack, "/wado", params=uri_params(item, **extra))
    assert response.status_code == 200
    assert response.content == item.data


def test_dicomweb_client_retrieves(local_stack: LocalStack, stored: dict[str, Stored]) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(
        url=local_stack.base_url,
        wado_url_prefix="rs",
        headers={"Authorization": local_stack.api_key},
    )
    item = stored["CT_small.dcm"]
    instance = client.retrieve_instance(item.study, item.series, item.sop)
    assert instance.SOPInstanceUID == item.sop
    series = client.retrieve_series(item.study, item.series)
    assert item.sop in {ds.SOPInstanceUID for ds in series}
    study = client.retrieve_study(item.study)
    assert item.sop in {ds.SOPInstanceUID for ds in study}


# ------------------------------------------------------------------ any size


@pytest.fixture(scope="module")
def large(local_stack: LocalStack) -> Stored:
    """pydicom-data's 7.2 MB RG1_UNCR.dcm, stored through the storage layer directly
    (STOW takes at most 4.5 MB per request)."""
    data = dicom_files.data("RG1_UNCR.dcm")
    archive = local_stack.archive
    result = store(
        StoreRequest([Part(data, {})], "DIRECT", local_stack.base_url),
        objects=archive.objects,
        index=archive.index,
    )
    assert result.status == 200
    return Stored("RG1_UNCR.dcm", data, *_uids(data))


def test_large_object_via_wado_uri_is_a_redirect_to_the_object(
    local_stack: LocalStack, large: Stored
) -> None:
    response = get(local_stack, "/wado", params=uri_params(large, contentType="application/dicom"))
    assert [r.status_code for r in response.history] == [303]
    assert response.status_code == 200
    assert response.content == large.data
    assert response.headers["Content-Type"] == "application/dicom"
    assert "/dicom/" in response.url and "signature=" in response.url.lower()
    assert urlsplit(response.url).port != urlsplit(local_stack.base_url).port  # another origin
    # requests drops Authorization when the redirect leaves the API's origin.
    assert "Authorization" not in response.request.headers


def test_large_study_via_wado_rs_is_assembled_and_redirected(
    local_stack: LocalStack, large: Stored
) -> None:
    response = get(local_stack, f"/rs/studies/{large.study}")
    assert [r.status_code for r in response.history] == [303]
    assert "/retrieve/" in response.url
    assert "Authorization" not in response.request.headers
    assert large.data in {p.content for p in parts(response)}  # with any corpus relatives


def test_dicomweb_client_follows_the_redirect(local_stack: LocalStack, large: Stored) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(
        url=local_stack.base_url,
        wado_url_prefix="rs",
        headers={"Authorization": local_stack.api_key},
    )
    sent: list[requests.PreparedRequest] = []
    client._session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request))
    instances = client.retrieve_series(large.study, large.series)
    (instance,) = [i for i in instances if i.SOPInstanceUID == large.sop]
    assert len(instance.PixelData) == len(pydicom.dcmread(io.BytesIO(large.data)).PixelData)
    to_s3 = [r for r in sent if "/retrieve/" in (r.url or "")]
    assert to_s3 and all("Authorization" not in r.headers for r in to_s3)


def test_redirect_without_following(local_stack: LocalStack, large: Stored) -> None:
    response = get(local_stack, f"/rs/studies/{large.study}", allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("http://127.0.0.1:")
    assert response.content == b""


# ------------------------------------------------------------------ anonymization


def test_anonymized_retrieval_is_consistent_and_clean(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    item = stored["CT_small.dcm"]
    original = pydicom.dcmread(io.BytesIO(item.data))
    path = f"/rs/studies/{item.study}/series/{item.series}"
    first = [p.content for p in parts(get(local_stack, path, params={"anonymize": "true"}))]
    second = [p.content for p in parts(get(local_stack, path, params={"anonymize": "TRUE"}))]
    assert first == second  # deterministic: same UIDs and bytes on every request
    datasets = [pydicom.dcmread(io.BytesIO(c)) for c in first]
    ds = next(d for d in datasets if d.InstanceNumber == original.InstanceNumber)
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName) != str(original.PatientName)
    assert ds.StudyInstanceUID != item.study and ds.StudyInstanceUID.startswith("2.25.")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PixelData == original.PixelData
    assert not [e for e in ds if e.tag.is_private]
    uri = get(
        local_stack,
        "/wado",
        params=uri_params(item, contentType="application/dicom", anonymize="yes"),
    )
    assert uri.status_code == 200
    by_uri = pydicom.dcmread(io.BytesIO(uri.content))
    assert by_uri.SOPInstanceUID == ds.SOPInstanceUID  # series by series, object by object
    assert by_uri.StudyInstanceUID == ds.StudyInstanceUID
    # The download is named after the new UID, never the original one.
    disposition = uri.headers["Content-Disposition"]
    assert f'filename="{by_uri.SOPInstanceUID}.dcm"' in disposition
    assert item.sop not in disposition


def test_burned_in_annotation_is_refused_when_anonymizing(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids(BurnedInAnnotation="YES")
    response = requests.post(
        f"{local_stack.base_url}/stowRsListener/WADOTEST/studies",
        data=data,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 200
    item = Stored("burned", data, *_uids(data))
    path = f"/rs/studies/{item.study}/series/{item.series}/instances/{item.sop}"
    refused = get(local_stack, path, params={"anonymize": "true"})
    assert refused.status_code == 409
    assert "burned-in" in refused.json()["message"]
    assert get(local_stack, path).status_code == 200  # the original is still served


def test_large_anonymized_object_is_assembled_and_redirected(
    local_stack: LocalStack, large: Stored
) -> None:
    response = get(
        local_stack,
        "/wado",
        params=uri_params(large, contentType="application/dicom", anonymize="yes"),
    )
    assert [r.status_code for r in response.history] == [303]
    assert "/retrieve/" in response.url
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.SOPInstanceUID != large.sop


# ------------------------------------------------------------------ rendering and transcoding


def _image(response: requests.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def fresh(stack: LocalStack, name: str, **uids: str) -> Stored:
    """A corpus file stored under new UIDs (other modules store the originals, some as
    other files sharing their SOP Instance UID)."""
    data = dicom_files.with_new_uids(name, **uids)  # type: ignore[arg-type]
    requests.post(
        f"{stack.base_url}/stowRsListener/WADOTEST/studies",
        data=data,
        headers={"Authorization": stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    ).raise_for_status()
    return Stored(name, data, *_uids(data))


def test_single_frame_image_defaults_to_jpeg_multi_frame_to_dicom(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    ct = fresh(local_stack, "CT_small.dcm")
    response = get(local_stack, "/wado", params=uri_params(ct))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert _image(response).size == (128, 128)
    multi = fresh(local_stack, "emri_small.dcm")
    response = get(local_stack, "/wado", params=uri_params(multi))
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.content == multi.data
    report = fresh(local_stack, "rtplan.dcm")
    assert get(local_stack, "/wado", params=uri_params(report)).content == report.data


def test_rendered_jpeg_and_png_with_every_parameter(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    multi = fresh(local_stack, "emri_small.dcm")  # 10 frames of 64x64
    params = uri_params(
        multi,
        contentType="image/png",
        frameNumber="10",
        rows="32",
        windowCenter="500",
        windowWidth="1000",
        region="0,0,1,0.5",
    )
    response = get(local_stack, "/wado", params=params)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert _image(response).size == (64, 32)  # the top half, fitted into 32 rows
    jpeg = get(
        local_stack,
        "/wado",
        params=uri_params(multi, contentType="image/jpeg", frameNumber="2", imageQuality="20"),
    )
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.content[:2] == b"\xff\xd8"
    too_far = get(local_stack, "/wado", params=uri_params(multi, frameNumber="11"))
    assert too_far.status_code == 400
    assert "number of frames" in too_far.json()["message"]


def test_non_image_objects_are_not_rendered(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    report = fresh(local_stack, "rtplan.dcm")
    response = get(local_stack, "/wado", params=uri_params(report, contentType="image/jpeg"))
    assert response.status_code == 406
    assert "not an image" in response.json()["message"]


@pytest.mark.parametrize(
    "ts",
    [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.90",
    ],
)
def test_wado_uri_transcodes_losslessly(
    local_stack: LocalStack, stored: dict[str, Stored], ts: str
) -> None:
    item = fresh(local_stack, "JPEG-LL.dcm")  # NM, JPEG Lossless SV1, signed 16-bit
    params = uri_params(item, contentType="application/dicom", transferSyntax=ts)
    response = get(local_stack, "/wado", params=params)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.SOPInstanceUID == item.sop
    original = pydicom.dcmread(io.BytesIO(item.data))
    from shared.dicom import pixels  # pydicom has no SV1 decoder here: our own reads both

    assert (pixels.decode_frame(ds, 0).array == pixels.decode_frame(original, 0).array).all()


def test_wado_uri_transcodes_8_bit_colour_to_jpeg_baseline(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    item = fresh(local_stack, "SC_rgb.dcm")
    params = uri_params(item, transferSyntax="1.2.840.10008.1.2.4.50")  # contentType implied
    response = get(local_stack, "/wado", params=params)
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.LossyImageCompression == "01"


def test_anonymize_combines_with_transcoding_and_rendering(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    item = fresh(local_stack, "CT_small.dcm")
    params = uri_params(
        item, contentType="application/dicom", anonymize="yes", transferSyntax="1.2.840.10008.1.2"
    )
    ds = pydicom.dcmread(io.BytesIO(get(local_stack, "/wado", params=params).content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.SOPInstanceUID != item.sop
    rendered = get(local_stack, "/wado", params=uri_params(item, anonymize="yes"))
    assert rendered.headers["Content-Type"] == "image/jpeg"
    assert _image(rendered).size == (128, 128)
    rs = get(
        local_stack,
        f"/rs/studies/{item.study}/series/{item.series}/instances/{item.sop}",
        params={"anonymize": "true"},
        headers={"Accept": f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.90"},
    )
    (part,) = parts(rs)
    anonymous = pydicom.dcmread(io.BytesIO(part.content))
    assert anonymous.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert anonymous.PatientIdentityRemoved == "YES"


def test_burned_in_annotation_refuses_anonymized_rendering(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids(BurnedInAnnotation="YES")
    requests.post(
        f"{local_stack.base_url}/stowRsListener/WADOTEST/studies",
        data=data,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    ).raise_for_status()
    item = Stored("burned", data, *_uids(data))
    response = get(local_stack, "/wado", params=uri_params(item, anonymize="yes"))
    assert response.status_code == 409


def test_wado_rs_series_transcoding_mixes_stored_and_transcoded(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    item = fresh(local_stack, "MR_small_jp2klossless.dcm")  # stored J2K lossless
    fresh(local_stack, "MR_small.dcm", study=item.study, series=item.series)  # stored native
    ts = "1.2.840.10008.1.2.4.90"
    response = get(
        local_stack,
        f"/rs/studies/{item.study}/series/{item.series}",
        headers={"Accept": f"{MULTIPART}; transfer-syntax={ts}"},
    )
    assert response.status_code == 200
    got = parts(response)
    assert len(got) > 1
    for part in got:
        assert part.content_type == f"application/dicom; transfer-syntax={ts}"
        assert pydicom.dcmread(io.BytesIO(part.content)).file_meta.TransferSyntaxUID == ts


def test_dicomweb_client_asks_for_a_transfer_syntax(
    local_stack: LocalStack, stored: dict[str, Stored]
) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(
        url=local_stack.base_url,
        wado_url_prefix="rs",
        headers={"Authorization": local_stack.api_key},
    )
    item = fresh(local_stack, "US1_J2KR.dcm" if dicom_files.available() else "SC_rgb_rle.dcm")
    instance = client.retrieve_instance(
        item.study,
        item.series,
        item.sop,
        media_types=(("application/dicom", "1.2.840.10008.1.2.4.70"),),
    )
    assert instance.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    original = pydicom.dcmread(io.BytesIO(item.data))
    from shared.dicom import pixels  # pydicom has no SV1 decoder here: our own decodes both

    assert (pixels.decode_frame(instance, 0).array == pixels.decode_frame(original, 0).array).all()


def test_large_transcoded_answers_are_assembled_and_redirected(
    local_stack: LocalStack, large: Stored
) -> None:
    ts = "1.2.840.10008.1.2"  # 7.2 MB native stays over the inline limit
    response = get(
        local_stack,
        f"/rs/studies/{large.study}/series/{large.series}/instances/{large.sop}",
        headers={"Accept": f"{MULTIPART}; transfer-syntax={ts}"},
    )
    assert [r.status_code for r in response.history] == [303]
    (part,) = parts(response)
    ds = pydicom.dcmread(io.BytesIO(part.content))
    assert ds.file_meta.TransferSyntaxUID == ts
    original = pydicom.dcmread(io.BytesIO(large.data))
    assert ds.PixelData == original.PixelData
    uri = get(
        local_stack,
        "/wado",
        params=uri_params(large, contentType="application/dicom", transferSyntax=ts),
    )
    assert [r.status_code for r in uri.history] == [303]
    assert pydicom.dcmread(io.BytesIO(uri.content)).file_meta.TransferSyntaxUID == ts
    thumbnail = get(local_stack, "/wado", params=uri_params(large, rows="128"))
    assert thumbnail.history == []  # rendered images are small: inline
    assert Image.open(io.BytesIO(thumbnail.content)).size == (121, 128)
