"""The write side of the SQLite index (the embedded backend, ``local``).

Each change (an instance added, removed or replaced) is one transaction: it reads what the
index holds of the study, asks :mod:`shared.index.writes` what the change writes, and
persists that description: the instance row, the series, study and patient rows with their
counters and member tables, the study's substring index, the de-identified lookups and
the change log's row. The outcomes are DynamoDB's (``dynamo_index``): the instance row is
inserted only if its SOP Instance UID is new; an identical re-send reads back as
``ALREADY_STORED``, other bytes as ``DIFFERENT_CONTENT``; a study stored with another
PatientID refuses it (``PATIENT_MISMATCH``). The schema and its migrations are
``sqlite_schema``; the read side is ``sqlite_catalog``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from shared.adapters.sqlite_connections import Connections
from shared.adapters.sqlite_schema import DEID_KEY, TERM_COLUMNS, TEXT_EDGE, prepare
from shared.dicom.uid_map import UidMap
from shared.index import writes
from shared.index.records import (
    AddOutcome,
    Change,
    ChangeKind,
    ChangePage,
    Entry,
    InstanceRecord,
    Replacement,
    ReplaceOutcome,
)

_ASSIGN_TERMS = ", ".join(f"{column} = ?" for column in writes.COLUMNS)
_TERM_MARKS = ",".join("?" * len(writes.COLUMNS))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqliteIndex:
    """InstanceIndex on SQLite (port :class:`shared.ports.InstanceIndex`).

    With ``uid_map`` (the deployment key), each change writes the de-identified UIDs it
    adds or removes (``deid_uids``) in its transaction; without it, a change marks the
    lookup incomplete, and the next open with the key rebuilds it."""

    def __init__(
        self, path: Path, uid_map: UidMap | None = None, clock: Callable[[], str] = _now
    ) -> None:
        prepare(path, uid_map)
        self._db = Connections(path)
        self._uid_map = uid_map
        self._clock = clock

    def add(self, record: InstanceRecord, *, restored: bool = False) -> AddOutcome:
        """Add an instance and update its parents, all or nothing (``restored``: its
        change log entry says ``restore``)."""
        if writes.entry_size(record) > writes.MAX_ENTRY_BYTES:
            return AddOutcome.REJECTED
        kind: ChangeKind = "restore" if restored else "add"
        outcome: AddOutcome = self._db.run(lambda c: _add(c, record, self._uid_map, kind))
        return outcome

    def add_many(self, records: Iterable[InstanceRecord]) -> list[AddOutcome]:
        """Add instances in one transaction, each exactly as :meth:`add` would (bulk loads:
        one commit instead of one per instance); an entry too large is REJECTED alone."""

        def work(c: sqlite3.Connection) -> list[AddOutcome]:
            return [
                AddOutcome.REJECTED
                if writes.entry_size(r) > writes.MAX_ENTRY_BYTES
                else _add(c, r, self._uid_map)
                for r in records
            ]

        outcomes: list[AddOutcome] = self._db.run(work)
        return outcomes

    def remove(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        until: Callable[[], bool] | None = None,
        rejected: bool = False,
    ) -> tuple[Entry, ...]:
        """Remove a study, a series or an instance, one change per instance, in one
        transaction (whole or not at all, so ``until`` is not asked); the entries removed
        (none when there was nothing)."""

        kind: ChangeKind = "reject" if rejected else "remove"

        def work(c: sqlite3.Connection) -> tuple[Entry, ...]:
            entries = _entries(c, study_uid, series_uid, sop_instance_uid)
            if not entries:
                return ()
            holding = _holding(c, study_uid)
            for entry in entries:
                plan = writes.remove(entry, holding, self._uid_map, self._clock(), kind)
                _persist(c, plan)
                holding = holding.without(entry)
            return entries

        removed: tuple[Entry, ...] = self._db.run(work)
        return removed

    def replace(self, record: InstanceRecord, *, moves_study: bool = False) -> Replacement:
        """Replace the record of the stored instance with this SOP Instance UID."""

        def work(c: sqlite3.Connection) -> Replacement:
            found = _entries(c, None, None, record.sop_instance_uid)
            if not found:
                return Replacement(ReplaceOutcome.NOT_FOUND)
            (entry,) = found
            plan = writes.replace(
                entry,
                record,
                _holding(c, entry.study_uid),
                self._uid_map,
                self._clock(),
                moves_study=moves_study,
            )
            if isinstance(plan, ReplaceOutcome):
                return Replacement(plan)
            _persist(c, plan)
            return Replacement(ReplaceOutcome.REPLACED, entry)

        replaced: Replacement = self._db.run(work)
        return replaced

    def changes(self, after: str = "", limit: int = 100) -> ChangePage:
        """Committed changes after the cursor ``after`` ('' : from the first), in order."""
        start = int(after) if after else 0
        rows = self._db.query(
            "SELECT seq, kind, study, series, sop, key, previous_key, at FROM changes"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (start, max(0, limit)),
        )
        changes = tuple(
            Change(r["kind"], r["study"], r["series"], r["sop"], r["key"], r["previous_key"],
                   r["at"], str(r["seq"]), r["seq"])
            for r in rows
        )  # fmt: skip
        return ChangePage(changes, changes[-1].position if changes else after)

    def changes_after(self, sequence: int) -> str:
        """The cursor after the change numbered ``sequence`` (its row number)."""
        return str(sequence) if sequence > 0 else ""

    def latest_change(self) -> Change | None:
        """The last committed change, None when there is none."""
        rows = self._db.query("SELECT MAX(seq) AS seq FROM changes", ())
        last = rows[0]["seq"] if rows else None
        if last is None:
            return None
        found = self.changes(str(last - 1), 1).changes
        return found[0] if found else None

    def references(self, sop_instance_uid: str, blob_key: str) -> bool:
        """Whether the instance's entry points at ``blob_key``."""
        rows = self._db.query("SELECT key FROM instances WHERE sop = ?", (sop_instance_uid,))
        return bool(rows) and rows[0]["key"] == blob_key


