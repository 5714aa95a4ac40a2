"""Per-key limits: each API key's usage plan, kept by the key tool (dicomweb-apikeys).

A deployed stack meters every key with API Gateway: the key has an API Gateway API key
whose value is its usage identifier (the authorizer returns it as ``usageIdentifierKey``),
on the stack's default usage plan or on a plan of its own (rate, burst, daily quota).
The local stack's emulator reads the limits straight from the key entries, so there the
entries are all there is to change.

The API Gateway key's value is an identifier, not a credential (the API's key source is
AUTHORIZER: API Gateway never takes it from a request); it is never printed or logged.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Protocol

from shared import keys


class UsagePlanAdmin(Protocol):
    """Keeps a key's usage plan in step with its entry."""

    def attach(self, entry: keys.KeyEntry) -> keys.KeyEntry:
        """Put a key with a usage identifier on its plan (own limits or the default plan);
        return the entry with what must be stored to find it again."""

    def change(self, entry: keys.KeyEntry, limits: keys.Limits | None) -> keys.KeyEntry:
        """Give an attached key its own limits, new ones, or (None) the default plan's."""

    def detach(self, entry: keys.KeyEntry) -> None:
        """Remove what ``attach`` made (a revoked key)."""


class EntryLimits:
    """The local stack: the emulator reads the limits from the key entries themselves."""

    def attach(self, entry: keys.KeyEntry) -> keys.KeyEntry:
        """Nothing to make: the entry carries its usage identifier and limits."""
        return entry

    def change(self, entry: keys.KeyEntry, limits: keys.Limits | None) -> keys.KeyEntry:
        """The entry with its new limits."""
        return replace(entry, limits=limits)

    def detach(self, entry: keys.KeyEntry) -> None:
        """Nothing to remove."""


def _throttle(limits: keys.Limits) -> dict[str, Any]:
    return {"rateLimit": limits.rate, "burstLimit": limits.burst}


def _same_quota_kind(old: keys.Limits | None, new: keys.Limits) -> bool:
    """Whether both have a quota or both have none (a plan is then patched in place)."""
    return old is not None and (old.quota is None) == (new.quota is None)


def _patch(limits: keys.Limits) -> list[dict[str, str]]:
    """Replace a plan's throttle, and its quota when it has one."""
    operations = [
        {"op": "replace", "path": "/throttle/rateLimit", "value": f"{limits.rate:g}"},
        {"op": "replace", "path": "/throttle/burstLimit", "value": str(limits.burst)},
    ]
    if limits.quota is not None:
        operations.append({"op": "replace", "path": "/quota/limit", "value": str(limits.quota)})
    return operations


class ApiGatewayUsagePlans:
    """A deployed stack: an API Gateway API key per archive key, on the default usage plan
    (the stack's ``DefaultUsagePlanId`` output) or on a usage plan of its own."""

    def __init__(self, client: Any, default_plan_id: str) -> None:
        self._client = client
        self._default_id = default_plan_id
        self._default: dict[str, Any] | None = None

    def _default_plan(self) -> dict[str, Any]:
        if self._default is None:
            self._default = dict(self._client.get_usage_plan(usagePlanId=self._default_id))
        return self._default

    def _prefix(self) -> str:
        """Names of what is made for a key start with the default plan's ("<stack>-default")."""
        return str(self._default_plan().get("name", "dicomweb")).removesuffix("-default")

    def _own_plan(self, entry: keys.KeyEntry, limits: keys.Limits) -> str:
        arguments: dict[str, Any] = {
            "name": f"{self._prefix()}-key-{entry.id}",
            "description": f"Own limits of API key {entry.id} (dicomweb-apikeys)",
            "apiStages": self._default_plan().get("apiStages", []),
            "throttle": _throttle(limits),
        }
        if limits.quota is not None:
            arguments["quota"] = {"limit": limits.quota, "period": "DAY"}
        return str(self._client.create_usage_plan(**arguments)["id"])

    def _delete_plan(self, plan_id: str) -> None:
        """A plan can be deleted once no stage is left on it."""
        plan = self._client.get_usage_plan(usagePlanId=plan_id)
        operations = [
            {"op": "remove", "path": "/apiStages", "value": f"{s['apiId']}:{s['stage']}"}
            for s in plan.get("apiStages", [])
        ]
        if operations:
            self._client.update_usage_plan(usagePlanId=plan_id, patchOperations=operations)
        self._client.delete_usage_plan(usagePlanId=plan_id)

    def _put_on(self, plan_id: str, key_id: str) -> None:
        self._client.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")

    def attach(self, entry: keys.KeyEntry) -> keys.KeyEntry:
        """Create the API key (value: the usage identifier) and put it on its plan."""
        if not entry.usage_key:
            raise ValueError(f"key {entry.id} has no usage identifier")
        created = self._client.create_api_key(
            name=f"{self._prefix()}-{entry.id}",
            description=f"Usage identifier of archive API key {entry.id} (not a credential)",
            enabled=True,
            value=entry.usage_key,
        )
        key_id = str(created["id"])
        own = ""
        try:
            if entry.limits is not None:
                own = self._own_plan(entry, entry.limits)
            self._put_on(own or self._default_id, key_id)
        except Exception:
            self._client.delete_api_key(apiKey=key_id)  # no orphan API key
            if own:
                self._delete_plan(own)
            raise
        return replace(entry, usage_key_id=key_id, usage_plan_id=own)

    def change(self, entry: keys.KeyEntry, limits: keys.Limits | None) -> keys.KeyEntry:
        """Update the key's own plan, move the key to a new own plan, or back to the default.

        A key is on one plan per stage: it leaves the old plan before it joins the new one,
        so for that moment its requests may be refused (403) and should be retried.
        """
        key_id = entry.usage_key_id
        if not key_id:
            raise ValueError(f"key {entry.id} has no API Gateway API key (migrate it first)")
        own = entry.usage_plan_id
        if limits is not None and own and _same_quota_kind(entry.limits, limits):
            self._client.update_usage_plan(usagePlanId=own, patchOperations=_patch(limits))
            return replace(entry, limits=limits)
        # A new own plan, a quota added or dropped (a fresh plan, rather than adding or
        # removing a quota in place), or back to the default plan: the key moves.
        target = self._own_plan(entry, limits) if limits is not None else self._default_id
        self._client.delete_usage_plan_key(usagePlanId=own or self._default_id, keyId=key_id)
        self._put_on(target, key_id)
        if own:
            self._delete_plan(own)
        return replace(entry, limits=limits, usage_plan_id=target if limits is not None else "")

    def detach(self, entry: keys.KeyEntry) -> None:
        """Delete the key's API key and its own plan; what is gone already is skipped."""
        missing = self._client.exceptions.NotFoundException
        if entry.usage_key_id:
            with contextlib.suppress(missing):
                self._client.delete_api_key(apiKey=entry.usage_key_id)
        if entry.usage_plan_id:
            with contextlib.suppress(missing):
                self._delete_plan(entry.usage_plan_id)
