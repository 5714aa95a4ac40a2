"""The substring index on DynamoDB: trigram postings written with a study's
first instance and when its text or date-time changes, counts beside them, and searches
that read the rarest trigram's postings. Correctness against the reference matcher for
generated data and queries is in ``test_search_contract``; these pin the costs and the
cases it rarely draws (a study re-dated, text over one transaction, a lost race, a study
stored before the index)."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters.dynamo_backfill import backfill_substring_index
from shared.adapters.dynamo_index import MAX_TRANSACTION_ITEMS, DynamoInstanceIndex
from shared.adapters.dynamo_keys import GRAM_COUNT_SK, gram_pk, study_pk
from shared.adapters.dynamo_search import DynamoSearch
from shared.dicom.validate import validate
from shared.dicomweb.query import parse
from shared.dicomweb.substring import ngrams, study_terms
from shared.ports import AddOutcome, InstanceRecord
from shared.services import search as search_service
from shared.services.store import _record
from tests.support import dicom_files

TABLE = "substring-table"
BASE = "https://h/o3-dpacs-wado"


@pytest.fixture
def client(mocked_aws: None) -> Any:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, **local_template.load().tables["IndexTable"].create_args)
    return dynamodb


def _record_of(**values: object) -> InstanceRecord:
    return _record(validate(dicom_files.with_new_uids(**values)), "AE", datetime.now(UTC))  # type: ignore[arg-type]


def _into(first: InstanceRecord, **values: object) -> InstanceRecord:
    """Another instance of ``first``'s study (its patient unless said otherwise)."""
    values.setdefault("patient_id", first.patient_id)
    values.setdefault("PatientName", first.patient_name)
    data = dicom_files.with_new_uids(study=first.study_uid, **values)  # type: ignore[arg-type]
    return _record(validate(data), "AE", datetime.now(UTC))


def _calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", maxsplit=1)[-1]] += 1

    client.meta.events.register("before-call.dynamodb.*", count)
    return calls


def _postings(client: Any, column: str, gram: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.query(
        TableName=TABLE,
        KeyConditionExpression="PK = :pk AND SK >= :a",
        ExpressionAttributeValues={":pk": {"S": gram_pk(column, gram)}, ":a": {"S": "0"}},
    )["Items"]
    return items


def _count(client: Any, column: str, gram: str) -> int:
    item = client.get_item(
        TableName=TABLE, Key={"PK": {"S": gram_pk(column, gram)}, "SK": {"S": GRAM_COUNT_SK}}
    ).get("Item")
    return int(item["n"]["N"]) if item else 0


def _studies(client: Any, **params: str) -> list[str]:
    query = parse({k: [v] for k, v in params.items()}, "STUDY")
    result = search_service.search(query, DynamoSearch(client, TABLE), BASE)
    return [d["0020000D"]["Value"][0] for d in result.datasets]


def _with_trigrams(client: Any) -> list[dict[str, Any]]:
    """Every posting item in the table (a test-only Scan)."""
    items = client.scan(TableName=TABLE)["Items"]
    return [i for i in items if i["PK"]["S"].startswith("GRAM#") and i["SK"]["S"] != "#"]


def test_a_new_study_files_every_trigram_once_and_its_next_instances_write_none(
    client: Any,
) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    first = _record_of(PatientName="Kowalski^Jan", StudyDescription="CT HEAD")
    terms = study_terms(json.loads(first.study_json))
    grams = sum(len(ngrams(text)) for text in terms)
    sizes: list[int] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems",
        lambda params, **_: sizes.append(len(params["TransactItems"])),
    )
    assert index.add(first) is AddOutcome.STORED
    second = _into(first, PatientName="Kowalski^Jan", StudyDescription="CT HEAD")
    calls = _calls(client)
    assert index.add(second) is AddOutcome.STORED
    assert sizes[0] - sizes[1] == grams  # the postings ride in the first transaction only
    assert calls == Counter({"GetItem": 1, "TransactWriteItems": 1})  # nothing counted again
    assert len(_with_trigrams(client)) == grams
    assert _count(client, "name", "kow") == 1
    assert [p["t"]["S"] for p in _postings(client, "descr", "HEA")] == ["CT HEAD"]


