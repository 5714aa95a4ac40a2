"""The DynamoDB key layout, shared by the write and read adapters (docs/access-patterns.md).
Sort keys that order studies and instances are the domain's (``shared.index.order``).

Items (PK / SK):

* ``SOP#<sop>`` / ``SOP``: guard for global SOP Instance UID uniqueness; where it lives.
* ``STUDY#<study>`` / ``STUDY``: study attributes, counters, aggregate sets.
* ``STUDY#<study>`` / ``SERIES#<series>``: series attributes (+ its study's), counter.
* ``STUDY#<study>`` / ``INSTANCE#<series>#<number>#<sop>``: instance attributes (+ parents').
* ``PATIENT#<PatientID>`` / ``PATIENT#<IssuerOfPatientID>``: demographics, counters.
* ``GRAM#<column>#<trigram>`` / ``<sdt>``: a posting of the substring index: a study whose
  indexed text (``t``) of that column holds the trigram, keyed by the study's date-time.
* ``GRAM#<column>#<trigram>`` / ``#``: how many studies hold it (``n``, for planning).
* ``CHANGES#<shard>`` / ``<id>``: an entry of the change log, in its shard's commit order.
* ``CHANGES#<shard>`` / ``#``: the shard's last id (``last``), conditioning each change.
* ``FEED#<n // 1000>`` / ``<n>``: the change feed's entry numbered ``n`` (a copy of a log
  entry, ``log``: its shard and id), put by the sequencer (``dynamo_feed``).
* ``FEED`` / ``#``: the sequencer's state: the last number (``last``) and the id of the
  last entry numbered in each shard (``positions``, dotted).
"""

from __future__ import annotations

import base64
import hashlib
import json

from shared.index import order

STUDY_SK = "STUDY"
SERIES_PREFIX = "SERIES#"
INSTANCE_PREFIX = order.INSTANCE_PREFIX  # instance items' SK: order.instance_sort_key
LIST_STUDIES = "STUDY"
LIST_PATIENTS = "PATIENT"
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


#: Partitions of the change log: a study's changes all go to one (:func:`change_shard`).
CHANGE_SHARDS = 8
#: Sort key of a change log shard's counter item: before every entry (digits).
CHANGE_COUNTER_SK = "#"
CHANGE_ID_DIGITS = 16  # microseconds since the epoch, zero-padded


def change_shard(study_uid: str) -> int:
    """The change log shard of a study's changes."""
    return int.from_bytes(hashlib.sha256(study_uid.encode()).digest()[:4], "big") % CHANGE_SHARDS


def change_pk(shard: int) -> str:
    """Partition key of a change log shard (its entries and its counter)."""
    return f"CHANGES#{shard}"


#: Entries of the change feed per partition (a partition takes 1 000 writes a second).
FEED_PARTITION = 1000
FEED_SEQUENCE_DIGITS = 12
FEED_STATE_PK = "FEED"
FEED_STATE_SK = "#"


def feed_pk(sequence: int) -> str:
    """Partition key of the change feed's entry numbered ``sequence``."""
    return f"FEED#{sequence // FEED_PARTITION}"
