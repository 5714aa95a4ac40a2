"""API keys: digests, constant-time matching, header forms, secret document."""

from __future__ import annotations

import dataclasses
import hmac
import json

import pytest

from shared import keys


def test_generated_keys_are_long_random_and_stored_as_digest() -> None:
    key, entry = keys.generate("viewer")
    other, _ = keys.generate()
    assert key != other and len(key) >= 40
    assert entry.sha256 == keys.digest(key) and key not in keys.dump_secret([entry])
    assert entry.label == "viewer" and entry.id and entry.created.endswith("Z")


def test_ring_matches_any_active_key() -> None:
    k1, e1 = keys.generate()
    k2, e2 = keys.generate()
    ring = keys.KeyRing([e1, e2])
    assert ring.match(k1) == e1
    assert ring.match(k2) == e2
    assert ring.match(k1 + "x") is None
    assert ring.match("") is None


def test_every_entry_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", counting)
    entries = [keys.generate()[1] for _ in range(5)]
    first_key, first = keys.generate()
    keys.KeyRing([first, *entries]).match(first_key)
    assert len(calls) == 6  # no early exit on the first match


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("abc123", "abc123"),
        ("  abc123 ", "abc123"),
        ("Bearer abc123", "abc123"),
        ("bearer   abc123", "abc123"),
        ("ApiKey abc123", "abc123"),
        ("", None),
        (None, None),
        ("Bearer ", None),
    ],
)
def test_token_from_header(header: str | None, token: str | None) -> None:
    assert keys.token_from_header(header) == token


def test_secret_document_round_trip_and_tolerance() -> None:
    _, entry = keys.generate("a")
    assert keys.parse_secret(keys.dump_secret([entry])) == [entry]
    assert keys.parse_secret("not json") == []
    assert keys.parse_secret('{"keys": [{"id": "x"}, 5, {"id": "y", "sha256": "00"}]}')[0].id == "y"


def test_short_operator_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        keys.entry_for("short")


# ---------------------------------------------------------------- per-key limits


def test_usage_fields_round_trip_and_are_left_out_when_unset() -> None:
    _, plain = keys.generate("legacy")
    _, entry = keys.generate("viewer")
    limited = dataclasses.replace(
        entry,
        usage_key=keys.new_usage_key(),
        usage_key_id="abc123",
        limits=keys.Limits(rate=2.5, burst=5, quota=1000),
        usage_plan_id="plan42",
    )
    text = keys.dump_secret([plain, limited])
    assert keys.parse_secret(text) == [plain, limited]
    stored_plain = json.loads(text)["keys"][0]
    assert not {"usage_key", "usage_key_id", "limits", "usage_plan_id"} & set(stored_plain)


def test_malformed_stored_limits_mean_the_default_plan() -> None:
    _, entry = keys.generate()
    document = json.loads(keys.dump_secret([entry]))
    document["keys"][0]["limits"] = {"rate": "fast", "burst": 1}
    assert keys.parse_secret(json.dumps(document))[0].limits is None
    document["keys"][0]["limits"] = {"rate": 0, "burst": 1}
    assert keys.parse_secret(json.dumps(document))[0].limits is None


def test_checked_limits_defaults_and_refusals() -> None:
    assert keys.checked_limits(20) == keys.Limits(20.0, 40, None)
    assert keys.checked_limits(0.2) == keys.Limits(0.2, 1, None)
    assert keys.checked_limits(2, 3, 0) == keys.Limits(2.0, 3, None)
    assert keys.checked_limits(2, 3, 5).quota == 5
    for bad in (
        (0, 1, None),
        (-1, 1, None),
        (1, 0, None),
        (1, 1, -5),
        (float("inf"), None, None),
        (float("nan"), 1, None),
        (8.9e307, None, None),  # twice the rate, the default burst, would be infinite
        (1, 2**31, None),
        (1, 1, 2**31),
    ):
        with pytest.raises(ValueError, match="--"):
            keys.checked_limits(*bad)


def test_usage_keys_are_random_and_valid_api_gateway_key_values() -> None:
    first, second = keys.new_usage_key(), keys.new_usage_key()
    assert first != second
    assert 20 <= len(first) <= 128 and first.startswith(keys.USAGE_KEY_PREFIX)


# ---------------------------------------------------------------- the authorizer's key cache


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self) -> None:
        self.entries: list[keys.KeyEntry] = []
        self.loads = 0

    def load(self) -> list[keys.KeyEntry]:
        self.loads += 1
        return list(self.entries)


def cache(store: Store, clock: Clock, ttl: float = 60, limit: keys.RefreshLimit | None = None):
    return keys.KeyRingCache(store.load, ttl, limit or keys.RefreshLimit(), clock)


def test_a_known_key_is_matched_from_the_cached_list_until_its_ttl() -> None:
    store, clock = Store(), Clock()
    key, entry = keys.generate()
    store.entries.append(entry)
    ring = cache(store, clock)
    assert ring.match(key) == entry
    clock.now += 59.9
    assert ring.match(key) == entry
    assert store.loads == 1
    clock.now += 0.1
    assert ring.match(key) == entry
    assert store.loads == 2


def test_an_unknown_key_rereads_the_list_once_a_second_at_most() -> None:
    store, clock = Store(), Clock()
    ring = cache(store, clock)
    assert ring.match("o3k_unknown-key-000000") is None
    assert store.loads == 1  # the first read, no second one at the same instant
    key, entry = keys.generate()
    store.entries.append(entry)
    clock.now += 0.999
    assert ring.match(key) is None
    assert store.loads == 1
    clock.now += 0.001
    assert ring.match(key) == entry
    assert store.loads == 2
    assert ring.match(key) == entry  # now in the cached list
    assert store.loads == 2


def test_with_no_ttl_every_check_reads_once() -> None:
    store, clock = Store(), Clock()
    ring = cache(store, clock, ttl=0)
    for _ in range(3):
        assert ring.match("o3k_unknown-key-000000") is None
    assert store.loads == 3


def test_one_refresh_limit_serves_every_cache_of_a_process() -> None:
    store, clock = Store(), Clock()
    limit = keys.RefreshLimit()
    first, second = cache(store, clock, limit=limit), cache(store, clock, limit=limit)
    first.match("o3k_unknown-key-000000")
    clock.now += 2
    first.match("o3k_unknown-key-000001")  # a refresh
    second.match("o3k_unknown-key-000002")  # its first read, noted by the limit
    clock.now += 0.5
    first.match("o3k_unknown-key-000003")
    second.match("o3k_unknown-key-000004")
    assert store.loads == 3


def test_a_failing_read_is_not_hidden() -> None:
    def broken() -> list[keys.KeyEntry]:
        raise OSError("secret unreachable")

    ring = keys.KeyRingCache(broken, 60, keys.RefreshLimit(), Clock())
    with pytest.raises(OSError, match="unreachable"):
        ring.match("o3k_any-key-0000000000")


@pytest.mark.parametrize("value", ["\ud800\udfff-lone-surrogates", "ключ", "x" * 100_000, ""])
def test_any_string_has_a_digest(value: str) -> None:
    assert len(keys.digest(value)) == 64
