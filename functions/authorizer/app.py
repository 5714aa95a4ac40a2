"""TOKEN authorizer: allow a request whose Authorization header carries an active API key.

Imports nothing heavy (no pydicom, numpy, PIL, Powertools): it runs before every uncached
request. Missing or wrong keys raise ``Exception("Unauthorized")``, which API Gateway turns
into a 401 (its gateway response adds the JSON body and CORS headers).

The key list is cached per container for ``KEY_CACHE_TTL`` seconds; a key not in the cached
list makes it re-read first, at most once a second per process (``keys.KeyRingCache``), so
a key created a second ago is never refused.

The answer names the key's usage identifier (``usageIdentifierKey``): the API's key source
is AUTHORIZER, so API Gateway meters the request against that API key's usage plan (rate,
burst, daily quota) and answers 429 itself past a limit. Keys stored before per-key limits
have no identifier of their own and share the stack's legacy one (``LEGACY_USAGE_KEY``,
a plan without limits) until ``dicomweb-apikeys migrate`` gives them one.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import bootstrap, config, keys
from shared._generated.routes import SCOPE_DENIES, SCOPE_ROUTES

logger = logging.getLogger("authorizer")
logger.setLevel(logging.INFO)
#: This container's archive: its key ring is the cached key list.
archive = bootstrap.Provider()


#: The routes each scope opens (method, path pattern under the stage), generated from
#: template.yaml by tools/make_routes.py; functions check the scope again.
_ROUTES = SCOPE_ROUTES


def _resource_arns(method_arn: str, scopes: tuple[str, ...]) -> list[str]:
    """The stage's routes the key's scopes open.

    The decision is cached per key, so it must cover all of them, not the first one called.
    """
    parts = method_arn.split("/", 2)
    if len(parts) < 2:
        return [method_arn]
    stage = f"{parts[0]}/{parts[1]}"
    routes = (f"{stage}/{method}/{path}" for s in scopes for method, path in _ROUTES.get(s, ()))
    return list(dict.fromkeys(routes))


def _denied_arns(method_arn: str, scopes: tuple[str, ...]) -> list[str]:
    """Routes the key's patterns open that none of its scopes owns (an explicit Deny wins
    over the Allow of a pattern)."""
    parts = method_arn.split("/", 2)
    if len(parts) < 2:
        return []
    stage = f"{parts[0]}/{parts[1]}"
    owned = {route for s in scopes for route in _ROUTES.get(s, ())}
    denied = (d for s in scopes for d in SCOPE_DENIES.get(s, ()) if d not in owned)
    return list(dict.fromkeys(f"{stage}/{method}/{path}" for method, path in denied))


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Return an Allow policy for a valid key; raise Unauthorized otherwise."""
    token = keys.token_from_header(event.get("authorizationToken"))
    entry = archive().key_ring.match(token) if token else None
    if entry is None:
        logger.info("authorization refused: %s", "missing key" if not token else "unknown key")
        raise Exception("Unauthorized")
    resources = _resource_arns(str(event.get("methodArn", "")), entry.scopes)
    statements: list[dict[str, Any]] = [
        {
            "Action": "execute-api:Invoke",
            "Effect": "Allow" if resources else "Deny",
            "Resource": resources or [str(event.get("methodArn", ""))],
        }
    ]
    denied = _denied_arns(str(event.get("methodArn", "")), entry.scopes) if resources else []
    if denied:
        statements.append({"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": denied})
    answer: dict[str, Any] = {
        "principalId": f"apikey:{entry.id}",
        "policyDocument": {"Version": "2012-10-17", "Statement": statements},
        "context": {
            "keyId": entry.id,
            "keyLabel": entry.label,
            "scopes": ",".join(entry.scopes),
        },
    }
    usage_key = entry.usage_key or config.settings().legacy_usage_key
    if usage_key:
        answer["usageIdentifierKey"] = usage_key
    return answer
