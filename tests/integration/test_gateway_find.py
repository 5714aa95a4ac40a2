"""C-FIND through ``dicomweb-gateway`` with dcmtk's ``findscu`` (Debian dcmtk) in front and the
local stack behind: the answers are the archive's QIDO-RS results, per level and model;
what QIDO cannot answer is refused with its status; names in another character set come
back in it; the audit trail names the calling AE and UIDs, never the patient."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from shared import keys
from tests.support import dicom_files
from tests.support.debian_tools import require_debian_tool
from tests.support.gateway_run import GATEWAY_AE, gateway, stow
from tests.support.served import Served, free_port, served

pytestmark = [pytest.mark.integration, pytest.mark.tools, pytest.mark.xdist_group("gateway")]

WORKSTATION = "WORKSTATION"


@dataclass
class Site:
    stack: Served
    port: int
    workdir: Path
    study: str  # Doe^Jane, P-FIND-1: one CT series of 3 instances
    series: str
    instances: list[str]
    latin_study: str  # Buc^Jérôme (ISO_IR 100), P-FIND-2: one MR instance


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("gateway-find")
    key, _ = keys.generate("gateway-find")
    (workdir / "stack").mkdir()
    with served(workdir / "stack", key) as stack:
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        files = [
            dicom_files.with_new_uids(
                "CT_small.dcm",
                study=study,
                series=series,
                patient_id="P-FIND-1",
                PatientName="Doe^Jane",
                StudyDate="20240305",
                InstanceNumber=number,
            )
            for number in (1, 2, 3)
        ]
        latin = dicom_files.with_new_uids(
            "MR_small.dcm",
            patient_id="P-FIND-2",
            PatientName="Buc^Jérôme",
            SpecificCharacterSet="ISO_IR 100",
            StudyDate="20231120",
        )
        stow(stack.base_url, key, [*files, latin])
        instances = [
            str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(f)).SOPInstanceUID) for f in files
        ]
        latin_study = str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(latin)).StudyInstanceUID)
        port = free_port()
        with gateway(
            workdir,
            stack.base_url,
            key,
            port,
            workdir / "spool",
            allow=(WORKSTATION, "STORER:store"),
        ):
            yield Site(stack, port, workdir, study, series, instances, latin_study)


def findscu(
    site: Site, tmp_path: Path, *keys_: str, model: str = "-S", calling: str = WORKSTATION
) -> tuple[subprocess.CompletedProcess[str], list[pydicom.Dataset]]:
    """``findscu`` with ``-k`` keys; the responses it extracted, in order."""
    binary = require_debian_tool("findscu", "dcmtk")
    out = tmp_path / f"rsp-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    done = subprocess.run(
        [
            binary,
            "-d",
            model,
            "-aet",
            calling,
            "-aec",
            GATEWAY_AE,
            "-X",
            "-od",
            str(out),
            *[arg for key in keys_ for arg in ("-k", key)],
            "127.0.0.1",
            str(site.port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def status_of(done: subprocess.CompletedProcess[str]) -> str:
    """The DIMSE status of the final C-FIND response, as ``findscu -d`` prints it."""
    statuses = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-f]{4})", done.stdout + done.stderr)
    return statuses[-1] if statuses else ""


def test_study_level_by_patient_name_wildcard(site: Site, tmp_path: Path) -> None:
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientName=Doe*",
        "StudyInstanceUID",
        "StudyDate",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
    )
    assert done.returncode == 0, done.stderr
    assert [str(ds.StudyInstanceUID) for ds in found] == [site.study]
    [study] = found
    assert study.QueryRetrieveLevel == "STUDY"
    assert study.StudyDate == "20240305"
    assert int(study.NumberOfStudyRelatedInstances) == 3
    assert study.ModalitiesInStudy == "CT"
    assert study.RetrieveAETitle == GATEWAY_AE


def test_date_range_and_patient_root(site: Site, tmp_path: Path) -> None:
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20231101-20231130",
        "StudyInstanceUID",
    )
    assert done.returncode == 0, done.stderr
    assert [str(ds.StudyInstanceUID) for ds in found] == [site.latin_study]
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientID=P-FIND-1",
        "PatientName",
        model="-P",
    )
    assert done.returncode == 0, done.stderr
    assert [(ds.PatientID, str(ds.PatientName)) for ds in found] == [("P-FIND-1", "Doe^Jane")]
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientID=P-FIND-1",
        "StudyInstanceUID",
        model="-P",
    )
    assert [str(ds.StudyInstanceUID) for ds in found] == [site.study]


def test_series_and_image_levels(site: Site, tmp_path: Path) -> None:
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={site.study}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert done.returncode == 0, done.stderr
    assert [(str(ds.SeriesInstanceUID), ds.Modality) for ds in found] == [(site.series, "CT")]
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={site.study}",
        f"SeriesInstanceUID={site.series}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(site.instances)
    assert sorted(int(ds.InstanceNumber) for ds in found) == [1, 2, 3]
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={site.study}",
        f"SeriesInstanceUID={site.series}",
        f"SOPInstanceUID={site.instances[0]}\\{site.instances[2]}",
    )
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(
        [site.instances[0], site.instances[2]]
    )


def test_names_come_back_in_the_requested_character_set(site: Site, tmp_path: Path) -> None:
    done, found = findscu(
        site,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 100",
        "PatientID=P-FIND-2",
        "PatientName",
    )
    assert done.returncode == 0, done.stderr
    [study] = found
    assert study.SpecificCharacterSet == "ISO_IR 100"
    assert str(study.PatientName) == "Buc^Jérôme"
    raw = next(tmp_path.glob("rsp-*/rsp0001.dcm")).read_bytes()
    assert "Jérôme".encode("latin-1") in raw
    done, found = findscu(
        site, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=P-FIND-2", "PatientName"
    )
    [study] = found
    assert study.SpecificCharacterSet == "ISO_IR 192"
    assert str(study.PatientName) == "Buc^Jérôme"


@pytest.mark.parametrize(
    ("keys_", "model", "status"),
    [
        (("QueryRetrieveLevel=SERIES", "SeriesInstanceUID"), "-S", "0xa900"),  # relational
        (("QueryRetrieveLevel=PATIENT", "PatientID"), "-S", "0xa900"),  # no patient level
        (("QueryRetrieveLevel=STUDY", "Modality=CT"), "-S", "0xa900"),  # a series key
        (("QueryRetrieveLevel=STUDY", "PatientComments=x*"), "-S", "0xc000"),  # not matchable
        (("QueryRetrieveLevel=STUDY", "StudyDate=2024-13-45"), "-S", "0xc000"),  # malformed
        (
            ("QueryRetrieveLevel=STUDY", "StudyDate=20240101-20240301", "StudyTime=0800-1000"),
            "-S",
            "0xc000",
        ),  # combined date-time matching was not negotiated
    ],
)
def test_what_qido_cannot_answer_is_refused(
    site: Site, tmp_path: Path, keys_: tuple[str, ...], model: str, status: str
) -> None:
    done, found = findscu(site, tmp_path, *keys_, model=model)
    assert not found
    assert status_of(done) == status, done.stdout + done.stderr


def test_an_ae_limited_to_store_may_not_find(site: Site, tmp_path: Path) -> None:
    done, found = findscu(
        site, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", calling="STORER"
    )
    assert not found
    assert status_of(done) == "0x0124", done.stdout + done.stderr


def test_the_trail_names_the_caller_and_uids_never_the_patient(site: Site, tmp_path: Path) -> None:
    findscu(site, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Doe*", "StudyInstanceUID")
    trail = (site.workdir / "audit" / "audit.jsonl").read_text()
    records = [json.loads(line) for line in trail.splitlines()]
    mine = [r for r in records if r["queryKeys"] == ["PatientName"]]
    assert mine
    assert mine[-1]["keyLabel"] == WORKSTATION
    assert mine[-1]["event"] == "Query"
    assert mine[-1]["studies"] == [site.study]
    assert "Doe" not in trail
    assert "P-FIND" not in trail
    assert "Jérôme" not in trail
