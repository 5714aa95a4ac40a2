"""QIDO-RS on synthetic archives (1k and 10k studies): DynamoDB items read per result, latency.

* Data: studies of 2 series x 2 instances drawn with a fixed seed (surnames weighted like a
  census list, about one study per patient with some returning patients, dates over ten
  years, a realistic modality mix), written through the real write path
  (``DynamoInstanceIndex.add``: one TransactWriteItems per instance) into moto's in-process
  DynamoDB table created from template.yaml. moto deep-copies the whole table before every
  transaction, for its own rollback, which makes loading quadratic in the table size; the
  bench skips that copy while loading and checks instead that every instance is STORED.
* Queries: the QIDO Lambda handler called in-process with API Gateway REST events, about
  15 concrete values per kind drawn from the data. Per request: handler time, time spent
  in DynamoDB client calls (storage), results (checked against the synthetic data),
  ``DynamoSearch.items_read`` and the operations issued (a Scan fails the bench).
* moto answers every Query by sorting the whole table, O(table size) per page, where
  DynamoDB answers in O(log n + page): storage time grows with the archive here, not on
  AWS. Scaling is therefore judged on compute time (handler minus storage calls), on items
  read and, when the result count itself grows with the archive, per result.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import hashlib
import itertools
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

from bench.bench_stow import Timed
from shared._generated.dictionary import ATTRIBUTES
from shared.dicom import attributes
from shared.dicom.normalize import time_key
from shared.dicomweb.query import DEFAULT_LIMIT
from shared.ports import AddOutcome, InstanceRecord
from tests.support.handlers import Context, json_body, load, rest_event

SEED = 20240611
TABLE = "bench-qido"
AET = "BENCH"
UID_ROOT = "1.2.826.0.1.3680043.8.498"
REPEATS = 15
NON_INDEXED_REPEATS = 2
LATENCY_TARGET = 1.5
FIRST_DAY = date(2015, 1, 1)
DAYS = 3653  # ten years

# Surnames with weights close to their frequency per 100,000 (US census 2010), plus a few
# European and Asian names, some with accents (the name index stores them accent-free).
_SURNAMES = (
    ("SMITH", 828), ("JOHNSON", 655), ("WILLIAMS", 550), ("BROWN", 488), ("JONES", 478),
    ("GARCIA", 394), ("MILLER", 382), ("DAVIS", 371), ("RODRIGUEZ", 352), ("MARTINEZ", 347),
    ("HERNANDEZ", 342), ("LOPEZ", 293), ("GONZALEZ", 281), ("WILSON", 272), ("ANDERSON", 266),
    ("THOMAS", 261), ("TAYLOR", 257), ("MOORE", 241), ("JACKSON", 237), ("MARTIN", 234),
    ("LEE", 229), ("PEREZ", 225), ("THOMPSON", 224), ("WHITE", 224), ("HARRIS", 213),
    ("SANCHEZ", 211), ("CLARK", 190), ("RAMIREZ", 190), ("LEWIS", 179), ("ROBINSON", 177),
    ("WALKER", 175), ("YOUNG", 161), ("ALLEN", 160), ("KING", 159), ("WRIGHT", 158),
    ("SCOTT", 149), ("TORRES", 147), ("NGUYEN", 145), ("HILL", 145), ("FLORES", 144),
    ("GREEN", 143), ("ADAMS", 143), ("NELSON", 142), ("BAKER", 140), ("HALL", 138),
    ("RIVERA", 137), ("CAMPBELL", 133), ("MITCHELL", 132), ("CARTER", 131), ("ROBERTS", 131),
    ("GOMEZ", 125), ("PHILLIPS", 122), ("EVANS", 122), ("TURNER", 121), ("DIAZ", 119),
    ("PARKER", 118), ("CRUZ", 118), ("EDWARDS", 117), ("COLLINS", 116), ("REYES", 115),
    ("STEWART", 114), ("MORRIS", 111), ("MORALES", 110), ("MURPHY", 108), ("COOK", 107),
    ("ROGERS", 107), ("GUTIERREZ", 104), ("ORTIZ", 104), ("MORGAN", 103), ("COOPER", 103),
    ("PETERSON", 102), ("BAILEY", 101), ("REED", 101), ("KELLY", 97), ("HOWARD", 97),
    ("RAMOS", 96), ("KIM", 96), ("COX", 95), ("WARD", 95), ("RICHARDSON", 95),
    ("WATSON", 93), ("BROOKS", 92), ("CHAVEZ", 92), ("WOOD", 92), ("JAMES", 92),
    ("BENNETT", 90), ("GRAY", 90), ("MENDOZA", 89), ("RUIZ", 89), ("HUGHES", 88),
    ("PRICE", 88), ("ALVAREZ", 87), ("CASTILLO", 86), ("SANDERS", 86), ("PATEL", 85),
    ("MYERS", 84), ("LONG", 84), ("ROSS", 84), ("FOSTER", 83), ("JIMENEZ", 83),
    ("OLSON", 50), ("WAGNER", 40), ("VASQUEZ", 40), ("GRIFFITH", 40), ("MÜLLER", 30),
    ("SCHMIDT", 30), ("NÚÑEZ", 25), ("ROSSI", 25), ("ZIMMERMAN", 25), ("DUBOIS", 20),
    ("NOWAK", 20), ("FISCHER", 20), ("QUINN", 20), ("XU", 20), ("KEITH", 20),
    ("YAMAMOTO", 15), ("IBRAHIM", 15), ("HOFFMANN", 15), ("BÉLANGER", 10), ("ÖZTÜRK", 10),
    ("OKAFOR", 10), ("VAN DER BERG", 10), ("UNDERWOOD", 10),
)  # fmt: skip
_GIVEN = (
    "JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "THOMAS",
    "CHARLES", "CHRISTOPHER", "DANIEL", "MATTHEW", "ANTHONY", "MARK", "DONALD", "STEVEN",
    "PAUL", "ANDREW", "JOSHUA", "KENNETH", "KEVIN", "BRIAN", "GEORGE", "EDWARD", "RONALD",
    "TIMOTHY", "JASON", "JEFFREY", "RYAN", "JOSÉ", "LUIS", "KEITH", "MARY", "PATRICIA",
    "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH", "KAREN",
    "NANCY", "LISA", "BETTY", "MARGARET", "SANDRA", "ASHLEY", "KIMBERLY", "EMILY", "DONNA",
    "MICHELLE", "DOROTHY", "CAROL", "AMANDA", "MELISSA", "DEBORAH", "STEPHANIE", "MARÍA",
    "JUDITH", "EDITH", "FAITH", "CHLOÉ", "ZOE", "ÉLODIE",
)  # fmt: skip

# modality: weight (series share), SOP Class UID, rows, columns, (description, body part)s
_MODALITIES: dict[str, tuple[int, str, int, int, tuple[tuple[str, str], ...]]] = {
    "CR": (20, "1.2.840.10008.5.1.4.1.1.1", 2500, 2048,
           (("CHEST PA AND LATERAL", "CHEST"), ("KNEE 2 VIEWS", "KNEE"), ("HAND 3 VIEWS", "HAND"))),
    "CT": (20, "1.2.840.10008.5.1.4.1.1.2", 512, 512,
           (("CT HEAD WO CONTRAST", "HEAD"), ("CT CHEST W CONTRAST", "CHEST"),
            ("CT ABDOMEN PELVIS W", "ABDOMEN"))),
    "MR": (15, "1.2.840.10008.5.1.4.1.1.4", 256, 256,
           (("MR BRAIN WO W", "BRAIN"), ("MR LUMBAR SPINE", "LSPINE"), ("MR KNEE LEFT", "KNEE"))),
    "DX": (13, "1.2.840.10008.5.1.4.1.1.1.1", 3000, 2500,
           (("XR CHEST 1 VIEW", "CHEST"), ("XR ANKLE 3 VIEWS", "ANKLE"))),
    "US": (12, "1.2.840.10008.5.1.4.1.1.6.1", 600, 800,
           (("US ABDOMEN COMPLETE", "ABDOMEN"), ("US OB 2ND TRIMESTER", "PELVIS"))),
    "MG": (6, "1.2.840.10008.5.1.4.1.1.1.2", 4096, 3328,
           (("MAMMO SCREENING BILAT", "BREAST"),)),
    "PT": (3, "1.2.840.10008.5.1.4.1.1.128", 200, 200, (("PET CT WHOLE BODY", "WHOLEBODY"),)),
    "XA": (3, "1.2.840.10008.5.1.4.1.1.12.1", 1024, 1024, (("CORONARY ANGIOGRAPHY", "HEART"),)),
    "NM": (2, "1.2.840.10008.5.1.4.1.1.20", 128, 128, (("NM BONE SCAN WHOLE BODY", "WHOLEBODY"),)),
    "RF": (2, "1.2.840.10008.5.1.4.1.1.12.2", 1024, 1024, (("FLUORO ESOPHAGRAM", "ESOPHAGUS"),)),
    "OT": (1, "1.2.840.10008.5.1.4.1.1.7", 1024, 768, (("SCANNED DOCUMENT", ""),)),
    "SR": (1, "1.2.840.10008.5.1.4.1.1.88.22", 0, 0, (("DOSE REPORT", ""),)),
    "SEG": (1, "1.2.840.10008.5.1.4.1.1.66.4", 512, 512, (("AI SEGMENTATION", "CHEST"),)),
    "KO": (1, "1.2.840.10008.5.1.4.1.1.88.59", 0, 0, (("KEY IMAGES", ""),)),
}  # fmt: skip
_MANUFACTURERS = ("GE MEDICAL SYSTEMS", "SIEMENS", "Philips", "CANON_MEC", "FUJIFILM", "AGFA")
_PHYSICIANS = ("HOUSE^GREGORY", "GREY^MEREDITH", "KILDARE^JAMES", "QUINN^MICHAELA", "")
_HOURS = (7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 15, 15, 16, 17, 18, 19, 21, 2)


# ---------------------------------------------------------------- synthetic data


@dataclass(frozen=True)
class Patient:
    """Demographics of one synthetic patient."""

    patient_id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class Series:
    """One synthetic series and its instances' UIDs."""

    uid: str
    modality: str
    number: int
    description: str
    body_part: str
    manufacturer: str
    sop_uids: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    """One synthetic study."""

    uid: str
    patient: Patient
    accession: str
    date: str
    time: str
    description: str
    physician: str
    series: tuple[Series, ...]

    @property
    def datetime_key(self) -> str:
        """StudyDate + normalised StudyTime, as the matcher compares them."""
        return self.date + time_key(self.time)


