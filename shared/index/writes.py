"""What one change of the index writes, computed once; each backend persists it.

A change is an instance added (:func:`add`), removed (:func:`remove`) or replaced
(:func:`replace`). It reads what the index holds of the instance's study
(:class:`StudyState`; a removal or a replacement reads the study's members too,
:class:`Holding`), and the function here says what it writes: the instance entry and its
guard, the series, study and patient with their counts and distinct members, the study's
substring index (its text, the postings of its trigrams and their counts), the
de-identified lookups and the change log's entry (:class:`Writes`). A backend writes all
of it in one transaction, conditioned on what it read being still so; it derives nothing
itself (it only chooses how to store each part: rows and tables, items and sets).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as copy

from shared.dicom.normalize import person_name_key
from shared.dicomweb.substring import TEXT_KEYS, merge_terms, ngrams, study_terms
from shared.index.order import (
    instance_sort_key,
    patient_list_key,
    study_name_key,
    study_sort_key,
)
from shared.index.records import (
    AddOutcome,
    Change,
    ChangeKind,
    Entry,
    InstanceRecord,
    ReplaceOutcome,
)

#: An entry DynamoDB would refuse (an item over 400 KB) is refused by every backend.
MAX_ENTRY_BYTES = 400 * 1024
COLUMNS: tuple[str, ...] = tuple(TEXT_KEYS.values())
_ISSUER_TAG = "00100021"

UidMap = Callable[[str], str]


# ------------------------------------------------------------------ what a change reads


@dataclass(frozen=True)
class StudyState:
    """A study as the index holds it when a change reads it (``exists`` False: none).

    ``texts``: its substring index text per :data:`COLUMNS` (None: never filed);
    ``texts_sort_key``: the date key that text is filed under."""

    exists: bool = False
    patient_id: str = ""
    issuer: str = ""
    sort_key: str | None = None
    texts: tuple[str, ...] | None = None
    texts_sort_key: str | None = None
    instances: int = 0


@dataclass(frozen=True)
class Member:
    """One instance of a study, as a removal needs to know it."""

    series_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class Holding:
    """What the index holds of one study, as a removal or a replacement reads it: the
    study, its instances (SOP Instance UID -> :class:`Member`), each series' Modality and
    the instance count of the study's patient (0 without a PatientID)."""

    study: StudyState
    members: Mapping[str, Member] = field(default_factory=dict)
    modalities: Mapping[str, str] = field(default_factory=dict)
    patient_instances: int = 0

    def consistent(self) -> bool:
        """Whether the study's count agrees with its members (read at one moment)."""
        return self.study.instances == len(self.members)

    def without(self, entry: Entry) -> Holding:
        """The holding once ``entry`` is removed (a removal of many instances goes on from
        it without reading again)."""
        members = {k: v for k, v in self.members.items() if k != entry.sop_instance_uid}
        series = {m.series_uid for m in members.values()}
        study = (
            copy(self.study, instances=len(members))
            if members
            else StudyState(patient_id=self.study.patient_id, issuer=self.study.issuer)
        )
        return Holding(
            study,
            members,
            {s: m for s, m in self.modalities.items() if s in series},
            max(0, self.patient_instances - 1),
        )


# ------------------------------------------------------------------ what a change writes


@dataclass(frozen=True)
class TextWrite:
    """A study's substring index (``shared.dicomweb.substring``) after a change: its text
    per column and the date key it is filed under, beside what was filed before."""

    texts: tuple[str, ...]
    sort_key: str
    stored: tuple[str, ...] | None = None
    stored_sort_key: str | None = None

    @property
    def changed(self) -> bool:
        """Its text differs from what was filed (or nothing was)."""
        return self.texts != self.stored

    @property
    def moved(self) -> bool:
        """Its date key differs from the one its text is filed under."""
        return self.sort_key != self.stored_sort_key

    def postings(self) -> list[tuple[str, str, str]]:
        """(column, trigram, text) of every posting to (re)write: each trigram of every
        column whose text changed, or of every column when the date key moved (postings
        are filed under it); none when nothing changed."""
        stored = self.stored or ("",) * len(COLUMNS)
        out = []
        for i, column in enumerate(COLUMNS):
            if self.moved or self.texts[i] != stored[i] or self.stored is None:
                out += [(column, g, self.texts[i]) for g in sorted(ngrams(self.texts[i]))]
        return out

    def new_grams(self) -> list[tuple[str, str]]:
        """(column, trigram) the study did not hold before: their study counts grow."""
        stored = self.stored or ("",) * len(COLUMNS)
        return [
            (column, g)
            for i, column in enumerate(COLUMNS)
            for g in sorted(ngrams(self.texts[i]) - ngrams(stored[i]))
        ]


