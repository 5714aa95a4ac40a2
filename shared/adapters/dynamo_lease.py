"""The ``Lease`` port on the index's DynamoDB table: one item per lease (``LEASE#{name}``),
taken by a conditional put (absent, ended, or already the holder's) and released by a
conditional delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable

_SK = "LEASE"


class DynamoLease:
    """Leases as items of the index table (port :class:`shared.ports.Lease`)."""

    def __init__(self, client: Any, table: str, clock: Callable[[], float] = time.time) -> None:
        self._client, self._table, self._clock = client, table, clock

    def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take or extend the lease; False when another holder's has not ended."""
        now = self._clock()
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "PK": {"S": f"LEASE#{name}"},
                    "SK": {"S": _SK},
                    "holder": {"S": holder},
                    "until": {"N": repr(now + seconds)},
                },
                ConditionExpression="attribute_not_exists(PK) OR #u < :now OR holder = :holder",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={":now": {"N": repr(now)}, ":holder": {"S": holder}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        return True

    def release(self, name: str, holder: str) -> None:
        """Delete the lease's item if ``holder`` still has it."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"PK": {"S": f"LEASE#{name}"}, "SK": {"S": _SK}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return
            raise StorageUnavailable("the index is unavailable, retry later") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the index is unavailable, retry later") from exc
