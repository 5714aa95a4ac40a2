"""The audit trail: one record per request, with the key, the UIDs and the outcome, and
never a patient's name or ID (PS3.15 A.5 events)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import audit
from shared.adapters.audit_log import FileAuditSink
from tools import audit as audit_tool
from tools.make_events import all_events

EVENTS = {name: event for name, event in all_events().items() if "httpMethod" in event}


def build(event, status=200, transaction="WADO-RS"):
    return audit.build(
        event, transaction=transaction, status=status, size=10, started=time.perf_counter()
    )


@pytest.mark.parametrize("name", sorted(n for n in EVENTS if "preflight" not in n))
def test_every_sample_request_gives_a_record_with_its_key_route_and_uids(name: str) -> None:
    event = EVENTS[name]
    record = build(event).as_dict()
    assert record["audit"] is True
    assert record["keyId"] == "0a1b2c3d" and record["sourceIp"] == "198.51.100.10"
    assert record["route"] == event["resource"]
    study = (event.get("pathParameters") or {}).get("STUDY")
    if study:
        assert record["studies"] == [study]


@pytest.mark.parametrize(
    ("transaction", "method", "route", "expected"),
    [
        ("QIDO-RS", "GET", "/q/studies", ("Query", "110112", "E")),
        ("STOW-RS", "POST", "/s/studies", ("DICOM Instances Transferred", "110104", "C")),
        ("WADO-RS", "GET", "/rs/studies/{STUDY}", ("DICOM Instances Transferred", "110104", "R")),
        (
            "WADO-RS",
            "GET",
            "/rs/studies/{STUDY}/metadata",
            ("DICOM Instances Accessed", "110103", "R"),
        ),
        ("LIFECYCLE", "DELETE", "/rs/studies/{STUDY}", ("DICOM Study Deleted", "110105", "D")),
        (
            "LIFECYCLE",
            "DELETE",
            "/rs/studies/{STUDY}/series/{SERIES}",
            ("DICOM Study Deleted", "110105", "D"),
        ),
        (
            "LIFECYCLE",
            "POST",
            "/rs/restore/studies/{STUDY}",
            ("DICOM Instances Transferred", "110104", "C"),
        ),
    ],
)
def test_events_follow_ps3_15_annex_a5(transaction, method, route, expected) -> None:
    record = build({"httpMethod": method, "resource": route}, transaction=transaction)
    assert (record.event, record.eventId, record.action) == expected


@pytest.mark.parametrize(
    ("status", "outcome"), [(200, 0), (303, 0), (304, 0), (403, 4), (404, 4), (503, 8)]
)
def test_outcomes(status: int, outcome: int) -> None:
    assert build({}, status=status).outcome == outcome


@given(
    names=st.lists(
        st.sampled_from(["PatientName", "PatientID", "00100010", "Smith", "x y", "limit"]),
        max_size=4,
    ),
    values=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4),
)
def test_query_values_never_reach_the_record(names, values) -> None:
    """Whatever a search asks for, the record keeps attribute names, never the values
    (UIDs excepted: they name studies, not patients)."""
    query = dict.fromkeys(names, values) or {"PatientName": values}
    event = {
        "httpMethod": "GET",
        "resource": "/o3-dpacs-wado/qido/{AET}/studies",
        "multiValueQueryStringParameters": query,
        "requestContext": {"authorizer": {"keyId": "k1", "keyLabel": "viewer"}},
    }
    record = json.loads(json.dumps(build(event, transaction="QIDO-RS").as_dict()))
    derived = record["studies"] + record["series"] + record["instances"] + record["queryKeys"]
    for value in values:
        assert value not in derived
    allowed = {"PatientName", "PatientID", "00100010", "limit", "<other>"}
    assert set(record["queryKeys"]) <= allowed
    # Every field, but an update's versions, which only its records carry.
    assert set(record) == set(audit.AuditRecord.__dataclass_fields__) - {"versions"} | {"audit"}


def test_an_update_record_names_versions_and_attributes_never_values() -> None:
    record = audit.update_record(
        operation_id="op-1",
        key_id="k1",
        key_label="records office",
        source_ip="10.0.0.1",
        study_uid="1.2.3",
        versions=[("1.2.3.4", "a" * 64, "b" * 64)],
        keywords=("PatientName", "PatientID"),
        failed=False,
        started=0.0,
    ).as_dict()
    assert (record["action"], record["eventId"], record["requestId"]) == ("U", "110103", "op-1")
    assert record["queryKeys"] == ["PatientID", "PatientName"]
    assert record["versions"] == [{"instance": "1.2.3.4", "before": "a" * 64, "after": "b" * 64}]
    assert (record["studies"], record["instances"], record["outcome"]) == (
        ["1.2.3"],
        ["1.2.3.4"],
        0,
    )


def test_uids_are_kept_and_anything_else_dropped_with_a_cap() -> None:
    touched = audit.Touched()
    touched.add("studies", ["1.2.3", "SMITH^JOHN", "1.2.3", "1.2.4\\1.2.5"])
    assert touched.studies == ["1.2.3", "1.2.4", "1.2.5"]
    touched.add("series", [f"1.2.{n}" for n in range(audit.MAX_UIDS + 5)])
    assert len(touched.series) == audit.MAX_UIDS and touched.more == 5


def test_the_file_sink_appends_lines_and_the_tool_finds_a_study(tmp_path: Path, capsys) -> None:
    sink = FileAuditSink(tmp_path / "audit.jsonl")
    for study in ("1.2.3", "1.2.4", "1.2.3"):
        event = {
            "httpMethod": "GET",
            "resource": "/rs/studies/{STUDY}",
            "pathParameters": {"STUDY": study},
        }
        sink.write(build(event).as_dict())
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3
    assert audit_tool.main(["--study", "1.2.3", "--data-dir", str(tmp_path), "--json"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["studies"] for r in found] == [["1.2.3"], ["1.2.3"]]
    assert audit_tool.main(["--study", "9.9", "--data-dir", str(tmp_path)]) == 1
    assert audit_tool.main(["--study", "1.2.3", "--insights"]) == 0
    assert "1.2.3" in capsys.readouterr().out