def test_a_changed_value_refiles_its_column_with_both_values_and_counts_new_trigrams(
    client: Any,
) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    first = _record_of(StudyDescription="CT HEAD")
    index.add(first)
    late = _into(first, StudyDescription="MR KNEE")
    assert index.add(late) is AddOutcome.STORED
    texts = {p["t"]["S"] for p in _postings(client, "descr", "HEA")}
    assert texts == {"CT HEAD\x1fMR KNEE"}  # the old trigrams carry the merged text
    assert _count(client, "descr", "HEA") == 1
    assert _count(client, "descr", "KNE") == 1
    assert _studies(client, StudyDescription="*KNE*") == [first.study_uid]
    assert _studies(client, StudyDescription="*HEAD*") == []  # the matcher reads the study


def test_a_study_redated_is_found_under_its_new_date(client: Any) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    first = _record_of(PatientName="Nowak^Ewa", StudyDate="20200101")
    index.add(first)
    redated = _into(first, PatientName="Nowak^Ewa", StudyDate="20230505")
    index.add(redated)
    assert _studies(client, PatientName="*owak*", StudyDate="20230501-20230531") == [
        first.study_uid
    ]
    assert _studies(client, PatientName="*owak*", StudyDate="20200101") == []
    assert _studies(client, PatientName="*owak*") == [first.study_uid]  # once, not twice


def test_text_over_one_transaction_is_filed_before_it(client: Any) -> None:
    rng = random.Random(13)
    letters = string.ascii_uppercase + string.digits

    def text(n: int) -> str:
        return "".join(rng.choice(letters) for _ in range(n))

    r = _record_of(
        PatientName=f"{text(30)}^{text(30)}",
        StudyDescription=text(60),
        ReferringPhysicianName=text(60),
    )
    terms = study_terms(json.loads(r.study_json))
    grams = sum(len(ngrams(text)) for text in terms)
    assert grams > MAX_TRANSACTION_ITEMS
    calls = _calls(client)
    assert DynamoInstanceIndex(client, TABLE).add(r) is AddOutcome.STORED
    assert calls["BatchWriteItem"] >= 1
    assert len(_with_trigrams(client)) == grams
    description = json.loads(r.study_json)["00081030"]["Value"][0]
    referring = json.loads(r.study_json)["00080090"]["Value"][0]["Alphabetic"]
    assert _studies(client, StudyDescription=f"*{description[20:30]}*") == [r.study_uid]
    assert _studies(client, ReferringPhysicianName=f"*{referring[-8:]}*") == [r.study_uid]


def test_a_lost_race_for_a_new_study_retries_and_files_nothing_twice(client: Any) -> None:
    """Two instances of one new study: the other commits between this one's read and its
    transaction. This one's condition fails, it reads again and stores without postings."""
    first = _record_of(PatientName="Race^Condition")
    second = _into(first, PatientName="Race^Condition")
    other = DynamoInstanceIndex(client, TABLE)

    class Racing:
        raced = False

        def transact_write_items(self, **kwargs: Any) -> Any:
            if not Racing.raced:
                Racing.raced = True
                assert other.add(first) is AddOutcome.STORED
            return client.transact_write_items(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

    assert DynamoInstanceIndex(Racing(), TABLE, sleep=lambda _: None).add(second) is (
        AddOutcome.STORED
    )
    assert _count(client, "name", "rac") == 1
    assert _studies(client, PatientName="*ace^co*") == [first.study_uid]


def test_another_patients_study_is_still_refused(client: Any) -> None:
    index = DynamoInstanceIndex(client, TABLE, sleep=lambda _: None)
    first = _record_of(patient_id="P-1")
    index.add(first)
    intruder = _into(first, patient_id="P-2")
    assert index.add(intruder) is AddOutcome.PATIENT_MISMATCH


def test_a_substring_search_reads_the_rarest_trigram(client: Any) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    for n in range(12):  # 'smi' in every name, 'xq' only in one
        index.add(_record_of(PatientName=f"Smith{n:02d}^Anna"))
    rare = _record_of(PatientName="Smithxqz^Anna")
    index.add(rare)
    catalog = DynamoSearch(client, TABLE)
    indexes: list[str] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.Query",
        lambda params, **_: indexes.append(params.get("IndexName", "")),
    )
    query = parse({"PatientName": ["*mithxq*"]}, "STUDY")
    result = search_service.search(query, catalog, BASE)
    assert [d["0020000D"]["Value"][0] for d in result.datasets] == [rare.study_uid]
    assert indexes == [""]  # the postings, on the table itself: no study walk
    # 5 counts, the rarest trigram's one posting, the one study.
    assert catalog.items_read == len(ngrams("mithxq")) + 1 + 1


