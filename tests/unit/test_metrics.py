"""Per-transaction metrics (CloudWatch EMF): well-formed documents, failures by reason, and
what the handlers count."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import metrics
from tests.support.handlers import Context, load, rest_event


def _valid_emf(document: dict) -> None:
    """What CloudWatch needs to extract metrics: every dimension and metric named in the
    directive has a value at the top level."""
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == metrics.NAMESPACE
    for dimension_set in directive["Dimensions"]:
        for dimension in dimension_set:
            assert isinstance(document[dimension], str)
    for metric in directive["Metrics"]:
        assert metric["Name"] in document


@given(
    status=st.integers(min_value=200, max_value=599),
    duration=st.floats(min_value=0, max_value=30_000),
    size=st.integers(min_value=0, max_value=10**9),
    stored=st.integers(min_value=0, max_value=1000),
)
def test_documents_are_valid_emf_and_failures_carry_their_reason(
    status, duration, size, stored
) -> None:
    found = metrics.documents(
        "STOW-RS",
        status=status,
        duration_ms=duration,
        size=size,
        counts={"InstancesStored": stored, "Other": 3},
    )
    for document in found:
        _valid_emf(document)
    assert found[0]["Transaction"] == "STOW-RS"
    assert found[0]["Requests"] == [1.0] or found[0]["Requests"] == 1.0
    assert "Other" not in found[0]
    if status >= 400:
        assert len(found) == 2 and found[1]["Reason"] == str(status)
    else:
        assert len(found) == 1


def test_stow_reports_instances_stored_and_latency(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import config

    monkeypatch.setattr(config, "settings", lambda: config.Settings(metrics=True))
    from shared import bootstrap
    from tests.fakes import FakeBlobStore, FakeIndex
    from tests.support import dicom_files

    fakes = bootstrap.build(
        config.settings(),
        objects=FakeBlobStore(),
        index=FakeIndex(),
        audit=type("S", (), {"write": lambda self, r: None})(),
    )
    module = load("stow")
    event = rest_event(
        "POST",
        "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies",
        "/o3-dpacs-wado/stowRsListener/M1/studies",
        body=dicom_files.with_new_uids(),
        headers={"Content-Type": "application/dicom"},
        path_parameters={"CALLING_AET": "M1"},
    )
    capsys.readouterr()
    with module.archive.using(fakes):
        assert module.lambda_handler(event, Context())["statusCode"] == 200
    emitted = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    (document,) = emitted
    assert document["Transaction"] == "STOW-RS"
    assert document["InstancesStored"] in ([1.0], 1.0)
    assert document["Latency"] not in ([0.0], 0.0)


def test_metrics_can_be_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    from shared import config

    assert not config.Settings.from_mapping({"POWERTOOLS_METRICS_DISABLED": "true"}).metrics
    assert config.Settings.from_mapping({}).metrics
    documents = metrics.documents("QIDO-RS", status=200, duration_ms=1.0, size=1)
    metrics.emit(documents, enabled=False)
    assert capsys.readouterr().out == ""
    metrics.emit(documents, enabled=True)
    assert '"_aws"' in capsys.readouterr().out
