"""Hypothesis over the key tools and the authorizer.

``dicomweb-apikeys`` create / revoke / scopes / limits with random labels, scopes and rates,
through its functions and its command line, on the local key file: nothing but a refusal
(exit 2) or a success, the key list stays parseable, a revoked key never authorizes, a
created key authorizes a second after it is stored even with the key list cached. The
authorizer answers any token (non-ASCII, lone surrogates, huge) with an Allow or
``Unauthorized``, nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from shared import bootstrap, config, keys
from shared.adapters.key_store import FileKeyStore
from shared.adapters.usage_plans import EntryLimits
from shared.bootstrap import API_KEYS_FILE, SECRETS_DIR
from tests.support.handlers import load
from tools import apikeys

ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/GET/o3-dpacs-wado/qido/A/studies"

labels = st.text(st.characters(exclude_categories=()), max_size=40)
scope_lists = st.lists(st.sampled_from([*keys.SCOPES, "write", "", "READ"]), max_size=4)
rates = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e-9, 0.5, 1.0, 20.0, 1e308]),
)
bursts = st.one_of(st.none(), st.integers(-5, 10**12))
quotas = st.one_of(st.none(), st.integers(-5, 10**12))


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class KeyTools(RuleBasedStateMachine):
    """Random sequences of key tool commands against one key file and one cached ring."""

    created = Bundle("created")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(self._tmp_root()) / "data"
        self.store = FileKeyStore(self.root / SECRETS_DIR / API_KEYS_FILE)
        self.state_file = self.root / "state.json"
        self.root.mkdir(parents=True)
        self.state_file.write_text(
            json.dumps({"storage": "local", "data_dir": str(self.root)}), encoding="utf-8"
        )
        self.store.save([])
        self.clock = Clock()
        self.ring = keys.KeyRingCache(self.store.load, 60, keys.RefreshLimit(), self.clock)
        self.revoked: list[str] = []
        self.live: dict[str, str] = {}  # key id -> key

    @staticmethod
    def _tmp_root() -> str:
        return tempfile.mkdtemp(prefix="fuzz-keys-")

    def teardown(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)

    def _cli(self, *args: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = apikeys.main(["--local", "--state-file", str(self.state_file), *args])
        return status, out.getvalue() + err.getvalue()

    @rule(target=created, label=labels, scopes=scope_lists, rate=rates, burst=bursts)
    def create(self, label: str, scopes: list[str], rate: float, burst: int | None) -> str:
        self.ring.match("o3k_read-the-list-first-000")  # the list is now cached
        try:
            limits = keys.checked_limits(rate, burst)
        except ValueError:
            limits = None
        try:
            key, entry = apikeys.create(
                self.store, label, tuple(scopes), limits=limits, plans=EntryLimits()
            )
        except ValueError:
            return ""
        self.clock.now += keys.REFRESH_INTERVAL
        found = self.ring.match(key)
        assert found is not None and found.id == entry.id
        self.live[entry.id] = key
        return entry.id

    @rule(label=labels, rate=rates)
    def create_on_the_command_line(self, label: str, rate: float) -> None:
        status, output = self._cli("create", f"--label={label}", f"--rate={rate!r}")
        assert status in (0, 2), output
        if status == 0:
            key = output.strip().splitlines()[-1]
            entry = keys.KeyRing(self.store.load()).match(key)
            assert entry is not None
            self.live[entry.id] = key

    @rule(key_id=consumes(created))
    def revoke(self, key_id: str) -> None:
        if not key_id:
            return
        assert apikeys.revoke(self.store, key_id, EntryLimits())
        self.revoked.append(self.live.pop(key_id))

    @rule(key_id=created, scopes=scope_lists)
    def change_scopes(self, key_id: str, scopes: list[str]) -> None:
        try:
            changed = apikeys.set_scopes(self.store, key_id, tuple(scopes))
        except ValueError:
            return
        assert changed is None or set(changed.scopes) == set(scopes)

    @rule(key_id=created, rate=rates, burst=bursts, quota=quotas)
    def change_limits(self, key_id: str, rate: float, burst: int | None, quota: int | None) -> None:
        try:
            limits = keys.checked_limits(rate, burst, quota)
        except ValueError:
            return
        changed = apikeys.set_limits(self.store, EntryLimits(), key_id, limits)
        assert changed is None or changed.limits == limits

    @precondition(lambda self: bool(self.live))
    @rule(rate=rates, quota=quotas)
    def limits_on_the_command_line(self, rate: float, quota: int | None) -> None:
        key_id = sorted(self.live)[0]
        args = ["limits", key_id, f"--rate={rate!r}"]
        if quota is not None:
            args.append(f"--quota={quota}")
        status, output = self._cli(*args)
        assert status in (0, 2), output

    @rule()
    def listing(self) -> None:
        status, output = self._cli("list")
        assert status == 0
        assert not any(key in output for key in [*self.live.values(), *self.revoked])

    @invariant()
    def the_key_list_stays_valid_and_parseable(self) -> None:
        text = (self.root / SECRETS_DIR / API_KEYS_FILE).read_text(encoding="utf-8")
        document = json.loads(text)  # strict JSON: no NaN or Infinity
        entries = keys.parse_secret(text)
        assert len(entries) == len(document["keys"]) == len(self.live)
        assert keys.parse_secret(keys.dump_secret(entries)) == entries
        for entry in entries:
            assert entry.scopes and set(entry.scopes) <= set(keys.SCOPES)
            assert entry.limits is None or entry.limits == keys.checked_limits(
                entry.limits.rate, entry.limits.burst, entry.limits.quota
            )

    @invariant()
    def revoked_keys_never_authorize_and_live_ones_do(self) -> None:
        fresh = keys.KeyRing(self.store.load())
        assert all(fresh.match(key) is None for key in self.revoked)
        assert all(fresh.match(key) is not None for key in self.live.values())


TestKeyTools = KeyTools.TestCase
TestKeyTools.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's second of waiting for the authorizers is skipped here."""
    monkeypatch.setattr(apikeys, "_wait_until_usable", lambda: None)