def test_a_study_stored_before_the_index_is_found_after_the_backfill(client: Any) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    old = _record_of(PatientName="Legacy^Study")
    index.add(old)
    for item in _with_trigrams(client):  # as a writer without the substring index leaves it
        client.delete_item(TableName=TABLE, Key={"PK": item["PK"], "SK": item["SK"]})
    client.update_item(
        TableName=TABLE,
        Key={"PK": {"S": study_pk(old.study_uid)}, "SK": {"S": "STUDY"}},
        UpdateExpression="REMOVE tx, gsdt",
    )
    assert _studies(client, PatientName="*egac*") == []
    assert backfill_substring_index(index, client, TABLE) == 1
    assert _studies(client, PatientName="*egac*") == [old.study_uid]
    assert backfill_substring_index(index, client, TABLE) == 0  # idempotent


def test_a_long_posting_read_stops_at_the_deadline_with_what_it_found(client: Any) -> None:
    """Postings the text check drops yield no candidate, so the search's own per-candidate
    clock never runs; the catalog stops them at the deadline, and the answer is cut with
    the offset to continue (Warning 299), not a timeout."""
    index = DynamoInstanceIndex(client, TABLE)
    for n in range(12):
        index.add(_record_of(PatientName=f"Smith{n:02d}^Anna"))
    ticks = iter(range(10**6))
    budget = search_service.SearchBudget(deadline=5, clock=lambda: next(ticks))
    query = parse({"PatientName": ["*smith*1*1*"]}, "STUDY")
    result = search_service.search(query, DynamoSearch(client, TABLE), BASE, budget)
    assert result.exhausted
    assert result.next_offset == len(result.datasets) == 0
    unbounded = search_service.search(query, DynamoSearch(client, TABLE), BASE)
    assert len(unbounded.datasets) == 1
    assert not unbounded.exhausted


def test_a_removed_study_takes_its_postings_and_their_counts_with_it(client: Any) -> None:
    index = DynamoInstanceIndex(client, TABLE)
    gone = _record_of(PatientName="Kowalski^Jan")
    kept = _record_of(PatientName="Kowalczyk^Ewa")
    for record in (gone, kept):
        assert index.add(record) is AddOutcome.STORED
    assert _count(client, "name", "kow") == 2
    assert [e.sop_instance_uid for e in index.remove(gone.study_uid)] == [gone.sop_instance_uid]
    assert _count(client, "name", "kow") == 1
    assert _count(client, "name", "jan") == 0
    owners = {p["SK"]["S"].partition("#")[2] for p in _with_trigrams(client)}
    assert owners == {kept.study_uid}
    assert _studies(client, PatientName="*owal*") == [kept.study_uid]
    assert index.add(gone) is AddOutcome.STORED  # stored again: filed again
    assert _studies(client, PatientName="*owals*") == [gone.study_uid]
    assert _count(client, "name", "kow") == 2