@dataclass
class Archive:
    """The synthetic studies and lookups to draw query values and expected counts from."""

    studies: list[Study]
    by_patient: dict[str, list[Study]] = field(default_factory=dict)
    patients: list[Patient] = field(default_factory=list)

    def __post_init__(self) -> None:
        for study in self.studies:
            self.by_patient.setdefault(study.patient.patient_id, []).append(study)
        self.patients = [studies[0].patient for studies in self.by_patient.values()]


class _Draw:
    """Seeded draws of realistic values."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._surnames = [s for s, _ in _SURNAMES]
        self._surname_weights = list(itertools.accumulate(w for _, w in _SURNAMES))
        self._modalities = list(_MODALITIES)
        self._modality_weights = [v[0] for v in _MODALITIES.values()]
        self._used: set[str] = set()

    def unique_digits(self, digits: int) -> str:
        while True:
            value = str(self.rng.randrange(10 ** (digits - 1), 10**digits))
            if value not in self._used:
                self._used.add(value)
                return value

    def uid(self) -> str:
        return f"{UID_ROOT}.{self.unique_digits(28)}"

    def patient(self) -> Patient:
        rng = self.rng
        surname = rng.choices(self._surnames, cum_weights=self._surname_weights)[0]
        name = f"{surname}^{rng.choice(_GIVEN)}"
        if rng.random() < 0.3:
            name += f"^{rng.choice('ABCDEFGHJKLMNPRSTW')}"
        if rng.random() < 0.15:  # some sources send mixed case
            name = name.title()
        birth = FIRST_DAY - timedelta(days=rng.randrange(0, 95 * 365))
        return Patient(
            patient_id=f"MRN{self.unique_digits(8)}",
            name=name,
            birth_date=birth.strftime("%Y%m%d"),
            sex=rng.choice("MMMMFFFFFO"),
        )

    def study_date(self) -> str:
        while True:
            day = FIRST_DAY + timedelta(days=self.rng.randrange(DAYS))
            if day.weekday() < 5 or self.rng.random() < 0.4:  # fewer studies at weekends
                return day.strftime("%Y%m%d")

    def study_time(self) -> str:
        rng = self.rng
        clock = f"{rng.choice(_HOURS):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        return f"{clock}.{rng.randrange(1000):03d}" if rng.random() < 0.25 else clock

    def modality(self) -> str:
        return self.rng.choices(self._modalities, weights=self._modality_weights)[0]

    def series(self, study_uid: str, first: str | None) -> Series:
        rng = self.rng
        if first is None:
            modality = self.modality()
        elif first == "PT":
            modality = "CT"  # PET/CT
        else:
            modality = first if rng.random() < 0.6 else self.modality()
        number = 1 if first is None else rng.choice((2, 2, 2, 3, 4, 100))
        uid = f"{study_uid}.{number}"
        description, body_part = rng.choice(_MODALITIES[modality][4])
        return Series(
            uid=uid,
            modality=modality,
            number=number,
            description=description,
            body_part=body_part,
            manufacturer=rng.choice(_MANUFACTURERS),
            sop_uids=(f"{uid}.1", f"{uid}.2"),
        )

    def study(self, patient: Patient) -> Study:
        uid = self.uid()
        first = self.series(uid, None)
        second = self.series(uid, first.modality)
        return Study(
            uid=uid,
            patient=patient,
            accession=self.unique_digits(10),
            date=self.study_date(),
            time=self.study_time(),
            description=first.description,
            physician=self.rng.choice(_PHYSICIANS),
            series=(first, second),
        )


def synthesise(n: int, seed: int = SEED) -> Archive:
    """n studies; about 80% of them for a new patient, the rest for a returning one."""
    draw = _Draw(seed)
    patients: list[Patient] = []
    studies = []
    for _ in range(n):
        if patients and draw.rng.random() < 0.2:
            patient = draw.rng.choice(patients)
        else:
            patient = draw.patient()
            patients.append(patient)
        studies.append(draw.study(patient))
    return Archive(studies)


def _element(keyword: str, *values: Any) -> tuple[str, dict[str, Any]]:
    """A DICOM JSON element as pydicom's to_json_dict writes it (empty: no Value)."""
    tag, vr = ATTRIBUTES[keyword]
    kept = [v for v in values if v != ""]
    if vr == "PN":  # groups separated by "=": alphabetic, ideographic, phonetic
        groups = ("Alphabetic", "Ideographic", "Phonetic")
        kept = [
            {g: part for g, part in zip(groups, v.split("="), strict=False) if part} for v in kept
        ]
    return tag, ({"vr": vr, "Value": kept} if kept else {"vr": vr})