# ------------------------------------------------------------------ reads


def _add(
    c: sqlite3.Connection,
    r: InstanceRecord,
    uid_map: UidMap | None,
    kind: ChangeKind = "add",
) -> AddOutcome:
    found = c.execute("SELECT sha256 FROM instances WHERE sop = ?", (r.sop_instance_uid,))
    existing = found.fetchone()
    if existing is not None:
        return writes.existing(r, existing[0])
    plan = writes.add(r, _study_state(c, r.study_uid), uid_map, kind)
    if isinstance(plan, AddOutcome):
        return plan
    _persist(c, plan)
    return AddOutcome.STORED


def _study_state(c: sqlite3.Connection, study_uid: str, issuer: bool = False) -> writes.StudyState:
    study = c.execute(
        f"SELECT patient_id, sdt, n_instances{', attrs' if issuer else ''} FROM studies"
        " WHERE study = ?",
        (study_uid,),
    ).fetchone()
    texts = _filed_text(c, study_uid)
    if study is None:
        return writes.StudyState(texts=texts[0], texts_sort_key=texts[1])
    return writes.StudyState(
        exists=True,
        patient_id=study[0],
        issuer=writes.issuer_of(study[3]) if issuer else "",
        sort_key=study[1],
        texts=texts[0],
        texts_sort_key=texts[1],
        instances=study[2],
    )


def _filed_text(
    c: sqlite3.Connection, study_uid: str
) -> tuple[tuple[str, ...], str] | tuple[None, None]:
    """The study's substring index text and its date key, (None, None) when not filed."""
    row = c.execute(
        f"SELECT sdt, {TERM_COLUMNS} FROM study_terms WHERE study = ?", (study_uid,)
    ).fetchone()
    return (tuple(row[1:]), row[0]) if row is not None else (None, None)


def _entries(
    c: sqlite3.Connection, study: str | None, series: str | None, sop: str | None
) -> tuple[Entry, ...]:
    """The entries of a study, a series or an instance (by SOP Instance UID alone when
    ``study`` is None), in their study's order."""
    where, parameters = [], []
    for column, value in (("study", study), ("series", series), ("sop", sop)):
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    rows = c.execute(
        "SELECT study, series, sop, sop_class, sha256, key, sk FROM instances"
        f" WHERE {' AND '.join(where)} ORDER BY study, sk",
        parameters,
    )
    return tuple(Entry(*row) for row in rows)


def _holding(c: sqlite3.Connection, study_uid: str) -> writes.Holding:
    state = _study_state(c, study_uid, issuer=True)
    members = {
        sop: writes.Member(series, sop_class)
        for sop, series, sop_class in c.execute(
            "SELECT sop, series, sop_class FROM instances WHERE study = ?", (study_uid,)
        )
    }
    modalities = dict(
        c.execute("SELECT series, COALESCE(modality, '') FROM series WHERE study = ?", (study_uid,))
    )
    patient = c.execute(
        "SELECT n_instances FROM patients WHERE patient_id = ? AND issuer = ?",
        (state.patient_id, state.issuer),
    ).fetchone()
    return writes.Holding(state, members, modalities, patient[0] if patient else 0)


# ------------------------------------------------------------------ writes


