"""The API's TOKEN authorizers, as API Gateway runs them: the identity header checked, the
authorizer function asked (through a cache of its answers), its policy evaluated against
each request's method ARN.

API Gateway caches an authorizer's answer per token for ``ReauthorizeEvery`` seconds, and a
refusal (``Unauthorized``) too: :class:`AuthorizerCache`. The cached policy, not a yes/no, is
evaluated for every request (:func:`policy_allows`), so one answer must cover every route
the token may call.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.api_gateway.responses import GatewayError
from local.template import Authorizer

logger = logging.getLogger(__name__)

#: Run a function by logical id for an event; return its output (the Lambda runtime's invoke).
Invoke = Callable[[str, dict[str, Any]], Any]


def policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    """Evaluate an IAM policy document for execute-api:Invoke on ``method_arn``."""
    allowed = False
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict):
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", str(a)) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(method_arn, str(r)) for r in resources):
            continue
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny":
            return False
        allowed = allowed or effect == "allow"
    return allowed


@dataclass(frozen=True)
class AuthResult:
    """One answer of an authorizer, as API Gateway keeps it."""

    principal_id: str
    policy: dict[str, Any]
    context: dict[str, Any]
    expires: float
    usage_identifier: str | None = None
    #: The authorizer raised Unauthorized: the token gets 401 until the result expires.
    refused: bool = False


class AuthorizerCache:
    """Authorizer answers cached per token for ReauthorizeEvery seconds, as API Gateway does:
    policies, and refusals (``Unauthorized``) alike."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], AuthResult] = {}
        self._lock = threading.Lock()

    def get(self, authorizer: str, token: str) -> AuthResult | None:
        """Return a live cached result, if any."""
        with self._lock:
            entry = self._entries.get((authorizer, token))
            if entry is not None and entry.expires > time.monotonic():
                return entry
            self._entries.pop((authorizer, token), None)
            return None

    def put(self, authorizer: str, token: str, result: AuthResult) -> None:
        """Remember a result until it expires."""
        with self._lock:
            self._entries[(authorizer, token)] = result


class TokenAuthorizers:
    """The API's TOKEN authorizers by name, each answer cached per token.

    Examples
    --------
    >>> authorizers = TokenAuthorizers(api.authorizers, runtime.invoke)
    >>> context, usage_identifier = authorizers.authorize(
    ...     "ApiKeyAuthorizer", request.header, "arn:aws:execute-api:...:api/v1/GET/path"
    ... )
    """

    def __init__(
        self, authorizers: Mapping[str, Authorizer], invoke: Invoke, *, ttl: int | None = None
    ) -> None:
        self._authorizers = dict(authorizers)
        self._invoke = invoke
        #: Overrides every authorizer's ReauthorizeEvery when set.
        self.ttl = ttl
        self.cache = AuthorizerCache()

    def authorize(
        self, name: str, header: Callable[[str], str | None], method_arn: str
    ) -> tuple[dict[str, Any], str | None]:
        """The ``requestContext.authorizer`` of an allowed request and the usage identifier
        the authorizer named; :class:`GatewayError` for a refused one."""
        authorizer = self._authorizers.get(name)
        if authorizer is None:
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Authorizer misconfigured")
        token = header(authorizer.identity_header)
        if not token:
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        if authorizer.validation_expression and not re.fullmatch(
            authorizer.validation_expression, token
        ):
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        result = self._result(authorizer, token, method_arn)
        if result.refused:
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        if not policy_allows(result.policy, method_arn):
            raise GatewayError(
                "ACCESS_DENIED", "User is not authorized to access this resource", status=403
            )
        context = {"principalId": result.principal_id, "integrationLatency": 0, **result.context}
        return context, result.usage_identifier

    def _result(self, authorizer: Authorizer, token: str, method_arn: str) -> AuthResult:
        """The cached answer for this token, or the authorizer's (then cached, refusals too)."""
        ttl = authorizer.reauthorize_every if self.ttl is None else self.ttl
        cached = self.cache.get(authorizer.name, token) if ttl > 0 else None
        if cached is not None:
            return cached
        try:
            result = self._call(authorizer.function, token, method_arn, ttl)
        except GatewayError as error:
            if ttl > 0 and error.response_type == "UNAUTHORIZED":
                refusal = AuthResult("", {}, {}, time.monotonic() + ttl, refused=True)
                self.cache.put(authorizer.name, token, refusal)
            raise
        if ttl > 0:
            self.cache.put(authorizer.name, token, result)
        return result

    def _call(self, function: str, token: str, method_arn: str, ttl: int) -> AuthResult:
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        try:
            output = self._invoke(function, event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise GatewayError("UNAUTHORIZED", "Unauthorized") from exc
            logger.exception("authorizer %s failed", function)
            raise GatewayError("AUTHORIZER_FAILURE", "Internal server error") from exc
        if (
            not isinstance(output, dict)
            or not isinstance(output.get("policyDocument"), dict)
            or "principalId" not in output
        ):
            logger.error("authorizer %s returned no principalId/policyDocument", function)
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        context = output.get("context") or {}
        if not isinstance(context, dict) or any(
            isinstance(v, (dict, list)) for v in context.values()
        ):
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        identifier = output.get("usageIdentifierKey")
        return AuthResult(
            principal_id=str(output["principalId"]),
            policy=output["policyDocument"],
            context=dict(context),
            expires=time.monotonic() + ttl,
            usage_identifier=str(identifier) if identifier else None,
        )