def _doc(*elements: tuple[str, dict[str, Any]]) -> str:
    return attributes.dumps(dict(elements))


def _age(birth: str, on: str) -> str:
    years = int(on[:4]) - int(birth[:4]) - ((on[4:] < birth[4:]) and 1)
    return f"{max(years, 0):03d}Y"


def records(study: Study) -> Iterator[InstanceRecord]:
    """The InstanceRecords STOW would build for the study's instances."""
    p = study.patient
    patient = (
        _element("PatientName", p.name),
        _element("PatientID", p.patient_id),
        _element("PatientBirthDate", p.birth_date),
        _element("PatientSex", p.sex),
    )
    study_json = _doc(
        *patient,
        _element("PatientAge", _age(p.birth_date, study.date)),
        _element("StudyDate", study.date),
        _element("StudyTime", study.time),
        _element("AccessionNumber", study.accession),
        _element("ReferringPhysicianName", study.physician),
        _element("StudyDescription", study.description),
        _element("StudyInstanceUID", study.uid),
        _element("StudyID", study.accession[-6:]),
    )
    for series in study.series:
        _, sop_class, rows, columns, _ = _MODALITIES[series.modality]
        series_json = _doc(
            _element("Modality", series.modality),
            _element("SeriesDescription", series.description),
            _element("SeriesInstanceUID", series.uid),
            _element("SeriesNumber", series.number),
            _element("SeriesDate", study.date),
            _element("SeriesTime", study.time),
            _element("BodyPartExamined", series.body_part),
            _element("Manufacturer", series.manufacturer),
            _element("InstitutionName", "GENERAL HOSPITAL"),
            _element("StationName", f"{series.modality}01"),
        )
        for number, sop_uid in enumerate(series.sop_uids, start=1):
            image = (
                [
                    _element("ImageType", "ORIGINAL", "PRIMARY", "AXIAL"),
                    _element("Rows", rows),
                    _element("Columns", columns),
                    _element("BitsAllocated", 16),
                    _element("PhotometricInterpretation", "MONOCHROME2"),
                ]
                if rows
                else []
            )
            instance_json = _doc(
                _element("SOPClassUID", sop_class),
                _element("SOPInstanceUID", sop_uid),
                _element("InstanceNumber", number),
                _element("ContentDate", study.date),
                _element("ContentTime", study.time),
                *image,
            )
            sha = hashlib.sha256(sop_uid.encode()).hexdigest()
            yield InstanceRecord(
                study_uid=study.uid,
                series_uid=series.uid,
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class,
                transfer_syntax="1.2.840.10008.1.2.1",
                sha256=sha,
                size=rows * columns * 2 + 2048,
                blob_key=f"dicom/{study.uid}/{series.uid}/{sop_uid}/{sha}.dcm",
                calling_aet="MODALITY1",
                received=f"{study.date[:4]}-{study.date[4:6]}-{study.date[6:]}T12:00:00.000000Z",
                patient_id=p.patient_id,
                issuer_of_patient_id="",
                patient_name=p.name.split("=")[0],  # the alphabetic group, as STOW keeps it
                study_date=study.date,
                study_time=study.time,
                accession_number=study.accession,
                modality=series.modality,
                instance_number=str(number),
                study_json=study_json,
                series_json=series_json,
                instance_json=instance_json,
                patient_json=_doc(*patient),
            )