def _persist(c: sqlite3.Connection, w: writes.Writes) -> None:
    """Write what a change writes (its transaction is the caller's)."""
    if w.removed is not None:
        c.execute("DELETE FROM instances WHERE sop = ?", (w.removed.sop_instance_uid,))
    if w.put is not None:
        _put_instance(c, w.put, w.put_sort_key)
    _write_study(c, w.study)
    for series in w.series:
        _write_series(c, series)
    for patient in w.patients:
        _write_patient(c, patient)
    _write_lookups(c, w)
    _log(c, w.change)


def _log(c: sqlite3.Connection, change: Change) -> None:
    """The change log's row of a change (``seq``: the next in the archive)."""
    c.execute(
        "INSERT INTO changes (kind, study, series, sop, key, previous_key, at)"
        " VALUES (?,?,?,?,?,?,?)",
        (
            change.kind,
            change.study_uid,
            change.series_uid,
            change.sop_instance_uid,
            change.blob_key,
            change.previous_key,
            change.at,
        ),
    )


def _put_instance(c: sqlite3.Connection, r: InstanceRecord, sort_key: str) -> None:
    c.execute(
        "INSERT INTO instances (sop, study, series, sk, sop_class, ts, sha256, size, key, aet,"
        " received, attrs, series_attrs, study_attrs, meta)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            r.sop_instance_uid,
            r.study_uid,
            r.series_uid,
            sort_key,
            r.sop_class_uid,
            r.transfer_syntax,
            r.sha256,
            r.size,
            r.blob_key,
            r.calling_aet,
            r.received,
            r.instance_json,
            r.series_json,
            r.study_json,
            r.metadata or None,
        ),
    )


def _write_series(c: sqlite3.Connection, s: writes.SeriesWrite) -> None:
    key = (s.study_uid, s.series_uid)
    if s.gone:
        c.execute("DELETE FROM series WHERE study = ? AND series = ?", key)
    elif s.attrs is not None:
        c.execute(
            "INSERT INTO series (study, series, attrs, study_attrs, sdt, modality, n_instances)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (study, series) DO UPDATE SET"
            " attrs = excluded.attrs, study_attrs = excluded.study_attrs, sdt = excluded.sdt,"
            " modality = COALESCE(excluded.modality, series.modality),"
            " n_instances = series.n_instances + excluded.n_instances",
            (*key, s.attrs, s.study_attrs, s.sort_key, s.modality or None, s.instances),
        )
    elif s.instances:
        c.execute(
            "UPDATE series SET n_instances = n_instances + ? WHERE study = ? AND series = ?",
            (s.instances, *key),
        )


def _write_study(c: sqlite3.Connection, s: writes.StudyWrite) -> None:
    uid = s.study_uid
    if s.gone:
        for table in ("studies", "study_modalities", "study_sop_classes"):
            c.execute(f"DELETE FROM {table} WHERE study = ?", (uid,))
    else:
        if s.moved:  # the study moves: its series with it
            c.execute("UPDATE series SET sdt = ? WHERE study = ?", (s.sort_key, uid))
        if s.attrs is not None:
            c.execute(
                "INSERT INTO studies (study, attrs, patient_id, pid, accession, sdt, name_key,"
                " n_instances) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (study) DO UPDATE SET"
                " attrs = excluded.attrs, patient_id = excluded.patient_id,"
                " pid = COALESCE(excluded.pid, studies.pid),"
                " accession = COALESCE(excluded.accession, studies.accession),"
                " sdt = excluded.sdt, name_key = COALESCE(excluded.name_key, studies.name_key),"
                " n_instances = studies.n_instances + excluded.n_instances",
                (
                    uid,
                    s.attrs,
                    s.patient_id,
                    s.patient_id or None,
                    s.accession or None,
                    s.sort_key,
                    s.name_key or None,
                    s.instances,
                ),
            )
        elif s.instances:
            c.execute(
                "UPDATE studies SET n_instances = n_instances + ? WHERE study = ?",
                (s.instances, uid),
            )
        _write_members(
            c, uid, "study_sop_classes (study, sop_class)", s.sop_classes_added, s.sop_classes
        )
        _write_members(
            c, uid, "study_modalities (study, modality)", s.modalities_added, s.modalities
        )
    if s.text is not None:
        _write_terms(c, uid, s.text)
    if s.text_removed is not None:
        _drop_terms(c, uid, s.text_removed.texts)


def _write_members(
    c: sqlite3.Connection,
    study: str,
    table: str,
    added: tuple[str, ...],
    whole: tuple[str, ...] | None,
) -> None:
    """A study's aggregate (``table``: name and columns): values added, or the whole."""
    if whole is not None:
        c.execute(f"DELETE FROM {table.split(maxsplit=1)[0]} WHERE study = ?", (study,))
        added = whole
    for value in added:
        c.execute(
            f"INSERT OR IGNORE INTO {table} VALUES (?, ?)",
            (study, value),
        )


