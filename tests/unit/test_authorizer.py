"""The TOKEN authorizer: 401 for missing/wrong keys, cached key list, light imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from shared import bootstrap, config, keys
from tests.support.handlers import ROOT, load

ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/POST/o3-dpacs-wado/stowRsListener/A/studies"


@dataclass
class FakeStore:
    entries: list[keys.KeyEntry] = field(default_factory=list)
    loads: int = 0

    def load(self) -> list[keys.KeyEntry]:
        self.loads += 1
        return list(self.entries)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Monotonic time as the key cache sees it; a fresh process-wide refresh limit."""
    now = [1000.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(keys, "REFRESHES", keys.RefreshLimit())
    return now


def container(store: FakeStore):
    """An authorizer module (a container) whose archive holds ``store``."""
    module = load("authorizer")
    settings = config.Settings(key_cache_ttl=60)
    return module, module.archive.using(bootstrap.build(settings, key_store=store))


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch, clock: list[float]):
    store = FakeStore()
    module, archive = container(store)
    monkeypatch.setattr(config, "settings", lambda: config.Settings(key_cache_ttl=60))
    with archive:
        yield module, store


def event(token: object) -> dict[str, object]:
    return {"type": "TOKEN", "authorizationToken": token, "methodArn": ARN}


def test_valid_key_is_allowed_every_route_of_its_scopes_on_the_stage(authorizer) -> None:
    module, store = authorizer
    key, entry = keys.generate("modality")
    store.entries.append(entry)
    policy = module.lambda_handler(event(key), None)
    statement = policy["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    stage = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1"
    assert f"{stage}/POST/o3-dpacs-wado/stowRsListener/*" in statement["Resource"]
    assert f"{stage}/GET/o3-dpacs-wado/rs/*" in statement["Resource"]
    assert policy["principalId"] == f"apikey:{entry.id}"
    assert policy["context"]["scopes"] == "admin,read,store"
    assert key not in str(policy)


def test_bearer_form_is_allowed(authorizer) -> None:
    module, store = authorizer
    key, entry = keys.generate()
    store.entries.append(entry)
    assert module.lambda_handler(event(f"Bearer {key}"), None)["principalId"]


@pytest.mark.parametrize("token", [None, "", "wrong-key-wrong-key", "Bearer "])
def test_missing_or_wrong_key_raises_unauthorized(authorizer, token: str | None) -> None:
    module, store = authorizer
    store.entries.append(keys.generate()[1])
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        module.lambda_handler(event(token), None)


def test_revoked_key_stops_working_after_the_cache_ttl(authorizer, clock) -> None:
    module, store = authorizer
    key, entry = keys.generate()
    store.entries.append(entry)
    module.lambda_handler(event(key), None)
    store.entries.clear()  # revoked
    clock[0] += 59
    module.lambda_handler(event(key), None)  # still in the cached key list
    assert store.loads == 1
    clock[0] += 2
    with pytest.raises(Exception, match="Unauthorized"):
        module.lambda_handler(event(key), None)
    assert store.loads == 2


def test_a_key_created_after_the_list_was_cached_is_allowed_at_once(authorizer, clock) -> None:
    module, store = authorizer
    old_key, old = keys.generate("old")
    store.entries.append(old)
    module.lambda_handler(event(old_key), None)  # the key list is now cached for 60 s
    clock[0] += 5
    new_key, new = keys.generate("new")
    store.entries.append(new)  # dicomweb-apikeys create
    assert module.lambda_handler(event(new_key), None)["principalId"] == f"apikey:{new.id}"
    assert store.loads == 2


def test_a_key_stored_within_a_second_of_the_last_read_is_allowed_a_second_later(
    authorizer, clock
) -> None:
    module, store = authorizer
    with pytest.raises(Exception, match="Unauthorized"):
        module.lambda_handler(event("o3k_not-yet-stored-key-0123"), None)  # reads the list
    key, entry = keys.generate()
    store.entries.append(entry)
    clock[0] += 0.5
    with pytest.raises(Exception, match="Unauthorized"):
        module.lambda_handler(event(key), None)  # read half a second ago: not again
    assert store.loads == 1
    clock[0] += 0.5
    assert module.lambda_handler(event(key), None)["principalId"] == f"apikey:{entry.id}"
    assert store.loads == 2


def test_a_flood_of_unknown_keys_reads_the_list_at_most_once_a_second(authorizer, clock) -> None:
    module, store = authorizer
    store.entries.append(keys.generate()[1])
    for step in range(200):  # 200 wrong keys over 10 seconds
        clock[0] += 0.05
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            module.lambda_handler(event(f"o3k_wrong-key-number-{step:04d}"), None)
    assert store.loads <= 11


def test_the_refresh_limit_is_shared_by_the_containers_of_a_process(authorizer, clock) -> None:
    module, store = authorizer
    other, its_archive = container(store)  # a second container: the same process
    store.entries.append(keys.generate()[1])
    with its_archive:
        for one in (module, other):
            with pytest.raises(Exception, match="Unauthorized"):
                one.lambda_handler(event("o3k_wrong-key-0123456789"), None)
        clock[0] += 0.5
        for one in (module, other):
            with pytest.raises(Exception, match="Unauthorized"):
                one.lambda_handler(event("o3k_other-wrong-key-0123"), None)
    assert store.loads == 2  # each container's first read; no refresh within the second


@pytest.mark.parametrize(
    "token",
    ["\ud800broken-surrogate-key", "ключ-не-из-кольца-0123", "x" * 1_000_000, "Bearer \x00\x01", 7],
)
def test_odd_tokens_are_refused_not_crashed_on(authorizer, token: object) -> None:
    module, store = authorizer
    store.entries.append(keys.generate()[1])
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        module.lambda_handler(event(token), None)


def test_authorizer_imports_nothing_heavy() -> None:
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(ROOT)!r}); "
        f"runpy.run_path({str(ROOT / 'functions' / 'authorizer' / 'app.py')!r}); "
        "heavy = [m for m in ('pydicom', 'numpy', 'PIL', 'aws_lambda_powertools') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------- usage plans


def test_a_key_is_metered_under_its_own_usage_identifier(authorizer) -> None:
    module, store = authorizer
    key, entry = keys.generate("viewer")
    usage_key = keys.new_usage_key()
    store.entries.append(dataclasses.replace(entry, usage_key=usage_key))
    answer = module.lambda_handler(event(key), None)
    assert answer["usageIdentifierKey"] == usage_key
    assert usage_key not in str(answer["context"])  # functions see it only as API Gateway says


def test_a_key_from_before_limits_is_metered_under_the_legacy_identifier(
    authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, store = authorizer
    key, entry = keys.generate("old")
    store.entries.append(entry)
    monkeypatch.setattr(
        config, "settings", lambda: config.Settings(legacy_usage_key="legacy-keys-1234")
    )
    assert module.lambda_handler(event(key), None)["usageIdentifierKey"] == "legacy-keys-1234"


def test_without_a_legacy_identifier_an_old_key_names_none(authorizer) -> None:
    module, store = authorizer
    key, entry = keys.generate("old")
    store.entries.append(entry)
    assert "usageIdentifierKey" not in module.lambda_handler(event(key), None)


def test_legacy_usage_key_is_read_from_the_environment() -> None:
    settings = config.Settings.from_mapping({"LEGACY_USAGE_KEY": "legacy-keys-abcd"})
    assert settings.legacy_usage_key == "legacy-keys-abcd"
