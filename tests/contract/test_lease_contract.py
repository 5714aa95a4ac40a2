"""The ``Lease`` port on SQLite and DynamoDB (moto): one holder at a time; its own holder
extends it; another takes it once it ended or was released; a release by another holder
changes nothing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from local import template as local_template
from shared.adapters.dynamo_lease import DynamoLease
from shared.adapters.sqlite_lease import SqliteLease


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "dynamodb"])
def made(request: pytest.FixtureRequest, mocked_aws: None, tmp_path: Path) -> tuple[Any, Clock]:
    clock = Clock()
    if request.param == "sqlite":
        return SqliteLease(tmp_path / "leases.sqlite3", clock), clock
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="lease-contract", **local_template.load().tables["IndexTable"].create_args
    )
    return DynamoLease(dynamodb, "lease-contract", clock), clock


def test_one_holder_at_a_time_until_it_ends_or_is_released(made: tuple[Any, Clock]) -> None:
    lease, clock = made
    assert lease.acquire("ops", "a", 60) is True
    assert lease.acquire("ops", "b", 60) is False
    assert lease.acquire("other", "b", 60) is True  # another name is another lease
    assert lease.acquire("ops", "a", 60) is True  # its holder extends it
    clock.now += 59
    assert lease.acquire("ops", "b", 60) is False
    lease.release("ops", "b")  # not b's: nothing changes
    assert lease.acquire("ops", "b", 60) is False
    clock.now += 2  # a's time has ended (a died)
    assert lease.acquire("ops", "b", 60) is True
    lease.release("ops", "a")  # a comes back late: b keeps it
    assert lease.acquire("ops", "c", 60) is False
    lease.release("ops", "b")
    assert lease.acquire("ops", "c", 60) is True


def test_racing_holders_never_both_win(tmp_path: Path) -> None:
    """Eight threads race for the lease on SQLite, many rounds: exactly one wins each."""
    lease = SqliteLease(tmp_path / "leases.sqlite3")

    def take(holder: str, barrier: threading.Barrier, won: list[str]) -> None:
        barrier.wait()
        if lease.acquire("ops", holder, 60):
            won.append(holder)

    for round_number in range(20):
        won: list[str] = []
        barrier = threading.Barrier(8)
        threads = [
            threading.Thread(target=take, args=(f"{round_number}-{i}", barrier, won))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, won
        lease.release("ops", won[0])
