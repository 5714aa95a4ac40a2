"""tools/smoke.py covers every route of the template with a file the archive accepts."""

from __future__ import annotations

import pydicom
import pytest

from local import template
from shared.dicom.validate import validate
from tools import smoke

ROUTES = template.load().routes


@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if r.method != "OPTIONS"],
    ids=[f"{r.function}.{r.event_name}" for r in ROUTES if r.method != "OPTIONS"],
)
def test_every_route_of_the_template_is_smoked(route: template.Route) -> None:
    assert (route.method, route.path) in smoke.routes_covered(), (
        f"tools/smoke.py has no check of {route.method} {route.path}"
    )


def test_every_function_with_a_preflight_has_one_smoked() -> None:
    preflights = {r.function for r in ROUTES if r.method == "OPTIONS"}
    smoked = {
        r.function
        for r in ROUTES
        if r.method == "OPTIONS" and ("OPTIONS", r.path) in smoke.routes_covered()
    }
    assert smoked == preflights


def test_the_smoke_instance_is_valid_synthetic_and_always_the_same_bytes() -> None:
    data = smoke.smoke_instance()
    assert data == smoke.smoke_instance()
    instance = validate(data, None, inflate_limit=1 << 24)
    assert instance.sop_instance_uid == smoke.SOP_UID
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    assert str(ds.PatientName) == "SMOKE^TEST"
    assert ds.pixel_array.shape == (smoke.SIDE, smoke.SIDE)
