"""TOKEN authorizer: allow a request whose Authorization header carries an active API key.

Imports nothing heavy (no pydicom, numpy, PIL, Powertools): it runs before every uncached
request. Missing or wrong keys raise ``Exception("Unauthorized")``, which API Gateway turns
into a 401 (its gateway response adds the JSON body and CORS headers).
"""

from __future__ import annotations

import logging
from typing import Any

from shared import keys, wiring

logger = logging.getLogger("authorizer")
logger.setLevel(logging.INFO)


def _resource_arn(method_arn: str) -> str:
    """Widen the method ARN to every method and path of the stage.

    The decision is cached per key, so it must cover all routes, not the first one called.
    """
    parts = method_arn.split("/", 2)
    return f"{parts[0]}/{parts[1]}/*/*" if len(parts) >= 2 else method_arn


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Return an Allow policy for a valid key; raise Unauthorized otherwise."""
    token = keys.token_from_header(event.get("authorizationToken"))
    entry = wiring.key_ring().match(token) if token else None
    if entry is None:
        logger.info("authorization refused: %s", "missing key" if not token else "unknown key")
        raise Exception("Unauthorized")
    return {
        "principalId": f"apikey:{entry.id}",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": _resource_arn(str(event.get("methodArn", ""))),
                }
            ],
        },
        "context": {"keyId": entry.id, "keyLabel": entry.label},
    }
