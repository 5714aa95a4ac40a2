"""dicomweb-apikeys with per-key limits against API Gateway (moto): API keys and usage plans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from shared import keys
from shared.adapters.key_store import SecretsManagerKeyStore
from shared.adapters.usage_plans import ApiGatewayUsagePlans, EntryLimits
from tools import apikeys


@dataclass
class Deployed:
    apigateway: Any
    store: SecretsManagerKeyStore
    secret_id: str
    default_plan: str
    stage: dict[str, str]

    @property
    def plans(self) -> ApiGatewayUsagePlans:
        return ApiGatewayUsagePlans(self.apigateway, self.default_plan)

    def plan_of(self, api_key_id: str) -> list[str]:
        """Ids of the usage plans an API key is on."""
        plans = self.apigateway.get_usage_plans(keyId=api_key_id)["items"]
        return [plan["id"] for plan in plans]


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's second of waiting for the authorizers is skipped here."""
    monkeypatch.setattr(apikeys, "_wait_until_usable", lambda: None)


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        apigateway = boto3.client("apigateway", region_name="us-east-1")
        api_id = apigateway.create_rest_api(name="o3-dpacs")["id"]
        stage = {"apiId": api_id, "stage": "v1"}
        default = apigateway.create_usage_plan(
            name="o3-dpacs-default",
            apiStages=[stage],
            throttle={"rateLimit": 50.0, "burstLimit": 100},
        )["id"]
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        secret_id = secrets.create_secret(Name="keys", SecretString='{"keys": []}')["ARN"]
        yield Deployed(
            apigateway, SecretsManagerKeyStore(secrets, secret_id), secret_id, default, stage
        )


def test_a_new_key_gets_an_api_key_on_the_default_plan(deployed: Deployed) -> None:
    key, entry = apikeys.create(deployed.store, "viewer", plans=deployed.plans)
    assert entry.usage_key.startswith(keys.USAGE_KEY_PREFIX) and entry.usage_key_id
    assert entry.limits is None and not entry.usage_plan_id
    api_key = deployed.apigateway.get_api_key(apiKey=entry.usage_key_id, includeValue=True)
    assert api_key["value"] == entry.usage_key != key
    assert key not in json.dumps(api_key, default=str)
    assert api_key["name"] == f"o3-dpacs-{entry.id}"
    assert deployed.plan_of(entry.usage_key_id) == [deployed.default_plan]
    assert deployed.store.load() == [entry]


def test_a_key_with_limits_gets_a_plan_of_its_own(deployed: Deployed) -> None:
    limits = keys.checked_limits(20, 40, 100_000)
    _, entry = apikeys.create(deployed.store, "script", limits=limits, plans=deployed.plans)
    assert deployed.plan_of(entry.usage_key_id) == [entry.usage_plan_id]
    plan = deployed.apigateway.get_usage_plan(usagePlanId=entry.usage_plan_id)
    assert plan["name"] == f"o3-dpacs-key-{entry.id}"
    assert plan["apiStages"] == [deployed.stage]
    assert plan["throttle"] == {"rateLimit": 20.0, "burstLimit": 40}
    assert plan["quota"]["limit"] == 100_000 and plan["quota"]["period"] == "DAY"
    assert deployed.store.load()[0].limits == limits


def test_limits_move_a_key_to_its_own_plan_change_it_and_back(deployed: Deployed) -> None:
    _, entry = apikeys.create(deployed.store, "viewer", plans=deployed.plans)
    plans = deployed.plans

    own = apikeys.set_limits(deployed.store, plans, entry.id, keys.checked_limits(5, 10, 1000))
    assert own is not None and own.usage_plan_id
    assert deployed.plan_of(entry.usage_key_id) == [own.usage_plan_id]

    patched = apikeys.set_limits(deployed.store, plans, entry.id, keys.checked_limits(4, 8, 500))
    assert patched is not None and patched.usage_plan_id == own.usage_plan_id  # in place
    plan = deployed.apigateway.get_usage_plan(usagePlanId=own.usage_plan_id)
    assert plan["throttle"] == {"rateLimit": 4, "burstLimit": 8}
    assert int(plan["quota"]["limit"]) == 500

    # No quota any more: a fresh plan without one, the old plan deleted.
    changed = apikeys.set_limits(deployed.store, plans, entry.id, keys.checked_limits(2, 3))
    assert changed is not None and changed.usage_plan_id != own.usage_plan_id
    assert deployed.plan_of(entry.usage_key_id) == [changed.usage_plan_id]
    plan = deployed.apigateway.get_usage_plan(usagePlanId=changed.usage_plan_id)
    assert plan["throttle"] == {"rateLimit": 2.0, "burstLimit": 3}
    assert "quota" not in plan
    remaining = {p["id"] for p in deployed.apigateway.get_usage_plans()["items"]}
    assert remaining == {deployed.default_plan, changed.usage_plan_id}

    back = apikeys.set_limits(deployed.store, plans, entry.id, None)
    assert back is not None and back.limits is None and not back.usage_plan_id
    assert deployed.plan_of(entry.usage_key_id) == [deployed.default_plan]
    all_plans = {p["id"] for p in deployed.apigateway.get_usage_plans()["items"]}
    assert all_plans == {deployed.default_plan}
    assert deployed.store.load() == [back]


