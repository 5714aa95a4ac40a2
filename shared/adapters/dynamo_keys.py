"""The DynamoDB key layout, shared by the write and read adapters (docs/access-patterns.md).

Items (PK / SK):

* ``SOP#<sop>`` / ``SOP``: guard for global SOP Instance UID uniqueness; where it lives.
* ``STUDY#<study>`` / ``STUDY``: study attributes, counters, aggregate sets.
* ``STUDY#<study>`` / ``SERIES#<series>``: series attributes (+ its study's), counter.
* ``STUDY#<study>`` / ``INSTANCE#<series>#<number>#<sop>``: instance attributes (+ parents').
* ``PATIENT#<PatientID>`` / ``PATIENT#<IssuerOfPatientID>``: demographics, counters.
* ``GRAM#<column>#<trigram>`` / ``<sdt>``: a posting of the substring index: a study whose
  indexed text (``t``) of that column holds the trigram, keyed by the study's date-time.
* ``GRAM#<column>#<trigram>`` / ``#``: how many studies hold it (``n``, for planning).
"""

from __future__ import annotations

import base64
import hashlib
import json

from shared.dicom.normalize import date_key, time_key
from shared.dicomweb.query import Query, normalise

STUDY_SK = "STUDY"
SERIES_PREFIX = "SERIES#"
INSTANCE_PREFIX = "INSTANCE#"
LIST_STUDIES = "STUDY"
LIST_PATIENTS = "PATIENT"
_MAX_INSTANCE_NUMBER = 10**10
#: Sort key of a trigram's count item: before every posting (their keys start with a digit).
GRAM_COUNT_SK = "#"


def uid_digest(uid: str) -> str:
    """A 12-character digest of a UID, used as a set member for distinct counts."""
    return base64.urlsafe_b64encode(hashlib.sha256(uid.encode()).digest()[:9]).decode()


def study_pk(study_uid: str) -> str:
    """Partition key of a study and its series and instances."""
    return f"STUDY#{study_uid}"


def series_sk(series_uid: str) -> str:
    """Sort key of a series item."""
    return f"{SERIES_PREFIX}{series_uid}"


def instance_sk(series_uid: str, instance_number: str, sop_uid: str) -> str:
    """Sort key of an instance: by series, then InstanceNumber (unnumbered last), then UID."""
    try:
        number = int(str(instance_number).strip())
    except ValueError:
        number = -1
    ordinal = f"{number:010d}" if 0 <= number < _MAX_INSTANCE_NUMBER else "~"
    return f"{INSTANCE_PREFIX}{series_uid}#{ordinal}#{sop_uid}"


def guard_pk(sop_uid: str) -> str:
    """Partition key of the SOP Instance UID guard."""
    return f"SOP#{sop_uid}"


def patient_pk(patient_id: str) -> str:
    """Partition key of a patient (all issuers of one PatientID)."""
    return f"PATIENT#{patient_id}"


def patient_sk(issuer: str) -> str:
    """Sort key of a patient: the issuer of the PatientID."""
    return f"PATIENT#{issuer}"


def gram_pk(column: str, gram: str) -> str:
    """Partition key of a trigram of one indexed text column (postings and count)."""
    return f"GRAM#{column}#{gram}"


def pack_texts(texts: tuple[str, ...]) -> str:
    """A study's indexed texts, one per column, as the single string ``tx`` keeps (a
    string, so that a condition can compare it whole)."""
    return json.dumps(texts, ensure_ascii=False, separators=(",", ":"))


def unpack_texts(packed: str | None, columns: int) -> tuple[str, ...]:
    """The texts :func:`pack_texts` packed; empty ones when there are none."""
    parts = [str(p) for p in json.loads(packed)] if packed else []
    return tuple(parts[:columns]) + ("",) * (columns - len(parts))


def study_sort_key(study_date: str, study_time: str, study_uid: str) -> str:
    """``sdt``: study date + time then UID, the sort key of every study-ordered index."""
    date = date_key(study_date) or "00000000"
    clock = time_key(study_time) or "000000.000000"
    return f"{date}{clock}#{study_uid}"


def study_date_bounds(query: Query) -> tuple[str, str] | None:
    """``sdt`` bounds of a query's StudyDate (with StudyTime when they form one range)."""
    date = query.condition("StudyDate")
    if date is None or date.kind not in ("single", "range"):
        return None
    time = query.condition("StudyTime") if query.combined_datetime else None
    if date.kind == "single":
        day = normalise("DA", date.value)
        return f"{day}000000.000000", f"{day}235959.999999#~"
    low = f"{date.low}{time.low if time and time.low else '000000.000000'}" if date.low else ""
    high = (
        f"{date.high}{time.high if time and time.high else '235959.999999'}#~" if date.high else ""
    )
    return low, high