# ---------------------------------------------------------------- query kinds


@dataclass(frozen=True)
class Request:
    """One QIDO request and the number of results the synthetic data says it must return."""

    resource: str
    path: str
    path_parameters: dict[str, str]
    params: dict[str, str]
    expected: int

    def event(self) -> dict[str, Any]:
        event = rest_event(
            "GET",
            self.resource,
            self.path,
            headers={"Accept": "application/dicom+json"},
            path_parameters=self.path_parameters,
        )
        event["queryStringParameters"] = dict(self.params) or None
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in self.params.items()} or None
        return event


def qido_request(resource: str, params: dict[str, str], expected: int, **uids: str) -> Request:
    """A QIDO-RS request of ``resource`` (like ``"studies/{STUDY}/series"``, ``uids`` filling
    its placeholders) expecting ``expected`` matches."""
    template = f"/o3-dpacs-wado/qido/{{AET}}/{resource}"
    path = f"/o3-dpacs-wado/qido/{AET}/{resource}"
    for name, value in uids.items():
        path = path.replace(f"{{{name}}}", value)
    return Request(template, path, {"AET": AET, **uids}, params, expected)


def _capped(count: int, limit: int = DEFAULT_LIMIT) -> int:
    return min(count, limit)


def _name_prefix(rng: random.Random, archive: Archive) -> str:
    return rng.choice(archive.studies).patient.name.upper()[:3]