def test_revoking_deletes_the_api_key_and_its_own_plan(deployed: Deployed) -> None:
    limits = keys.checked_limits(1)
    _, entry = apikeys.create(deployed.store, "gone", limits=limits, plans=deployed.plans)
    assert apikeys.revoke(deployed.store, entry.id, deployed.plans)
    assert deployed.store.load() == []
    assert deployed.apigateway.get_api_keys()["items"] == []
    assert {p["id"] for p in deployed.apigateway.get_usage_plans()["items"]} == {
        deployed.default_plan
    }
    assert not apikeys.revoke(deployed.store, entry.id, deployed.plans)


def test_migrate_puts_old_keys_on_the_default_plan_once(deployed: Deployed) -> None:
    old_key, old = keys.generate("from before limits")
    deployed.store.add(old)
    _, new = apikeys.create(deployed.store, "new", plans=deployed.plans)
    assert apikeys.migrate(deployed.store, deployed.plans) == [old.id]
    migrated = {e.id: e for e in deployed.store.load()}
    assert migrated[new.id] == new
    assert migrated[old.id].sha256 == keys.digest(old_key)  # the same key keeps working
    assert deployed.plan_of(migrated[old.id].usage_key_id) == [deployed.default_plan]
    assert apikeys.migrate(deployed.store, deployed.plans) == []


def test_a_failed_attach_leaves_no_api_key(deployed: Deployed) -> None:
    broken = ApiGatewayUsagePlans(deployed.apigateway, deployed.default_plan)
    _, entry = keys.generate()
    entry = replace(entry, usage_key=keys.new_usage_key())

    def refuse(*_: object) -> None:
        raise RuntimeError("refused")

    broken._put_on = refuse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        broken.attach(entry)
    assert deployed.apigateway.get_api_keys()["items"] == []


def test_the_command_line_creates_limits_lists_and_revokes(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--secret-id", deployed.secret_id, "--usage-plan-id", deployed.default_plan]
    assert apikeys.main([*target, "create", "--label", "cli", "--rate", "2", "--quota", "5"]) == 0
    created = capsys.readouterr().out
    key_id = created.split()[2]
    assert "2/s burst 4, 5/day" in created
    assert apikeys.main([*target, "limits", key_id, "--quota", "0"]) == 0
    assert "2/s burst 4." in capsys.readouterr().out
    assert apikeys.main([*target, "list"]) == 0
    listing = capsys.readouterr().out
    assert "2/s burst 4 " in listing and deployed.store.load()[0].usage_key not in listing
    assert apikeys.main([*target, "limits", key_id, "--default"]) == 0
    assert "default plan" in capsys.readouterr().out
    assert apikeys.main([*target, "revoke", key_id]) == 0
    assert deployed.apigateway.get_api_keys()["items"] == []


def test_without_a_usage_plan_keys_are_legacy_and_limits_are_refused(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--secret-id", deployed.secret_id]
    assert apikeys.main([*target, "create", "--label", "old stack"]) == 0
    assert "legacy (migrate)" in capsys.readouterr().out
    assert apikeys.main([*target, "create", "--rate", "2"]) == 2
    assert "no usage plan known" in capsys.readouterr().err
    assert apikeys.main([*target, "migrate"]) == 2
    assert deployed.apigateway.get_api_keys()["items"] == []


def test_limits_need_a_rate_first(capsys: pytest.CaptureFixture[str]) -> None:
    store = _MemoryStore()
    _, entry = apikeys.create(store, "local", plans=EntryLimits())
    with pytest.raises(apikeys.UsageError, match="--rate"):
        apikeys._limits_option(_Args(rate=None, burst=None, quota=5), entry.limits)
    limits = apikeys._limits_option(_Args(rate=None, burst=None, quota=5), keys.Limits(3, 6))
    assert limits == keys.Limits(3.0, 6, 5)
    changed = apikeys.set_limits(store, EntryLimits(), entry.id, limits)
    assert changed is not None and store.load()[0].limits == limits


@dataclass
class _Args:
    rate: float | None
    burst: int | None
    quota: int | None


class _MemoryStore:
    def __init__(self) -> None:
        self.entries: list[keys.KeyEntry] = []

    def load(self) -> list[keys.KeyEntry]:
        return list(self.entries)

    def save(self, entries: list[keys.KeyEntry]) -> None:
        self.entries = list(entries)

    def add(self, entry: keys.KeyEntry) -> None:
        self.entries.append(entry)

    def revoke(self, key_id: str) -> bool:
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.id != key_id]
        return len(self.entries) < before


# ---------------------------------------------------------------- when a new key works


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the tool had printed each time it waited for the authorizers (instead of waiting)."""
    printed: list[str] = []
    monkeypatch.setattr(
        apikeys, "_wait_until_usable", lambda: printed.append(capsys.readouterr().out)
    )
    return printed


def test_create_shows_the_key_only_once_the_authorizers_can_see_it(
    tmp_path: Path, waits: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"storage": "local", "data_dir": str(tmp_path)}), encoding="utf-8")
    assert apikeys.main(["--local", "--state-file", str(state), "create", "--label", "x"]) == 0
    shown = capsys.readouterr().out
    key = shown.strip().splitlines()[-1]
    assert waits == [""]  # nothing printed before the wait: the key is not in use yet
    assert key.startswith(keys.KEY_PREFIX)
    assert "Usable now" in shown


def test_create_on_aws_says_what_may_still_delay_the_key(
    deployed: Deployed, waits: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--secret-id", deployed.secret_id, "--usage-plan-id", deployed.default_plan]
    assert apikeys.main([*target, "create", "--label", "aws"]) == 0
    shown = capsys.readouterr().out
    assert len(waits) == 1
    assert "usage plan" in shown and "INVALID_API_KEY" in shown
