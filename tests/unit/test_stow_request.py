"""STOW-RS request checks: media types, sizes, negotiation, URL parameters."""

from __future__ import annotations

import pytest

from shared.dicomweb import stow_request
from shared.dicomweb.multipart import build_related
from shared.errors import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)

BODY = build_related([(b"DICM", "application/dicom")], "B")


def parse(
    content_type: str | None, body: bytes = BODY, accept: str | None = None, limit: int = 10_000
):
    return stow_request.parse(
        content_type=content_type, accept=accept, body=body, inline_limit=limit
    )


def test_multipart_with_dicom_parts() -> None:
    assert len(parse('multipart/related; type="application/dicom"; boundary=B')) == 1


def test_type_parameter_may_be_missing() -> None:
    assert len(parse("multipart/related; boundary=B")) == 1


def test_bare_application_dicom_is_one_part() -> None:
    parts = parse("application/dicom", body=b"X" * 10)
    assert [p.content for p in parts] == [b"X" * 10]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/octet-stream", "multipart/form-data; boundary=B"],
)
def test_other_media_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse(content_type)


def test_metadata_and_bulkdata_form_is_415_with_reason() -> None:
    with pytest.raises(UnsupportedMediaType, match="metadata"):
        parse('multipart/related; type="application/dicom+json"; boundary=B')


def test_missing_boundary_is_400() -> None:
    with pytest.raises(BadRequest, match="boundary"):
        parse('multipart/related; type="application/dicom"')


def test_empty_body_is_400() -> None:
    with pytest.raises(BadRequest):
        parse('multipart/related; type="application/dicom"; boundary=B', body=b"")


def test_body_over_the_inline_limit_is_413_naming_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 100 bytes"):
        parse("application/dicom", body=b"x" * 101, limit=100)


def test_xml_only_accept_is_406() -> None:
    with pytest.raises(NotAcceptable):
        parse("application/dicom", accept="application/dicom+xml")


def test_study_uid_in_path_must_be_valid() -> None:
    assert stow_request.study_uid_from_path("1.2.3") == "1.2.3"
    with pytest.raises(BadRequest):
        stow_request.study_uid_from_path("1.2.03")
    with pytest.raises(BadRequest):
        stow_request.study_uid_from_path("abc")


@pytest.mark.parametrize("aet", ["", "A" * 17, "A\\B", "A%0AB"])
def test_calling_aet_must_be_an_ae_title(aet: str) -> None:
    with pytest.raises(BadRequest):
        stow_request.calling_aet(aet)


def test_calling_aet_is_percent_decoded() -> None:
    assert stow_request.calling_aet("MY%20AE") == "MY AE"