def _month(rng: random.Random, archive: Archive) -> Request:
    month = rng.choice(archive.studies).date[:6]
    last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
    low, high = f"{month}01", f"{month}{last:02d}"
    count = sum(low <= s.date <= high for s in archive.studies)
    return qido_request("studies", {"StudyDate": f"{low}-{high}"}, _capped(count))


def _week_and_hours(rng: random.Random, archive: Archive) -> Request:
    first = rng.choice(archive.studies).date
    start = date(int(first[:4]), int(first[4:6]), int(first[6:]))
    last = (start + timedelta(days=6)).strftime("%Y%m%d")
    low, high = f"{first}080000.000000", f"{last}170000.999999"
    count = sum(low <= s.datetime_key <= high for s in archive.studies)
    params = {"StudyDate": f"{first}-{last}", "StudyTime": "080000-170000"}
    return qido_request("studies", params, _capped(count))


def _studies_by_name(rng: random.Random, archive: Archive) -> Request:
    prefix = _name_prefix(rng, archive)
    count = sum(s.patient.name.upper().startswith(prefix) for s in archive.studies)
    return qido_request("studies", {"PatientName": f"{prefix}*"}, _capped(count))


def _modalities_in_study(rng: random.Random, archive: Archive) -> Request:
    modality = rng.choice(rng.choice(archive.studies).series).modality
    count = sum(any(x.modality == modality for x in s.series) for s in archive.studies)
    return qido_request("studies", {"ModalitiesInStudy": modality}, _capped(count))


def _series_by_modality(rng: random.Random, archive: Archive) -> Request:
    modality = rng.choice(rng.choice(archive.studies).series).modality
    count = sum(x.modality == modality for s in archive.studies for x in s.series)
    return qido_request("series", {"Modality": modality, "limit": "101"}, _capped(count, 101))


def _patients_by_name(rng: random.Random, archive: Archive) -> Request:
    prefix = _name_prefix(rng, archive)
    count = sum(p.name.upper().startswith(prefix) for p in archive.patients)
    return qido_request("patients", {"PatientName": f"{prefix}*"}, _capped(count))


def _infix(rng: random.Random, archive: Archive) -> Request:
    infix = rng.choice(("ITH", "SON", "LLER"))
    count = sum(infix in s.patient.name.upper() for s in archive.studies)
    return qido_request("studies", {"PatientName": f"*{infix.lower()}*"}, _capped(count))


def _study(rng: random.Random, archive: Archive) -> Study:
    return rng.choice(archive.studies)


def _by_patient_id(rng: random.Random, archive: Archive) -> Request:
    patient_id = _study(rng, archive).patient.patient_id
    return qido_request("studies", {"PatientID": patient_id}, len(archive.by_patient[patient_id]))


def _series_by_uid(rng: random.Random, archive: Archive) -> Request:
    series = rng.choice(_study(rng, archive).series)
    return qido_request("series", {"SeriesInstanceUID": series.uid}, 1)


def _instance_by_uid(rng: random.Random, archive: Archive) -> Request:
    sop_uid = rng.choice(rng.choice(_study(rng, archive).series).sop_uids)
    return qido_request("instances", {"SOPInstanceUID": sop_uid}, 1)


def _offset_page(rng: random.Random, archive: Archive) -> Request:
    expected = max(0, min(50, len(archive.studies) - 200))
    return qido_request("studies", {"offset": "200", "limit": "50"}, expected)


