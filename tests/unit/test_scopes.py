"""Key scopes: every route of the template is opened by the authorizer's policy exactly for
the scopes its function requires, and every function refuses (403) a key without them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from local.api_gateway.authorizer import policy_allows
from local.template import load as load_template
from shared import bootstrap, config, keys
from tests.support.handlers import Context, load

STAGE_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1"
#: The scopes each API function accepts (any one of them).
_READING = (keys.READ, keys.READ_DEIDENTIFIED)
REQUIRED = {
    "StowFunction": (keys.STORE,),
    "UploadsFunction": (keys.STORE,),
    "QidoFunction": _READING,
    "WadoRsFunction": _READING,
    "WadoUriFunction": _READING,
    "LifecycleFunction": (keys.ADMIN,),
}
#: Routes that accept other scopes than their function's: the listing of upload
#: results answers ``admin`` keys too (the objects dropped under incoming/).
ROUTE_REQUIRED = {
    ("GET", "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/uploads"): (keys.STORE, keys.ADMIN),
}
ROUTES = [
    (route.function, route.method, route.path)
    for route in load_template().routes
    if route.method != "OPTIONS"
]
SCOPE_SETS = [
    combo
    for n in range(1, len(keys.SCOPES) + 1)
    for combo in itertools.combinations(keys.SCOPES, n)
    if not {keys.STORE, keys.READ_DEIDENTIFIED} <= set(combo)  # refused: see below
]
EVENTS = Path(__file__).resolve().parents[2] / "events"


def _sample_path(path: str) -> str:
    return path.replace("{", "").replace("}", "")  # any text in place of each parameter


def _required(function: str, method: str, path: str) -> tuple[str, ...]:
    return ROUTE_REQUIRED.get((method, path), REQUIRED[function])


def test_every_api_function_has_a_required_scope() -> None:
    assert {function for function, _, _ in ROUTES} == set(REQUIRED)


@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=",".join)
def test_the_policy_opens_exactly_the_routes_of_the_key_s_scopes(scopes, monkeypatch) -> None:
    module = load("authorizer")
    key, entry = keys.generate("k", scopes)
    store = type("S", (), {"load": lambda self: [entry]})()
    monkeypatch.setattr(config, "settings", lambda: config.Settings(key_cache_ttl=0))
    fakes = bootstrap.build(config.settings(), key_store=store)
    with module.archive.using(fakes):
        decision = module.lambda_handler(
            {"type": "TOKEN", "authorizationToken": key, "methodArn": f"{STAGE_ARN}/GET/x"}, None
        )
    for function, method, path in ROUTES:
        arn = f"{STAGE_ARN}/{method}{_sample_path(path)}"
        expected = bool(set(_required(function, method, path)) & set(scopes))
        assert policy_allows(decision["policyDocument"], arn) is expected, (scopes, method, path)
    assert decision["context"]["scopes"] == ",".join(sorted(scopes))


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EVENTS.glob("*.json") if "preflight" not in p.name)
)
def test_every_function_refuses_a_key_without_its_scope(name: str) -> None:
    event = json.loads((EVENTS / name).read_text())
    if "httpMethod" not in event:
        return  # the authorizer's and the ingest function's events
    function, method, path = next(
        r for r in ROUTES if r[1] == event["httpMethod"] and r[2] == event["resource"]
    )
    required = _required(function, method, path)
    module = load(
        {
            "StowFunction": "stow",
            "UploadsFunction": "uploads",
            "QidoFunction": "qido",
            "WadoRsFunction": "wado_rs",
            "WadoUriFunction": "wado_uri",
            "LifecycleFunction": "lifecycle",
        }[function]
    )
    others = [s for s in keys.SCOPES if s not in required]
    event["requestContext"]["authorizer"]["scopes"] = ",".join(others)
    response = module.lambda_handler(event, Context())
    assert response["statusCode"] == 403, name
    message = json.loads(response["body"])["message"]
    assert all(scope in message for scope in required)


@given(st.lists(st.text(max_size=20), max_size=5))
def test_stored_scopes_grant_only_known_names(names) -> None:
    document = json.dumps({"keys": [{"id": "a", "sha256": "0" * 64, "scopes": names}]})
    (entry,) = keys.parse_secret(document)
    assert set(entry.scopes) <= set(keys.SCOPES)
    assert set(entry.scopes) == {n for n in names if n in keys.SCOPES}


def test_keys_stored_before_scopes_keep_full_access() -> None:
    (entry,) = keys.parse_secret('{"keys": [{"id": "a", "sha256": "' + "0" * 64 + '"}]}')
    assert entry.scopes == keys.LEGACY_SCOPES
    again = keys.parse_secret(keys.dump_secret([entry]))
    assert again == [entry]


@pytest.mark.parametrize("scopes", [(), ("write",), ("read-deidentified", "store")])
def test_keys_cannot_be_made_with_no_unknown_or_conflicting_scopes(scopes) -> None:
    with pytest.raises(ValueError):
        keys.generate("k", scopes)


@pytest.mark.parametrize(
    ("scopes", "view"),
    [
        (("read-deidentified",), True),
        (("admin", "read-deidentified"), True),
        (("read", "read-deidentified"), False),  # read keeps the normal view
        (("read",), False),
        (keys.LEGACY_SCOPES, False),
    ],
)
def test_read_deidentified_without_read_is_the_deidentified_view(scopes, view) -> None:
    _, entry = keys.generate("k", scopes)
    assert keys.deidentified_view(entry.scopes) is view