def _edged(text: str) -> str:
    """A column's text as the trigram index reads it (``study_text_source``): its values
    between separators."""
    return f"{TEXT_EDGE}{text}{TEXT_EDGE}" if text else ""


def _write_terms(c: sqlite3.Connection, study: str, text: writes.TextWrite) -> None:
    """The study's substring index entry: its text and trigram document rewritten when the
    text changed, else its date moved."""
    if not text.changed:
        c.execute("UPDATE study_terms SET sdt = ? WHERE study = ?", (text.sort_key, study))
        return
    row = c.execute("SELECT id FROM study_terms WHERE study = ?", (study,)).fetchone()
    if row is None:
        cursor = c.execute(
            f"INSERT INTO study_terms (study, sdt, {TERM_COLUMNS}) VALUES (?, ?, {_TERM_MARKS})",
            (study, text.sort_key, *text.texts),
        )
        row_id = cursor.lastrowid
    else:
        row_id = row[0]
        _unindex(c, row_id, text.stored or ("",) * len(writes.COLUMNS))
        c.execute(
            f"UPDATE study_terms SET sdt = ?, {_ASSIGN_TERMS} WHERE id = ?",
            (text.sort_key, *text.texts, row_id),
        )
    c.execute(
        f"INSERT INTO study_text (rowid, {TERM_COLUMNS}) VALUES (?, {_TERM_MARKS})",
        (row_id, *map(_edged, text.texts)),
    )


def _unindex(c: sqlite3.Connection, row_id: int, texts: tuple[str, ...]) -> None:
    """Take a study's document out of the trigram index (external content: it is told
    the text it indexed)."""
    c.execute(
        f"INSERT INTO study_text (study_text, rowid, {TERM_COLUMNS})"
        f" VALUES ('delete', ?, {_TERM_MARKS})",
        (row_id, *map(_edged, texts)),
    )


def _drop_terms(c: sqlite3.Connection, study: str, texts: tuple[str, ...]) -> None:
    row = c.execute("SELECT id FROM study_terms WHERE study = ?", (study,)).fetchone()
    if row is not None:
        _unindex(c, row[0], texts)
        c.execute("DELETE FROM study_terms WHERE id = ?", (row[0],))


def _write_patient(c: sqlite3.Connection, p: writes.PatientWrite) -> None:
    key = (p.patient_id, p.issuer)
    if p.gone:
        for table in ("patients", "patient_studies", "patient_series"):
            c.execute(
                f"DELETE FROM {table} WHERE patient_id = ? AND issuer = ?",
                key,
            )
        return
    if p.attrs is not None:
        c.execute(
            "INSERT INTO patients (patient_id, issuer, attrs, list_key, name_key, n_instances)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (patient_id, issuer) DO UPDATE SET"
            " attrs = excluded.attrs, list_key = excluded.list_key,"
            " name_key = COALESCE(excluded.name_key, patients.name_key),"
            " n_instances = patients.n_instances + excluded.n_instances",
            (*key, p.attrs, p.list_key, p.name_key or None, p.instances),
        )
    elif p.instances:
        c.execute(
            "UPDATE patients SET n_instances = n_instances + ? WHERE patient_id = ? AND issuer = ?",
            (p.instances, *key),
        )
    for table, column, added, removed in (
        ("patient_studies", "study", p.studies_added, p.studies_removed),
        ("patient_series", "series", p.series_added, p.series_removed),
    ):
        for uid in added:
            c.execute(
                f"INSERT OR IGNORE INTO {table} (patient_id, issuer, {column}) VALUES (?,?,?)",
                (*key, uid),
            )
        for uid in removed:
            c.execute(
                f"DELETE FROM {table} WHERE patient_id = ? AND issuer = ? AND {column} = ?",
                (*key, uid),
            )


def _add_deidentified(c: sqlite3.Connection, lookups: tuple[writes.Lookup, ...]) -> None:
    for lookup in lookups:
        c.execute(
            "INSERT OR IGNORE INTO deid_uids (level, duid, uid) VALUES (?, ?, ?)",
            (lookup.level, lookup.deidentified, lookup.uid),
        )


def _write_lookups(c: sqlite3.Connection, w: writes.Writes) -> None:
    if not w.keyed:
        if w.put is None or w.removed is None:  # an add or a removal: incomplete now
            c.execute("DELETE FROM meta WHERE key = ?", (DEID_KEY,))
        return
    _add_deidentified(c, w.lookups_added)
    for lookup in w.lookups_removed:
        c.execute(
            "DELETE FROM deid_uids WHERE level = ? AND duid = ?",
            (lookup.level, lookup.deidentified),
        )