Draw = Callable[[random.Random, Archive], Request]

# name, indexed, draw
KINDS: tuple[tuple[str, bool, Draw], ...] = (
    ("studies?StudyInstanceUID", True,
     lambda r, a: qido_request("studies", {"StudyInstanceUID": _study(r, a).uid}, 1)),
    ("studies?PatientID", True, _by_patient_id),
    ("studies?AccessionNumber", True,
     lambda r, a: qido_request("studies", {"AccessionNumber": _study(r, a).accession}, 1)),
    ("studies?PatientName=ABC*", True, _studies_by_name),
    ("studies?StudyDate=<month>", True, _month),
    ("studies?StudyDate=<week>&StudyTime", True, _week_and_hours),
    ("studies?ModalitiesInStudy", True, _modalities_in_study),
    ("studies?limit=101", True,
     lambda r, a: qido_request("studies", {"limit": "101"}, _capped(len(a.studies), 101))),
    ("studies?offset=200&limit=50", True, _offset_page),
    ("series?Modality&limit=101", True, _series_by_modality),
    ("series?SeriesInstanceUID", True, _series_by_uid),
    ("studies/{s}/series", True,
     lambda r, a: qido_request("studies/{STUDY}/series", {}, 2, STUDY=_study(r, a).uid)),
    ("instances?SOPInstanceUID", True, _instance_by_uid),
    ("studies/{s}/instances", True,
     lambda r, a: qido_request("studies/{STUDY}/instances", {}, 4, STUDY=_study(r, a).uid)),
    ("patients?PatientID", True,
     lambda r, a: qido_request("patients", {"PatientID": _study(r, a).patient.patient_id}, 1)),
    ("patients?PatientName=ABC*", True, _patients_by_name),
    ("studies?PatientName=*abc* (NON-INDEXED)", False, _infix),
)  # fmt: skip


# ---------------------------------------------------------------- measurement


