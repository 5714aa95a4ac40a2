"""WADO-URI parameters and WADO-RS Accept negotiation (PS3.18 §8.7, §9.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.dicomweb import wado
from shared.errors import BadRequest, NotAcceptable

UIDS = {
    "requestType": "WADO",
    "studyUID": "1.2.3",
    "seriesUID": "1.2.3.4",
    "objectUID": "1.2.3.4.5",
}
CT_TS = "1.2.840.10008.1.2.1"


def parse(**extra: str) -> wado.UriRequest:
    return wado.parse_uri({k: [v] for k, v in {**UIDS, **extra}.items()})


# ------------------------------------------------------------------ WADO-URI content type


def test_absent_content_type_follows_the_standard_default() -> None:
    request = parse()
    assert request.content_types == ()
    assert request.choose(image=True, single_frame=True) == wado.JPEG
    assert request.choose(image=True, single_frame=False) == wado.DICOM
    assert request.choose(image=False, single_frame=True) == wado.DICOM


def test_transfer_syntax_or_rendering_parameters_decide_an_absent_content_type() -> None:
    assert parse(transferSyntax="original").choose(image=True, single_frame=True) == wado.DICOM
    assert parse(transferSyntax=CT_TS).choose(image=True, single_frame=True) == wado.DICOM
    framed = parse(frameNumber="3")
    assert framed.choose(image=True, single_frame=False) == wado.JPEG
    with pytest.raises(NotAcceptable, match="not an image"):
        framed.choose(image=False, single_frame=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/dicom", (wado.DICOM,)),
        ("image/jpeg", (wado.JPEG,)),
        ("image/png", (wado.PNG,)),
        ("image/*", (wado.JPEG,)),
        ("image/gif, image/png", (wado.PNG,)),
        ("application/dicom;q=0.5, image/jpeg", (wado.JPEG, wado.DICOM)),
        ("image/jpeg, */*", (wado.JPEG, wado.ANY)),
        ("*/*", ()),
    ],
)
def test_content_type_lists_are_ordered_by_quality(value: str, expected: tuple[str, ...]) -> None:
    assert parse(contentType=value).content_types == expected


def test_image_content_types_fall_back_to_dicom_for_non_images_only_when_listed() -> None:
    both = parse(contentType="image/jpeg, application/dicom")
    assert both.choose(image=True, single_frame=True) == wado.JPEG
    assert both.choose(image=False, single_frame=True) == wado.DICOM
    with pytest.raises(NotAcceptable, match="not an image"):
        parse(contentType="image/jpeg").choose(image=False, single_frame=True)
    anything = parse(contentType="image/png, */*")
    assert anything.choose(image=False, single_frame=True) == wado.DICOM
    assert anything.choose(image=True, single_frame=False) == wado.PNG


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        ({"contentType": "image/gif"}, NotAcceptable, "contentType"),
        ({"contentType": "text/html"}, NotAcceptable, "contentType"),
        (
            {"contentType": "application/dicom; transfer-syntax=1.2.840.10008.1.2"},
            BadRequest,
            "must not",
        ),
        ({"contentType": "image/jpeg", "transferSyntax": CT_TS}, BadRequest, "transferSyntax"),
        ({"rows": "10", "transferSyntax": CT_TS}, BadRequest, "exclude"),
        ({"rows": "10", "contentType": "application/dicom"}, BadRequest, "rendered images only"),
        ({"frameNumber": "2", "contentType": "application/dicom"}, BadRequest, "rendered"),
        ({"rows": "0"}, BadRequest, "rows"),
        ({"rows": "ten"}, BadRequest, "rows"),
        ({"columns": "9000"}, BadRequest, "columns"),
        ({"frameNumber": "0"}, BadRequest, "frameNumber"),
        ({"frameNumber": "-1"}, BadRequest, "frameNumber"),
        ({"imageQuality": "0"}, BadRequest, "imageQuality"),
        ({"imageQuality": "101"}, BadRequest, "imageQuality"),
        ({"windowCenter": "40"}, BadRequest, "together"),
        ({"windowWidth": "400"}, BadRequest, "together"),
        ({"windowCenter": "40", "windowWidth": "0"}, BadRequest, "at least 1"),
        ({"windowCenter": "nan", "windowWidth": "400"}, BadRequest, "decimal"),
        ({"windowCenter": "40", "windowWidth": "wide"}, BadRequest, "decimal"),
        ({"region": "0,0,1"}, BadRequest, "region"),
        ({"region": "0.5,0,0.4,1"}, BadRequest, "region"),
        ({"region": "0,0,1.5,1"}, BadRequest, "region"),
        ({"annotation": "patient"}, BadRequest, "not supported"),
        ({"presentationUID": "1.2.3"}, BadRequest, "not supported"),
        ({"transferSyntax": "1.2.abc"}, BadRequest, "UID"),
        ({"anonymize": "maybe"}, BadRequest, "anonymize"),
    ],
)
def test_bad_parameters_get_a_clear_4xx(
    extra: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse(**extra)


def test_rendering_parameters_are_parsed() -> None:
    request = parse(
        contentType="image/png",
        rows="256",
        columns="128",
        windowCenter="-600.5",
        windowWidth="1500",
        frameNumber="3",
        imageQuality="75",
        region="0.1,0.2,0.9,1",
        anonymize="yes",
    )
    assert request.anonymize
    assert request.rendering_asked
    r = request.rendering
    assert (r.rows, r.columns, r.frame, r.quality) == (256, 128, 3, 75)
    assert r.window == (-600.5, 1500.0)
    assert r.region == (0.1, 0.2, 0.9, 1.0)
    assert parse().rendering.quality == 90


def test_transfer_syntax_values() -> None:
    assert parse(transferSyntax="original").transfer_syntax is None
    assert parse(transferSyntax="*").transfer_syntax is None
    assert parse(transferSyntax="1.2.840.10008.1.2.4.90").transfer_syntax == (
        "1.2.840.10008.1.2.4.90"
    )


def test_repeated_parameters_are_refused() -> None:
    with pytest.raises(BadRequest, match="more than once"):
        wado.parse_uri({**{k: [v] for k, v in UIDS.items()}, "rows": ["1", "2"]})


# ------------------------------------------------------------------ WADO-RS Accept

MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, None),
        ("*/*", None),
        (MULTIPART, None),
        (f"{MULTIPART}; transfer-syntax=*", None),
        (f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.90"),
        (
            'multipart/related; type=application/dicom; transfer-syntax="1.2.840.10008.1.2"',
            "1.2.840.10008.1.2",
        ),
        ("application/dicom; transfer-syntax=1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.70"),
        # a producible syntax wins over one the transcoder cannot make, whatever the order
        (
            f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.80, {MULTIPART}; transfer-syntax=1.2.840.10008.1.2.1; q=0.5",
            "1.2.840.10008.1.2.1",
        ),
        # by quality
        (
            f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.90; q=0.4, {MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.70",
        ),
        # only an unsupported one: returned, the service decides (served if already stored so)
        (f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.80"),
    ],
)
def test_rs_negotiation(accept: str | None, expected: str | None) -> None:
    assert wado.negotiate_rs(accept) == expected


@pytest.mark.parametrize(
    "accept", ["application/dicom+json", "image/jpeg", 'multipart/related; type="image/jpeg"']
)
def test_rs_negotiation_refuses_other_types(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        wado.negotiate_rs(accept)


def test_rs_negotiation_refuses_a_malformed_transfer_syntax() -> None:
    with pytest.raises(BadRequest, match="not a valid UID"):
        wado.negotiate_rs(f"{MULTIPART}; transfer-syntax=1.02.3")


# ------------------------------------------------------------------ viewer resources


@pytest.mark.parametrize(
    ("accept", "original", "uncompressed", "media"),
    [
        (None, True, False, set()),
        ("*/*", True, False, set()),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', True, False, set()),
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", True, False, set()),
        ('multipart/related; type="application/octet-stream"', False, True, set()),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1',
            False,
            True,
            set(),
        ),
        ('multipart/related; type="image/jpeg"', False, False, {"image/jpeg"}),
        ('multipart/related; type="image/jls", multipart/related; type="image/jp2"', False, False,
         {"image/jls", "image/jp2"}),
    ],
)  # fmt: skip
def test_frames_accept(
    accept: str | None, original: bool, uncompressed: bool, media: set[str]
) -> None:
    found = wado.negotiate_frames(accept)
    assert (found.original, found.uncompressed, set(found.media)) == (original, uncompressed, media)


@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="application/dicom"', "application/dicom+json", "text/html",
     'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50'],
)  # fmt: skip
def test_frames_accept_refused(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        wado.negotiate_frames(accept)


@pytest.mark.parametrize(("text", "numbers"), [("1", (1,)), ("1,3,5", (1, 3, 5)), (" 2 ", (2,))])
def test_frame_numbers(text: str, numbers: tuple[int, ...]) -> None:
    assert wado.frame_numbers(text) == numbers


@given(st.text(max_size=40))
def test_frame_numbers_never_raise_anything_but_400(text: str) -> None:
    try:
        numbers = wado.frame_numbers(text)
    except BadRequest:
        return
    assert numbers and all(n >= 1 for n in numbers)


@pytest.mark.parametrize("accept", [None, "*/*", "application/dicom+json", "application/json"])
def test_metadata_accept(accept: str | None) -> None:
    wado.negotiate_metadata(accept)


@pytest.mark.parametrize(
    "accept", ["application/dicom+xml", 'multipart/related; type="application/dicom"']
)
def test_metadata_accept_refused(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        wado.negotiate_metadata(accept)


def test_rendered_parameters() -> None:
    request = wado.parse_rendered(
        {"window": ["40,400,sigmoid"], "viewport": ["300,200"], "quality": ["80"]},
        "image/png",
        frame=3,
    )
    assert request.media == "image/png"
    rendering = request.rendering
    assert (rendering.frame, rendering.rows, rendering.columns) == (3, 200, 300)
    assert (rendering.window, rendering.window_function, rendering.quality) == (
        (40.0, 400.0),
        "SIGMOID",
        80,
    )
    thumbnail = wado.parse_rendered({}, None, thumbnail=True)
    assert (thumbnail.media, thumbnail.rendering.rows, thumbnail.rendering.columns) == (
        "image/jpeg",
        128,
        128,
    )


@pytest.mark.parametrize(
    ("params", "thumbnail"),
    [
        ({"viewport": ["10,10,0,0,5,5"]}, False),
        ({"viewport": ["0,10"]}, False),
        ({"window": ["40"]}, False),
        ({"window": ["40,0"]}, False),
        ({"window": ["40,400,cubic"]}, False),
        ({"quality": ["101"]}, False),
        ({"window": ["40,400"]}, True),
        ({"annotation": ["patient"]}, False),
    ],
)
def test_rendered_parameters_refused(params: dict[str, list[str]], thumbnail: bool) -> None:
    with pytest.raises(BadRequest):
        wado.parse_rendered(params, None, thumbnail=thumbnail)


def test_rendered_accept_refused() -> None:
    with pytest.raises(NotAcceptable):
        wado.parse_rendered({}, "application/dicom")