@dataclass(frozen=True)
class TextRemoval:
    """A removed study's substring index: the text that was filed and its date key."""

    texts: tuple[str, ...]
    sort_key: str

    def grams(self) -> list[tuple[str, str]]:
        """(column, trigram) of every posting to remove: their study counts drop."""
        return [
            (column, g)
            for column, text in zip(COLUMNS, self.texts, strict=True)
            for g in sorted(ngrams(text))
        ]


@dataclass(frozen=True)
class SeriesWrite:
    """A series' part of a change. ``attrs`` etc. are set when given; ``instances``: the
    change of its count; ``gone``: its last instance leaves (delete it)."""

    study_uid: str
    series_uid: str
    instances: int = 0
    gone: bool = False
    attrs: str | None = None
    study_attrs: str | None = None
    sort_key: str | None = None
    modality: str = ""  # set when not empty (a series keeps the Modality it has otherwise)
    deidentified: str = ""  # its de-identified UID ('' without a key)


@dataclass(frozen=True)
class StudyWrite:
    """A study's part of a change, conditioned on ``seen`` (with its count when
    ``counted``). Values are set when given (``accession`` and ``name_key`` when not
    empty). Its distinct members: ``*_added`` join them; ``modalities`` and
    ``sop_classes``, when given, are the whole aggregate after a change that drops one."""

    study_uid: str
    seen: StudyState
    counted: bool = False
    instances: int = 0
    gone: bool = False
    attrs: str | None = None
    patient_id: str = ""
    sort_key: str | None = None
    accession: str = ""
    name_key: str = ""
    series_added: tuple[str, ...] = ()
    series_removed: tuple[str, ...] = ()
    modalities_added: tuple[str, ...] = ()
    modalities: tuple[str, ...] | None = None
    sop_classes_added: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] | None = None
    text: TextWrite | None = None  # None: its substring index is left as it is
    text_removed: TextRemoval | None = None
    deidentified: str = ""

    @property
    def moved(self) -> bool:
        """Its date key changes: its series (and the postings) follow."""
        return (
            self.seen.exists and self.sort_key is not None and self.sort_key != self.seen.sort_key
        )


@dataclass(frozen=True)
class PatientWrite:
    """A patient's part of a change. ``expect``: its count as read, the condition of a
    change that lowers it (None: none)."""

    patient_id: str
    issuer: str
    instances: int = 0
    gone: bool = False
    expect: int | None = None
    attrs: str | None = None
    list_key: str = ""
    name_key: str = ""  # its place in the name index ('' when the name is empty)
    studies_added: tuple[str, ...] = ()
    studies_removed: tuple[str, ...] = ()
    series_added: tuple[str, ...] = ()
    series_removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lookup:
    """A de-identified UID of a level and the original UID it stands for."""

    level: str
    deidentified: str
    uid: str


@dataclass(frozen=True)
class Writes:
    """Everything one change writes, all or nothing.

    ``put``: the instance entry written (with its guard, condition: absent unless
    ``removed`` names the same instance); ``removed``: the entry deleted (a removal) or
    replaced. ``keyed``: the de-identified lookups were computed (a deployment key was
    given); ``lookups_added`` and ``lookups_removed`` are then complete."""

    change: Change
    study: StudyWrite
    series: tuple[SeriesWrite, ...] = ()
    patients: tuple[PatientWrite, ...] = ()
    put: InstanceRecord | None = None
    put_sort_key: str = ""
    removed: Entry | None = None
    keyed: bool = False
    lookups_added: tuple[Lookup, ...] = ()
    lookups_removed: tuple[Lookup, ...] = ()

    def deidentified(self, level: str) -> str:
        """The de-identified UID written for ``level`` ('' when none is)."""
        return _deidentified(self.lookups_added, level)


# ------------------------------------------------------------------ helpers