@contextlib.contextmanager
def moto_shortcuts() -> Iterator[None]:
    """Two of moto's whole-table costs skipped; what DynamoDB returns is unchanged.

    * Before each TransactWriteItems moto deep-copies the whole table, only to roll back a
      cancelled transaction (the load checks that none is cancelled); item-level copies
      (an update's old image) are kept.
    * Every Query starts from ``Table.all_items()``, the whole table sorted by key, then
      filters on the partition key and sorts the matches again by the (index) key: the
      first sort is skipped (items returned unsorted), the second still orders the page.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    real_copy, real_all_items = models.copy, Table.all_items

    def deepcopy(value: Any) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value)

    def all_items(table: Table) -> list[Any]:
        if table.range_key_attr:
            return [item for by_range in table.items.values() for item in by_range.values()]
        return list(table.items.values())

    models.copy = SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment]
    Table.all_items = all_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        models.copy = real_copy
        Table.all_items = real_all_items  # type: ignore[method-assign]


def load_table(archive: Archive, client: Any) -> dict[str, Any]:
    """Every instance of ``archive`` added to the DynamoDB table; what the load cost."""
    from shared.adapters.dynamo_index import DynamoInstanceIndex

    calls: Counter[str] = Counter()
    client.meta.events.register(
        "before-call.*.*", lambda event_name, **_: calls.update([event_name.split(".")[-1]])
    )
    index = DynamoInstanceIndex(client, TABLE, sleep=lambda _: None)
    started = time.perf_counter()
    instances = 0
    for study in archive.studies:
        for record in records(study):
            outcome = index.add(record)
            if outcome is not AddOutcome.STORED:
                raise RuntimeError(f"load: {record.sop_instance_uid} {outcome}")
            instances += 1
    seconds = time.perf_counter() - started
    items = client.describe_table(TableName=TABLE)["Table"]["ItemCount"]
    return {
        "studies": len(archive.studies),
        "patients": len(archive.patients),
        "instances": instances,
        "table_items": items,
        "load_s": round(seconds, 1),
        "load_ms_per_instance": round(seconds * 1000 / instances, 2),
        "load_calls_per_instance": {op: round(c / instances, 3) for op, c in calls.items()},
    }


@dataclass(frozen=True)
class Sample:
    """One measured request."""

    total_ms: float
    storage_ms: float
    results: int
    expected: int
    items_read: int
    calls: dict[str, int]

    @property
    def compute_ms(self) -> float:
        return self.total_ms - self.storage_ms

    @property
    def within_target(self) -> bool:
        return self.items_read <= 2 * self.results + _max_page()


def _max_page() -> int:
    from shared.adapters import dynamo_search

    return dynamo_search.MAX_PAGE


class _Runner:
    """Calls the QIDO handler with a DynamoSearch whose reads and time it observes."""

    def __init__(self, client: Any) -> None:
        from shared import bootstrap, config
        from shared.adapters.dynamo_search import DynamoSearch

        self.calls: Counter[str] = Counter()
        self.storage = [0.0]
        client.meta.events.register(
            "before-call.*.*",
            lambda event_name, **_: self.calls.update([event_name.split(".")[-1]]),
        )
        self.search = DynamoSearch(Timed(client, self.storage), TABLE)
        self.module = load("qido")
        self.module.archive.set(bootstrap.build(config.settings(), catalog=self.search))

    def __call__(self, request: Request) -> Sample:
        event = request.event()
        self.search.items_read = 0
        self.storage[0] = 0.0
        self.calls.clear()
        started = time.perf_counter()
        response = self.module.lambda_handler(event, Context())
        elapsed = time.perf_counter() - started
        if response["statusCode"] != 200:
            raise RuntimeError(f"QIDO {request.path} {request.params}: {response['body']}")
        if "Scan" in self.calls:
            raise RuntimeError(f"QIDO {request.path} {request.params} issued a Scan")
        return Sample(
            total_ms=elapsed * 1000,
            storage_ms=self.storage[0] * 1000,
            results=len(json_body(response)),
            expected=request.expected,
            items_read=self.search.items_read,
            calls=dict(self.calls),
        )


def _summary(indexed: bool, samples: list[Sample], requests: list[Request]) -> dict[str, Any]:
    def median(values: Iterator[float]) -> float:
        return round(statistics.median(values), 2)

    wrong = [
        {"path": r.path, "params": r.params, "expected": s.expected, "got": s.results}
        for s, r in zip(samples, requests, strict=True)
        if s.results != s.expected
    ]
    ops: Counter[str] = Counter()
    for s in samples:
        ops.update(s.calls)
    return {
        "indexed": indexed,
        "requests": len(samples),
        "results_median": median(s.results for s in samples),
        "items_read_median": median(s.items_read for s in samples),
        "items_per_result_median": median(s.items_read / max(s.results, 1) for s in samples),
        "items_per_result_max": round(max(s.items_read / max(s.results, 1) for s in samples), 2),
        "items_target_ok": all(s.within_target for s in samples),
        "items_over_target": sum(not s.within_target for s in samples),
        "handler_ms_median": median(s.total_ms for s in samples),
        "storage_ms_median": median(s.storage_ms for s in samples),
        "compute_ms_median": median(s.compute_ms for s in samples),
        "compute_ms_per_result_median": median(s.compute_ms / max(s.results, 1) for s in samples),
        "calls_per_request": {op: round(c / len(samples), 2) for op, c in sorted(ops.items())},
        "wrong_results": wrong,
    }


def _measure(archive: Archive, client: Any) -> dict[str, Any]:
    run = _Runner(client)
    rng = random.Random(SEED + 1)
    plans = {
        name: (
            indexed,
            [draw(rng, archive) for _ in range(REPEATS if indexed else NON_INDEXED_REPEATS)],
        )
        for name, indexed, draw in KINDS
    }
    for _, requests in plans.values():  # warm-up: imports, regexes, first client calls
        run(requests[0])
    kinds = {}
    for name, (indexed, requests) in plans.items():
        kinds[name] = _summary(indexed, [run(r) for r in requests], requests)
    return kinds


def at_size(n: int) -> dict[str, Any]:
    """Load n synthetic studies into a fresh moto table and measure every query kind."""
    import boto3
    from moto import mock_aws

    from local import template as local_template
    from shared import config

    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto's dummy credentials
        INDEX_TABLE=TABLE,
        POWERTOOLS_SERVICE_NAME="bench",
        LOG_LEVEL="WARNING",
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(name, None)
    config.settings.cache_clear()
    archive = synthesise(n)
    with mock_aws(), moto_shortcuts():
        stack = local_template.load()
        client = boto3.client("dynamodb")
        client.create_table(TableName=TABLE, **stack.tables["IndexTable"].create_args)
        loaded = load_table(archive, client)
        print(
            f"  loaded {n:,} studies ({loaded['instances']:,} instances, "
            f"{loaded['table_items']:,} items) in {loaded['load_s']:.1f} s "
            f"({loaded['load_ms_per_instance']:.2f} ms/instance)",
            flush=True,
        )
        kinds = _measure(archive, boto3.client("dynamodb"))
    return {"load": loaded, "kinds": kinds}


# ---------------------------------------------------------------- report


def _ratio(high: float, low: float) -> float:
    return round(high / low, 2) if low else float("inf")


def _scaling(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Ratios large/small of the medians, and whether latency stays within the target.

    When the median result count is the same at both sizes the compute time is compared,
    otherwise (the result set grows with the archive) compute time per result.
    """
    same = small["results_median"] == large["results_median"]
    compute = _ratio(large["compute_ms_median"], small["compute_ms_median"])
    per_result = _ratio(
        large["compute_ms_per_result_median"], small["compute_ms_per_result_median"]
    )
    judged = compute if same else per_result
    return {
        "results": _ratio(large["results_median"], small["results_median"]),
        "items_read": _ratio(large["items_read_median"], small["items_read_median"]),
        "handler_ms": _ratio(large["handler_ms_median"], small["handler_ms_median"]),
        "storage_ms": _ratio(large["storage_ms_median"], small["storage_ms_median"]),
        "compute_ms": compute,
        "compute_ms_per_result": per_result,
        "judged_on": "compute_ms" if same else "compute_ms_per_result",
        "latency_target_ok": judged <= LATENCY_TARGET,
    }


