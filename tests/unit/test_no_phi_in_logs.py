"""Nothing of a dataset's patient data reaches the logs, whatever the outcome."""

from __future__ import annotations

import logging

import pytest

from shared.dicomweb.multipart import build_related
from shared.errors import StorageUnavailable
from tests.fakes import FakeBlobStore, FakeIndex
from tests.support import dicom_files
from tests.support.handlers import Context, load, rest_event

SECRET_NAME = "Zyxwvut^Qponmlk"
SECRET_ID = "PID-98765-SECRET"
SECRET_ACCESSION = "ACC-55555-SECRET"


@pytest.fixture
def stow(monkeypatch):
    from shared import bootstrap, config

    blobs, index = FakeBlobStore(), FakeIndex()
    module = load("stow")
    with module.archive.using(bootstrap.build(config.settings(), objects=blobs, index=index)):
        yield module, blobs, index


def post(module, *datas: bytes):
    body = build_related([(d, "application/dicom") for d in datas], "BND")
    event = rest_event(
        "POST",
        "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
        "/o3-dpacs-wado/stowRsListener/AE1/studies",
        body=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=BND'},
        path_parameters={"CALLING_AET": "AE1"},
    )
    return module.lambda_handler(event, Context())


def test_patient_values_never_logged(stow, caplog, capsys) -> None:
    module, _, index = stow
    caplog.set_level(logging.DEBUG)
    good = dicom_files.with_new_uids(
        patient_id=SECRET_ID, PatientName=SECRET_NAME, AccessionNumber=SECRET_ACCESSION
    )
    bad_uid = dicom_files.with_new_uids(
        patient_id=SECRET_ID, PatientName=SECRET_NAME, SOPClassUID="1.2.3.0004"
    )
    assert post(module, good, bad_uid, dicom_files.data("MR_truncated.dcm"))["statusCode"] == 202
    assert post(module, good)["statusCode"] == 200
    index.fail = True
    post(module, dicom_files.with_new_uids(patient_id=SECRET_ID, PatientName=SECRET_NAME))
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err
    assert "stow" in text  # the request line was logged
    for secret in (SECRET_NAME, "Zyxwvut", SECRET_ID, SECRET_ACCESSION):
        assert secret not in text


def test_storage_unavailable_is_503_not_500(stow) -> None:
    module, _, index = stow
    index.fail = True
    response = post(module, dicom_files.with_new_uids())
    assert response["statusCode"] == 503
    assert isinstance(StorageUnavailable("x"), Exception)


@pytest.mark.parametrize(
    "module", ["shared.dicom.render", "shared.dicom.transcode", "shared.dicom.anonymize"]
)
def test_modules_that_read_datasets_silence_pydicom_value_warnings(module: str) -> None:
    import subprocess
    import sys

    script = (
        f"import {module}\n"
        "import logging\n"
        "from pydicom import config\n"
        "assert config.settings.reading_validation_mode == config.IGNORE\n"
        "assert logging.getLogger('pydicom').level == logging.ERROR\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_deletes_and_restores_never_log_patient_values(caplog, capsys) -> None:
    from shared import bootstrap, config
    from tests.fakes import FakeObjectStore, FakeSearchCatalog

    objects, index = FakeObjectStore(), FakeIndex()
    stow_module, lifecycle_module = load("stow"), load("lifecycle")
    archive = bootstrap.build(
        config.settings(), objects=objects, index=index, catalog=FakeSearchCatalog(index)
    )
    data = dicom_files.with_new_uids(
        patient_id=SECRET_ID, PatientName=SECRET_NAME, AccessionNumber=SECRET_ACCESSION
    )
    caplog.set_level(logging.DEBUG)
    with stow_module.archive.using(archive), lifecycle_module.archive.using(archive):
        assert post(stow_module, data)["statusCode"] == 200
        study = next(iter(index.instances.values())).study_uid
        for method, resource, path in (
            ("DELETE", "/o3-dpacs-wado/rs/studies/{STUDY}", f"/o3-dpacs-wado/rs/studies/{study}"),
            (
                "POST",
                "/o3-dpacs-wado/rs/restore/studies/{STUDY}",
                f"/o3-dpacs-wado/rs/restore/studies/{study}",
            ),
        ):
            event = rest_event(method, resource, path, path_parameters={"STUDY": study})
            event["requestContext"]["authorizer"] = {"scopes": "admin", "keyId": "k"}
            assert lifecycle_module.lambda_handler(event, Context())["statusCode"] in (200, 204)
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err
    assert "deleted" in text and "restored" in text
    for secret in (SECRET_NAME, "Zyxwvut", SECRET_ID, SECRET_ACCESSION):
        assert secret not in text