# ---------------------------------------------------------------- the authorizer

tokens = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=300),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.builds(
        lambda c, n: c * n, st.sampled_from("x\u00e9\ud800\U0001f600 "), st.integers(0, 10**6)
    ),
    st.text(string.printable, max_size=60).map(lambda t: "Bearer " + t),
)


@pytest.fixture(scope="module")
def authorizer():
    module = load("authorizer")
    key, entry = keys.generate("fuzz")

    class Store:
        def load(self) -> list[keys.KeyEntry]:
            return [entry]

    saved = config.settings
    config.settings = lambda: config.Settings(key_cache_ttl=60)  # type: ignore[method-assign]
    with module.archive.using(bootstrap.build(config.settings(), key_store=Store())):
        yield module, key
    config.settings = saved  # type: ignore[method-assign]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=tokens)
def test_any_token_is_allowed_only_if_it_is_the_key_else_unauthorized(
    authorizer, token: str
) -> None:
    module, key = authorizer
    assume(keys.token_from_header(token) != key)
    event = {"type": "TOKEN", "authorizationToken": token, "methodArn": ARN}
    with pytest.raises(Exception) as raised:
        module.lambda_handler(event, None)
    assert type(raised.value) is Exception and str(raised.value) == "Unauthorized"


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.sampled_from(["", "Bearer ", "ApiKey ", "  bearer  "]))
def test_the_key_in_any_accepted_form_is_allowed(authorizer, prefix: str) -> None:
    module, key = authorizer
    event = {"type": "TOKEN", "authorizationToken": prefix + key, "methodArn": ARN}
    assert module.lambda_handler(event, None)["policyDocument"]["Statement"][0]["Effect"] == "Allow"
