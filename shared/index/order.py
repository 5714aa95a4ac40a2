"""The sort keys of the index, shared by every backend: studies newest first, instances by
series then InstanceNumber, patients and studies by normalised name."""

from __future__ import annotations

from shared.dicom.normalize import date_key, time_key
from shared.dicomweb.query import Query, normalise

_MAX_INSTANCE_NUMBER = 10**10
INSTANCE_PREFIX = "INSTANCE#"


def study_sort_key(study_date: str, study_time: str, study_uid: str) -> str:
    """``sdt``: study date + time then UID, the sort key of every study-ordered index."""
    date = date_key(study_date) or "00000000"
    clock = time_key(study_time) or "000000.000000"
    return f"{date}{clock}#{study_uid}"


def instance_sort_key(series_uid: str, instance_number: str, sop_uid: str) -> str:
    """Where an instance sorts in its study: by series, then InstanceNumber (unnumbered
    last), then UID."""
    try:
        number = int(str(instance_number).strip())
    except ValueError:
        number = -1
    ordinal = f"{number:010d}" if 0 <= number < _MAX_INSTANCE_NUMBER else "~"
    return f"{INSTANCE_PREFIX}{series_uid}#{ordinal}#{sop_uid}"


def study_name_key(name: str, study_uid: str) -> str:
    """A study's place in a name index: ``name`` (its PatientName's
    :func:`~shared.dicom.normalize.person_name_key`), then its UID; '' without a name (not
    in the index)."""
    return f"{name}#{study_uid}" if name else ""


def patient_list_key(name: str, patient_id: str, issuer: str) -> str:
    """A patient's place in the patient list: ``name`` (as for :func:`study_name_key`),
    PatientID, issuer."""
    return f"{name}#{patient_id}\\{issuer}"


def study_date_bounds(query: Query) -> tuple[str, str] | None:
    """Bounds of :func:`study_sort_key` for a query's StudyDate (with StudyTime when they
    form one range)."""
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