def _print_size(n: int, result: dict[str, Any]) -> None:
    load_ = result["load"]
    print(
        f"\nQIDO-RS, {n:,} studies / {load_['patients']:,} patients / "
        f"{load_['instances']:,} instances ({load_['table_items']:,} items); "
        f"load {load_['load_s']:.1f} s, calls/instance {load_['load_calls_per_instance']}"
    )
    print(
        f"  {'kind':40s} {'res':>5s} {'items':>6s} {'it/res':>6s} {'<=2r+' + str(_max_page()):>8s}"
        f" {'handler':>8s} {'storage':>8s} {'compute':>8s}  ms (medians)"
    )
    for name, k in result["kinds"].items():
        ok = "ok" if k["items_target_ok"] else f"FAIL {k['items_over_target']}/{k['requests']}"
        if not k["indexed"]:
            ok = f"({ok})"
        wrong = (
            f"  WRONG RESULTS {len(k['wrong_results'])}/{k['requests']}"
            if k["wrong_results"]
            else ""
        )
        print(
            f"  {name:40s} {k['results_median']:5.0f} {k['items_read_median']:6.0f}"
            f" {k['items_per_result_median']:6.2f} {ok:>8s} {k['handler_ms_median']:8.1f}"
            f" {k['storage_ms_median']:8.1f} {k['compute_ms_median']:8.1f}{wrong}"
        )


def _print_scaling(small: int, large: int, scaling: dict[str, dict[str, Any]]) -> None:
    print(
        f"\nscaling {small:,} -> {large:,} studies (ratios of medians). handler = whole"
        " in-process handler; storage = inside DynamoDB client calls, which moto answers in"
        " O(table) per Query page (DynamoDB: O(log n + page)); compute = handler - storage."
        f" Latency target (<= {LATENCY_TARGET}x) judged on compute, per result when the"
        " result count grows with the archive (*)."
    )
    print(
        f"  {'kind':40s} {'results':>7s} {'items':>6s} {'handler':>8s} {'storage':>8s}"
        f" {'compute':>8s} {'c/result':>8s}  target"
    )
    for name, s in scaling.items():
        mark = "*" if s["judged_on"] == "compute_ms_per_result" else " "
        print(
            f"  {name:40s} {s['results']:7.2f} {s['items_read']:6.2f} {s['handler_ms']:8.2f}"
            f" {s['storage_ms']:8.2f} {s['compute_ms']:8.2f} {s['compute_ms_per_result']:8.2f}"
            f"  {'ok' if s['latency_target_ok'] else 'FAIL'}{mark}"
        )


def run(sizes: list[int]) -> dict[str, Any]:
    """Every query kind at each archive size; scaling between the smallest and the largest."""
    print(f"\nQIDO-RS benchmark: sizes {sizes}, {REPEATS} requests per kind, seed {SEED}")
    by_size = {}
    for n in sizes:
        by_size[n] = at_size(n)
        _print_size(n, by_size[n])
    report: dict[str, Any] = {
        "seed": SEED,
        "repeats": REPEATS,
        "sizes": {str(n): r for n, r in by_size.items()},
    }
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        scaling = {
            name: _scaling(by_size[small]["kinds"][name], k)
            for name, k in by_size[large]["kinds"].items()
        }
        _print_scaling(small, large, scaling)
        indexed = [name for name, _, _ in KINDS if by_size[large]["kinds"][name]["indexed"]]
        report["scaling"] = {"from": small, "to": large, "kinds": scaling}
        report["targets"] = {
            "items_read_le_2x_results_plus_page": {
                name: all(by_size[n]["kinds"][name]["items_target_ok"] for n in sizes)
                for name in indexed
            },
            "latency_10k_within_1_5x_of_1k": {
                name: scaling[name]["latency_target_ok"] for name in indexed
            },
        }
    return report