def entry_size(record: InstanceRecord) -> int:
    """The bytes an entry keeps (the attributes at each level and the metadata)."""
    return (
        len(record.instance_json)
        + len(record.series_json)
        + len(record.study_json)
        + len(record.metadata)
    )


def existing(record: InstanceRecord, stored_sha256: str) -> AddOutcome:
    """The outcome of adding a record whose SOP Instance UID is stored already."""
    same = stored_sha256 == record.sha256
    return AddOutcome.ALREADY_STORED if same else AddOutcome.DIFFERENT_CONTENT


def entry_of(record: InstanceRecord) -> Entry:
    """The entry a record is stored as."""
    return Entry(
        record.study_uid,
        record.series_uid,
        record.sop_instance_uid,
        record.sop_class_uid,
        record.sha256,
        record.blob_key,
        instance_sort_key(record.series_uid, record.instance_number, record.sop_instance_uid),
    )


def issuer_of(study_attrs: str) -> str:
    """IssuerOfPatientID in a study's attributes (DICOM JSON), '' when none."""
    values = (json.loads(study_attrs or "{}").get(_ISSUER_TAG) or {}).get("Value") or [""]
    return str(values[0] or "")


def _uids(record: InstanceRecord) -> dict[str, str]:
    return {
        "STUDY": record.study_uid,
        "SERIES": record.series_uid,
        "INSTANCE": record.sop_instance_uid,
    }


def _lookups(uid_map: UidMap | None, uids: Mapping[str, str]) -> tuple[Lookup, ...]:
    if uid_map is None:
        return ()
    return tuple(Lookup(level, uid_map(uid), uid) for level, uid in uids.items())


def _text(record: InstanceRecord, seen: StudyState, sort_key: str) -> TextWrite | None:
    """The study's substring index with the record's values merged in; None when it
    already holds them under this date key."""
    terms = study_terms(json.loads(record.study_json))
    stored = seen.texts
    merged = terms if stored is None else tuple(map(merge_terms, stored, terms))
    text = TextWrite(merged, sort_key, stored, seen.texts_sort_key)
    return text if text.changed or text.moved else None


def _change(kind: ChangeKind, entry: Entry, at: str, previous: str = "") -> Change:
    return Change(
        kind, entry.study_uid, entry.series_uid, entry.sop_instance_uid, entry.blob_key,
        previous, at,
    )  # fmt: skip


def _patient_gains(
    record: InstanceRecord,
    name: str,
    instances: int,
    study: bool,
    series: tuple[str, ...] | None = None,
) -> PatientWrite:
    """The patient's part when it gains ``instances`` of the record's study (``study``: the
    study and ``series``, by default the record's, join its members)."""
    list_key = patient_list_key(name, record.patient_id, record.issuer_of_patient_id)
    return PatientWrite(
        record.patient_id,
        record.issuer_of_patient_id,
        instances=instances,
        attrs=record.patient_json,
        list_key=list_key,
        name_key=list_key if name else "",
        studies_added=(record.study_uid,) if study else (),
        series_added=(series or (record.series_uid,)) if study else (),
    )


# ------------------------------------------------------------------ the three changes


def add(
    record: InstanceRecord, seen: StudyState, uid_map: UidMap | None, kind: ChangeKind = "add"
) -> Writes | AddOutcome:
    """What adding a new instance writes, given its study as read; an outcome instead when
    the index must refuse it (too large, or the study is another patient's). Whether the
    SOP Instance UID is new is the guard's condition (:func:`existing` when it fails). The
    change is dated when the instance was received."""
    if entry_size(record) > MAX_ENTRY_BYTES:
        return AddOutcome.REJECTED
    if seen.exists and seen.patient_id != record.patient_id:
        return AddOutcome.PATIENT_MISMATCH
    sort_key = study_sort_key(record.study_date, record.study_time, record.study_uid)
    entry = entry_of(record)
    lookups = _lookups(uid_map, _uids(record))
    name = person_name_key(record.patient_name)
    return Writes(
        change=_change(kind, entry, record.received),
        put=record,
        put_sort_key=entry.sort_key,
        keyed=uid_map is not None,
        lookups_added=lookups,
        study=StudyWrite(
            record.study_uid,
            seen,
            instances=1,
            attrs=record.study_json,
            patient_id=record.patient_id,
            sort_key=sort_key,
            accession=record.accession_number,
            name_key=study_name_key(name, record.study_uid),
            series_added=(record.series_uid,),
            modalities_added=(record.modality,) if record.modality else (),
            sop_classes_added=(record.sop_class_uid,),
            text=_text(record, seen, sort_key),
            deidentified=_deidentified(lookups, "STUDY"),
        ),
        series=(_series_takes(record, sort_key, 1, lookups),),
        patients=(_patient_gains(record, name, 1, study=True),) if record.patient_id else (),
    )


