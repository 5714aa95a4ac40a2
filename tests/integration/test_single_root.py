"""One base URL for every transaction: STOW-RS at ``POST rs/studies`` beside QIDO-RS and
WADO-RS, driven by clients nobody here wrote (dicomweb-client with only ``url=``, and
Debian's Orthanc 1.10 with its DICOMweb plugin configured with the single root)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from local.stack import LocalStack
from shared.dicomweb import media_types
from shared.dicomweb.multipart import build_related, new_boundary, parse_related
from tests.integration.test_stow_http import instance_row
from tests.support import dicom_files, orthanc
from tests.support.debian_tools import ORTHANC_DICOMWEB_PLUGIN, require_debian_tool

pytestmark = pytest.mark.integration

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Files Orthanc pushes and pulls: uncompressed, JPEG 2000, JPEG baseline colour, RLE.
FILES = ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm")


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _stored_bytes(stack: LocalStack, data: bytes) -> bytes:
    """The instance as the archive holds it (WADO-RS, as stored)."""
    study, series, sop = _uids(data)
    reply = requests.get(
        f"{stack.base_url}/rs/studies/{study}/series/{series}/instances/{sop}",
        headers={"Authorization": stack.api_key, "Accept": AS_STORED},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    media = media_types.parse(reply.headers["Content-Type"])
    (part,) = parse_related(reply.content, media.param("boundary") or "")
    return part.content


def test_stow_at_the_root_stores_with_the_default_calling_aet(local_stack: LocalStack) -> None:
    data = dicom_files.with_new_uids("CT_small.dcm")
    study, _, sop = _uids(data)
    boundary = new_boundary()
    reply = requests.post(
        f"{local_stack.base_url}/rs/studies/{study}",
        data=build_related([(data, "application/dicom")], boundary),
        headers={
            "Authorization": local_stack.api_key,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert instance_row(local_stack, sop).calling_aet == "DICOMWEB"
    assert _stored_bytes(local_stack, data) == data


def test_stow_at_the_root_refuses_another_study_and_a_missing_key(
    local_stack: LocalStack,
) -> None:
    data = dicom_files.with_new_uids("CT_small.dcm")
    url = f"{local_stack.base_url}/rs/studies/1.2.3.4.5"
    headers = {"Content-Type": "application/dicom"}
    assert requests.post(url, data=data, headers=headers, timeout=60).status_code == 401
    headers["Authorization"] = local_stack.api_key
    reply = requests.post(url, data=data, headers=headers, timeout=60)
    assert reply.status_code == 409
    assert reply.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]


def test_a_stow_too_large_for_the_root_names_the_upload_path(local_stack: LocalStack) -> None:
    reply = requests.post(
        f"{local_stack.base_url}/rs/studies",
        data=b"\0" * 4_600_000,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert reply.status_code == 413
    assert "/uploads" in reply.text


def test_a_preflight_for_a_store_at_the_root_allows_the_headers(local_stack: LocalStack) -> None:
    reply = requests.options(
        f"{local_stack.base_url}/rs/studies",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=30,
    )
    assert reply.status_code in (200, 204)
    allowed = reply.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_dicomweb_client_with_only_a_url_stores_searches_and_retrieves(
    local_stack: LocalStack,
) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(
        url=f"{local_stack.base_url}/rs", headers={"Authorization": local_stack.api_key}
    )
    data = dicom_files.with_new_uids("emri_small.dcm")
    study, series, sop = _uids(data)
    answer = client.store_instances([pydicom.dcmread(io.BytesIO(data))])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop
    (found,) = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found["0020000D"]["Value"] == [study]
    (instance,) = client.search_for_instances(study_instance_uid=study)
    assert instance["00080018"]["Value"] == [sop]
    back = client.retrieve_instance(study, series, sop)
    assert back.SOPInstanceUID == sop
    assert back.pixel_array.tobytes() == pydicom.dcmread(io.BytesIO(data)).pixel_array.tobytes()


@pytest.fixture
def peer(local_stack: LocalStack, tmp_path: Path) -> Iterator[orthanc.Orthanc]:
    """Orthanc whose DICOMweb plugin knows the archive by one URL and the key."""
    binary = require_debian_tool("Orthanc", "orthanc")
    require_debian_tool(ORTHANC_DICOMWEB_PLUGIN, "orthanc-dicomweb")
    servers = {
        "archive": {
            "Url": f"{local_stack.base_url}/rs/",
            "HttpHeaders": {"Authorization": local_stack.api_key},
        }
    }
    with orthanc.running(tmp_path / "orthanc", binary, dicomweb={"Servers": servers}) as server:
        yield server


def _orthanc(peer: orthanc.Orthanc, method: str, path: str, **kwargs: Any) -> Any:
    reply = requests.request(method, f"{peer.url}{path}", timeout=120, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json() if reply.content else None


def test_orthanc_with_one_url_pushes_searches_and_pulls(
    local_stack: LocalStack, peer: orthanc.Orthanc
) -> None:
    datas = [dicom_files.with_new_uids(name) for name in FILES]
    # Push: the instances go into Orthanc, then Orthanc's STOW-RS sends them to the archive.
    ids = [_orthanc(peer, "POST", "/instances", data=data)["ID"] for data in datas]
    _orthanc(peer, "POST", "/dicom-web/servers/archive/stow", json={"Resources": ids})
    for data in datas:
        assert _stored_bytes(local_stack, data) == data
    # Search: Orthanc's QIDO-RS through the archive finds each study.
    for data in datas:
        study, _, _ = _uids(data)
        found = _orthanc(
            peer,
            "POST",
            "/dicom-web/servers/archive/qido",
            json={"Uri": "/studies", "Arguments": {"StudyInstanceUID": study}},
        )
        assert len(found) == 1
        assert found[0]["0020000D"]["Value"] == study  # Orthanc's own JSON: a flat value
    # Pull: Orthanc forgets them, then retrieves each study from the archive.
    for identifier in ids:
        _orthanc(peer, "DELETE", f"/instances/{identifier}")
    assert _orthanc(peer, "GET", "/instances") == []
    studies = [{"Study": _uids(data)[0]} for data in datas]
    _orthanc(peer, "POST", "/dicom-web/servers/archive/retrieve", json={"Resources": studies})
    pulled = {
        _uids(body)[2]: body
        for body in (
            requests.get(f"{peer.url}/instances/{i}/file", timeout=60).content
            for i in _orthanc(peer, "GET", "/instances")
        )
    }
    assert pulled == {_uids(data)[2]: data for data in datas}  # byte for byte


def test_orthanc_pulls_what_another_client_stored(
    local_stack: LocalStack, peer: orthanc.Orthanc
) -> None:
    data = dicom_files.with_new_uids("MR_small.dcm")
    reply = requests.post(
        f"{local_stack.base_url}/rs/studies",
        data=data,
        headers={"Authorization": local_stack.api_key, "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    study, _, _ = _uids(data)
    _orthanc(
        peer, "POST", "/dicom-web/servers/archive/retrieve", json={"Resources": [{"Study": study}]}
    )
    (identifier,) = _orthanc(peer, "GET", "/instances")
    pulled = requests.get(f"{peer.url}/instances/{identifier}/file", timeout=60).content
    assert pulled == data