def _series_takes(
    record: InstanceRecord, sort_key: str, instances: int, lookups: tuple[Lookup, ...]
) -> SeriesWrite:
    """The record's series with its attributes (and ``instances`` more)."""
    return SeriesWrite(
        record.study_uid,
        record.series_uid,
        instances=instances,
        attrs=record.series_json,
        study_attrs=record.study_json,
        sort_key=sort_key,
        modality=record.modality,
        deidentified=_deidentified(lookups, "SERIES"),
    )


def _deidentified(lookups: tuple[Lookup, ...], level: str) -> str:
    """The de-identified UID of ``level`` among ``lookups`` ('' when none)."""
    return next((lk.deidentified for lk in lookups if lk.level == level), "")


def remove(
    entry: Entry,
    holding: Holding,
    uid_map: UidMap | None,
    at: str,
    kind: ChangeKind = "remove",
) -> Writes:
    """What removing a stored instance writes: the inverse of its add. Its series, study
    and patient lose it from their counts and go with their last instance; a Modality or
    SOP Class the study no longer holds leaves its aggregates; a study that goes takes its
    substring index and de-identified lookups with it.

    The study's text keeps the values of the instances that remain and of the one removed
    (it holds every value the study has had: a search reads candidates, the matcher
    decides)."""
    members = {k: v for k, v in holding.members.items() if k != entry.sop_instance_uid}
    series_left = any(m.series_uid == entry.series_uid for m in members.values())
    study_left = bool(members)
    state = holding.study
    modalities = _modalities(holding, members, entry.series_uid, "")
    classes = sorted({m.sop_class_uid for m in members.values()})
    study = StudyWrite(
        entry.study_uid,
        state,
        counted=True,
        instances=-1,
        gone=not study_left,
        series_removed=() if series_left else (entry.series_uid,),
        modalities=modalities if study_left and modalities != _held(holding) else None,
        sop_classes=tuple(classes) if study_left and entry.sop_class_uid not in classes else None,
        text_removed=TextRemoval(state.texts, state.texts_sort_key or "")
        if not study_left and state.texts is not None
        else None,
    )
    patients: tuple[PatientWrite, ...] = ()
    if state.patient_id:
        patients = (
            _patient_loses(holding, entry, series_gone=not series_left, study_gone=not study_left),
        )
    gone = {"INSTANCE": entry.sop_instance_uid}
    if not series_left:
        gone["SERIES"] = entry.series_uid
    if not study_left:
        gone["STUDY"] = entry.study_uid
    return Writes(
        change=_change(kind, entry, at),
        study=study,
        series=(
            SeriesWrite(entry.study_uid, entry.series_uid, instances=-1, gone=not series_left),
        ),
        patients=patients,
        removed=entry,
        keyed=uid_map is not None,
        lookups_removed=_lookups(uid_map, gone),
    )


def _held(holding: Holding) -> tuple[str, ...]:
    """The study's Modality aggregate as held (every series' Modality)."""
    return tuple(sorted({m for m in holding.modalities.values() if m}))


def _modalities(
    holding: Holding, members: Mapping[str, Member], series_uid: str, modality: str
) -> tuple[str, ...]:
    """The study's Modality aggregate once ``series_uid`` holds ``modality`` (kept when
    empty) and only the series of ``members`` remain."""
    left = {m.series_uid for m in members.values()}
    held = {s: m for s, m in holding.modalities.items() if s in left}
    if modality and series_uid in left:
        held[series_uid] = modality
    return tuple(sorted({m for m in held.values() if m}))


def _patient_leaves(holding: Holding, study_uid: str, series: tuple[str, ...]) -> PatientWrite:
    """The study's patient as the whole study (its instances and ``series``) leaves it."""
    count, moving = holding.patient_instances, len(holding.members)
    return PatientWrite(
        holding.study.patient_id,
        holding.study.issuer,
        instances=-moving,
        gone=count <= moving,
        expect=count if count > 0 else None,
        studies_removed=(study_uid,),
        series_removed=series,
    )


def _patient_loses(
    holding: Holding, entry: Entry, *, series_gone: bool, study_gone: bool
) -> PatientWrite:
    count = holding.patient_instances
    return PatientWrite(
        holding.study.patient_id,
        holding.study.issuer,
        instances=-1,
        gone=count <= 1,
        expect=count if count > 0 else None,  # none held: nothing to condition on
        studies_removed=(entry.study_uid,) if study_gone else (),
        series_removed=(entry.series_uid,) if series_gone else (),
    )


def replace(  # noqa: PLR0913 - the change, what was read, and how a patient may change
    entry: Entry,
    record: InstanceRecord,
    holding: Holding,
    uid_map: UidMap | None,
    at: str,
    *,
    moves_study: bool = False,
) -> Writes | ReplaceOutcome:
    """What replacing a stored instance's record writes (its attributes, and the object
    when the bytes changed): the entry is rewritten in place; its series, study and patient
    take the record's attributes as an add would, with their counts unchanged; a Modality
    or SOP Class no instance holds any more leaves the study's aggregates.

    When the record names another patient (PatientID or its issuer) than the study's, the
    whole study moves to that patient: the one it held loses the study's instances, series
    and the study (and goes with its last), the other gains them. With other instances in
    the study and another PatientID this is a patient merge, made only when asked
    (``moves_study``: a metadata update, whose next replacements give the study's other
    instances the same patient); otherwise it is refused.

    Refused: a record of another study or series (a move: a removal and an add), one of
    another PatientID than the study's other instances unless ``moves_study``, one the
    index cannot hold."""
    if (record.study_uid, record.series_uid) != (entry.study_uid, entry.series_uid):
        return ReplaceOutcome.MOVED
    if entry_size(record) > MAX_ENTRY_BYTES:
        return ReplaceOutcome.REJECTED
    state = holding.study
    others = {k: v for k, v in holding.members.items() if k != entry.sop_instance_uid}
    if others and record.patient_id != state.patient_id and not moves_study:
        return ReplaceOutcome.PATIENT_MISMATCH
    sort_key = study_sort_key(record.study_date, record.study_time, record.study_uid)
    modalities = _modalities(holding, holding.members, entry.series_uid, record.modality)
    classes = sorted({m.sop_class_uid for m in others.values()} | {record.sop_class_uid})
    dropped_class = entry.sop_class_uid not in classes
    drops_modality = not set(modalities) >= set(_held(holding))
    lookups = _lookups(uid_map, _uids(record))  # the same UIDs: kept with the items
    name = person_name_key(record.patient_name)
    study = StudyWrite(
        record.study_uid,
        state,
        counted=True,
        attrs=record.study_json,
        patient_id=record.patient_id,
        sort_key=sort_key,
        accession=record.accession_number,
        name_key=study_name_key(name, record.study_uid),
        modalities_added=() if drops_modality or not record.modality else (record.modality,),
        modalities=modalities if drops_modality else None,
        sop_classes_added=() if dropped_class else (record.sop_class_uid,),
        sop_classes=tuple(classes) if dropped_class else None,
        text=_text(record, state, sort_key),
        deidentified=_deidentified(lookups, "STUDY"),
    )
    patients: list[PatientWrite] = []
    same_patient = (state.patient_id, state.issuer) == (
        record.patient_id,
        record.issuer_of_patient_id,
    )
    if same_patient:
        if record.patient_id:
            patients.append(_patient_gains(record, name, 0, study=False))
    else:  # the whole study moves to the record's patient
        series = tuple(sorted({m.series_uid for m in holding.members.values()}))
        if state.patient_id:
            patients.append(_patient_leaves(holding, entry.study_uid, series))
        if record.patient_id:
            patients.append(
                _patient_gains(record, name, len(holding.members), study=True, series=series)
            )
    new_entry = entry_of(record)
    return Writes(
        change=_change("replace", new_entry, at, previous=entry.blob_key),
        study=study,
        series=(_series_takes(record, sort_key, 0, lookups),),
        patients=tuple(patients),
        put=record,
        put_sort_key=new_entry.sort_key,
        removed=entry,
        keyed=uid_map is not None,
        lookups_added=lookups,
    )
