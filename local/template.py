"""Read template.yaml (SAM + CloudFormation short tags): the project's one CloudFormation loader.

:func:`load_yaml` returns the raw document, each short tag in its JSON form (``!Ref X`` is
``{"Ref": "X"}``) and nothing resolved: what the template tests and tools inspect.
:func:`load` returns what the local stack needs, as plain data.

Nothing about routes or resources is hard-coded here: routes come from each function's ``Api``
events, the authorizer and gateway responses from the ``AWS::Serverless::Api``, and the table,
bucket and secret definitions from their resources. Intrinsic functions are resolved against
parameter defaults (optionally overridden, like ``sam deploy --parameter-overrides``) and
local physical names (``local-<logicalid>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = PROJECT_ROOT / "template.yaml"

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
LOCAL_PREFIX = "local"

_FUNCTION = "AWS::Serverless::Function"
_API = "AWS::Serverless::Api"
_TABLE = "AWS::DynamoDB::Table"
_BUCKET = "AWS::S3::Bucket"
_SECRET = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type, not a password
_USAGE_PLAN = "AWS::ApiGateway::UsagePlan"
_API_KEY = "AWS::ApiGateway::ApiKey"
_USAGE_PLAN_KEY = "AWS::ApiGateway::UsagePlanKey"

# Keys of AWS::DynamoDB::Table Properties that boto3's create_table accepts unchanged.
_CREATE_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "StreamSpecification",
    "TableClass",
)


class TemplateError(ValueError):
    """The template uses something the local stack cannot interpret."""


# ---------------------------------------------------------------- YAML with short tags


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml ships no type hints
    """SafeLoader turning ``!Ref x`` into ``{"Ref": x}``, ``!Sub s`` into ``{"Fn::Sub": s}``..."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unsupported node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)
# CloudFormation has no YAML timestamps: keep dates such as 2010-09-09 as strings.
_CfnLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template into plain Python data, intrinsics unresolved.

    Short tags become CloudFormation's JSON form (``!GetAtt A.B`` is
    ``{"Fn::GetAtt": ["A", "B"]}``, ``!Condition C`` is ``{"Condition": "C"}``); dates such
    as ``2010-09-09`` stay strings, as CloudFormation reads them.
    """
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError(f"{path} is not a template (no top-level mapping)")
    return document


# ---------------------------------------------------------------- intrinsic functions


def local_name(logical_id: str) -> str:
    """Return the local physical name of a resource (valid as a bucket, table or secret name)."""
    return f"{LOCAL_PREFIX}-{logical_id.lower()}"


@dataclass
class _Resolver:
    """Resolve intrinsic functions against parameters, conditions and local physical names."""

    parameters: Mapping[str, str]
    resources: Mapping[str, Any]
    conditions: Mapping[str, Any]
    _condition_cache: dict[str, bool] = field(default_factory=dict)

    def pseudo(self, name: str) -> str | None:
        return {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
            "AWS::StackName": LOCAL_PREFIX,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{LOCAL_PREFIX}/"
                "00000000-0000-4000-8000-000000000000"
            ),
            "AWS::NoValue": None,
        }.get(name, "")

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.resources:
            return local_name(name)
        base, _, generated = name.partition(".")
        if generated in ("Stage", "Deployment") and base in self.resources:
            return local_name(name)  # what SAM generates for an Api (``!Ref MyApi.Stage``)
        raise TemplateError(f"!Ref to unknown name {name!r}")

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.resources.get(logical_id)
        if not isinstance(resource, dict):
            raise TemplateError(f"!GetAtt on unknown resource {logical_id!r}")
        name = local_name(logical_id)
        kind = str(resource.get("Type", ""))
        if attribute != "Arn":
            return name
        arns = {
            _BUCKET: f"arn:aws:s3:::{name}",
            _TABLE: f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}",
            _FUNCTION: f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*",
            _SECRET: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}",
        }
        return arns.get(kind, f"arn:aws:local:{REGION}:{ACCOUNT_ID}:{name}")

    def sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = str(argument[0]), dict(argument[1]) if len(argument) > 1 else {}
        else:
            text, variables = str(argument), {}

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in variables:
                return str(self.resolve(variables[token]))
            if "." in token:
                logical_id, _, attribute = token.partition(".")
                return self.get_att(logical_id, attribute)
            return str(self.ref(token))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._condition_cache[name] = bool(self.resolve(self.conditions[name]))
        return self._condition_cache[name]

    def resolve(self, value: Any) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per intrinsic
        """Return ``value`` with every intrinsic function replaced by its local value."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(str(argument))
            if key == "Fn::GetAtt":
                parts = argument if isinstance(argument, list) else str(argument).split(".", 1)
                return self.get_att(str(parts[0]), str(parts[1]))
            if key == "Fn::Sub":
                return self.sub(argument)
            if key == "Fn::Join":
                separator, items = argument
                return str(separator).join(str(self.resolve(item)) for item in items)
            if key == "Fn::If":
                name, if_true, if_false = argument
                return self.resolve(if_true if self.condition(str(name)) else if_false)
            if key == "Fn::Equals":
                left, right = (self.resolve(item) for item in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Fn::And":
                return all(self.resolve(item) for item in argument)
            if key == "Fn::Or":
                return any(self.resolve(item) for item in argument)
            if key == "Condition":
                return self.condition(str(argument))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(str(separator))
            if key.startswith("Fn::"):
                raise TemplateError(f"intrinsic function {key} is not supported locally")
        return {key: self.resolve(item) for key, item in value.items()}


# ---------------------------------------------------------------- plain data model


@dataclass(frozen=True)
class GatewayResponse:
    """A customised API Gateway response (status, static headers, body templates)."""

    status: int | None
    headers: dict[str, str]
    templates: dict[str, str]


@dataclass(frozen=True)
class Authorizer:
    """A Lambda authorizer of the API."""

    name: str
    function: str
    payload_type: str
    identity_header: str
    reauthorize_every: int
    validation_expression: str | None = None


@dataclass(frozen=True)
class Route:
    """One API event: method (upper case, ``ANY`` allowed), path template and target function."""

    method: str
    path: str
    function: str
    authorizer: str | None
    event_name: str
    #: Whether API Gateway meters the method against the caller's usage plan.
    api_key_required: bool = False


@dataclass(frozen=True)
class Api:
    """The ``AWS::Serverless::Api`` as the emulator needs it."""

    logical_id: str
    stage_name: str
    binary_media_types: tuple[str, ...]
    default_authorizer: str | None
    authorizers: dict[str, Authorizer]
    add_default_authorizer_to_cors_preflight: bool
    gateway_responses: dict[str, GatewayResponse]
    #: Where API keys come from: ``HEADER`` (x-api-key) or ``AUTHORIZER`` (usageIdentifierKey).
    api_key_source: str = "HEADER"
    #: ``Auth.ApiKeyRequired``: the default of every method.
    api_key_required: bool = False
    add_api_key_required_to_cors_preflight: bool = True


@dataclass(frozen=True)
class UsagePlan:
    """An API Gateway usage plan: token bucket (rate per second, burst) and a daily quota;
    None where the plan sets no such limit."""

    name: str
    rate: float | None = None
    burst: int | None = None
    quota: int | None = None


@dataclass(frozen=True)
class Function:
    """An ``AWS::Serverless::Function`` with Globals merged in."""

    logical_id: str
    code_uri: Path
    handler: str
    runtime: str
    memory_size: int
    timeout: int
    environment: dict[str, str]
    routes: tuple[Route, ...]
    #: Key prefixes of the bucket's "Object Created" events this function receives
    #: (EventBridgeRule events matching source aws.s3).
    object_created: tuple[str, ...] = ()
    #: Seconds between invocations of each ``Schedule`` event (``rate(...)`` expressions).
    schedules: tuple[float, ...] = ()
    #: Whether the function reads a table's stream (``DynamoDB`` events): the local stack
    #: invokes it on every poll of its event source (local/events.py).
    streams: bool = False

    @property
    def name(self) -> str:
        """The local function name (what Lambda would call FunctionName)."""
        return local_name(self.logical_id)


@dataclass(frozen=True)
class Table:
    """A DynamoDB table: ``create_args`` go to boto3 ``create_table`` as they are."""

    logical_id: str
    name: str
    create_args: dict[str, Any]


@dataclass(frozen=True)
class Bucket:
    """An S3 bucket."""

    logical_id: str
    name: str
    versioning: bool
    #: Lifecycle expirations: key prefix -> days after which objects under it are deleted.
    expirations: tuple[tuple[str, int], ...] = ()
    #: CORS: origins allowed to GET objects ("*" for any); empty: no CORS headers.
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Secret:
    """A Secrets Manager secret and its initial value."""

    logical_id: str
    name: str
    secret_string: str
    description: str = ""


@dataclass(frozen=True)
class StackTemplate:
    """Everything the local stack takes from template.yaml."""

    path: Path
    parameters: dict[str, str]
    api: Api | None
    functions: dict[str, Function]
    tables: dict[str, Table]
    buckets: dict[str, Bucket]
    secrets: dict[str, Secret]
    outputs: dict[str, str]
    #: Usage plans by local name (what ``!Ref`` of the plan resolves to).
    usage_plans: dict[str, UsagePlan] = field(default_factory=dict)
    #: Values of the template's own API keys -> the usage plan each is on.
    api_keys: dict[str, str] = field(default_factory=dict)

    @property
    def routes(self) -> list[Route]:
        """Every route of every function, in template order."""
        return [route for function in self.functions.values() for route in function.routes]

    def environment(self) -> dict[str, str]:
        """Return the union of all functions' environment variables (they must agree)."""
        merged: dict[str, str] = {}
        for function in self.functions.values():
            for key, value in function.environment.items():
                if key in merged and merged[key] != value:
                    raise TemplateError(
                        f"environment variable {key} differs between functions; "
                        "the local stack runs every function in one process"
                    )
                merged[key] = value
        return merged


# ---------------------------------------------------------------- builders


def _parameters(document: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    declared = document.get("Parameters") or {}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameters in overrides: {sorted(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in overrides:
            values[name] = str(overrides[name])
        elif isinstance(spec, dict) and "Default" in spec:
            default = spec["Default"]
            values[name] = (
                ",".join(map(str, default)) if isinstance(default, list) else str(default)
            )
        else:
            raise TemplateError(f"parameter {name} has no default; pass it as an override")
    return values


def _header_value(expression: str) -> str:
    """Return a gateway-response header mapping value (static ``'...'`` values only)."""
    text = str(expression)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


def _gateway_responses(raw: Mapping[str, Any]) -> dict[str, GatewayResponse]:
    responses: dict[str, GatewayResponse] = {}
    for kind, raw_spec in raw.items():
        spec = raw_spec or {}
        headers = (spec.get("ResponseParameters") or {}).get("Headers") or {}
        status = spec.get("StatusCode")
        responses[kind] = GatewayResponse(
            status=int(status) if status is not None else None,
            headers={str(k): _header_value(v) for k, v in headers.items()},
            templates={str(k): str(v) for k, v in (spec.get("ResponseTemplates") or {}).items()},
        )
    return responses


def _function_logical_id(arn_expression: Any, resources: Mapping[str, Any]) -> str:
    """Return the function behind an authorizer's FunctionArn (``!GetAtt Fn.Arn``)."""
    if isinstance(arn_expression, dict):
        if "Fn::GetAtt" in arn_expression:
            return str(arn_expression["Fn::GetAtt"][0])
        if "Ref" in arn_expression:
            return str(arn_expression["Ref"])
        if "Fn::Sub" in arn_expression:
            match = re.search(r"\$\{(\w+)\.Arn\}", str(arn_expression["Fn::Sub"]))
            if match:
                return match.group(1)
    if isinstance(arn_expression, str) and arn_expression in resources:
        return arn_expression
    raise TemplateError(f"cannot tell which function the authorizer ARN {arn_expression!r} is")


def _api(
    logical_id: str, props: Mapping[str, Any], resolver: _Resolver, resources: Mapping[str, Any]
) -> Api:
    auth = props.get("Auth") or {}
    authorizers: dict[str, Authorizer] = {}
    for name, spec in (auth.get("Authorizers") or {}).items():
        identity = resolver.resolve(spec.get("Identity") or {})
        payload_type = str(resolver.resolve(spec.get("FunctionPayloadType", "TOKEN"))).upper()
        if payload_type != "TOKEN":
            raise TemplateError(f"authorizer {name}: only TOKEN authorizers are emulated")
        authorizers[name] = Authorizer(
            name=name,
            function=_function_logical_id(spec.get("FunctionArn"), resources),
            payload_type=payload_type,
            identity_header=str(identity.get("Header", "Authorization")),
            reauthorize_every=int(identity.get("ReauthorizeEvery", 300)),
            validation_expression=identity.get("ValidationExpression"),
        )
    return Api(
        logical_id=logical_id,
        stage_name=str(resolver.resolve(props.get("StageName", "Prod"))),
        binary_media_types=tuple(
            str(t).replace("~1", "/") for t in resolver.resolve(props.get("BinaryMediaTypes", []))
        ),
        default_authorizer=auth.get("DefaultAuthorizer"),
        authorizers=authorizers,
        add_default_authorizer_to_cors_preflight=bool(
            auth.get("AddDefaultAuthorizerToCorsPreflight", True)
        ),
        gateway_responses=_gateway_responses(resolver.resolve(props.get("GatewayResponses", {}))),
        api_key_source=str(resolver.resolve(props.get("ApiKeySourceType", "HEADER"))).upper(),
        api_key_required=bool(auth.get("ApiKeyRequired", False)),
        add_api_key_required_to_cors_preflight=bool(
            auth.get("AddApiKeyRequiredToCorsPreflight", True)
        ),
    )


def _routes(logical_id: str, props: Mapping[str, Any], api: Api | None) -> tuple[Route, ...]:
    api_id = api.logical_id if api else None
    default_auth = api.default_authorizer if api else None
    routes = []
    for event_name, event in (props.get("Events") or {}).items():
        if not isinstance(event, dict) or event.get("Type") != "Api":
            continue
        spec = event.get("Properties") or {}
        rest_api = spec.get("RestApiId")
        if api_id is not None and rest_api is not None and rest_api != {"Ref": api_id}:
            continue
        auth = spec.get("Auth") or {}
        authorizer = auth.get("Authorizer", default_auth)
        method = str(spec["Method"]).upper()
        # As SAM applies ApiKeyRequired: the event's own setting, else the Api's; OPTIONS
        # never when AddApiKeyRequiredToCorsPreflight is false.
        key_required = bool(auth.get("ApiKeyRequired", api.api_key_required if api else False))
        if method == "OPTIONS" and api is not None:
            key_required = key_required and api.add_api_key_required_to_cors_preflight
        routes.append(
            Route(
                method=method,
                path="/" + str(spec["Path"]).strip("/"),
                function=logical_id,
                authorizer=None if authorizer in (None, "NONE") else str(authorizer),
                event_name=str(event_name),
                api_key_required=key_required,
            )
        )
    return tuple(routes)


_RATE_UNITS = {
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
}


def _schedules(props: Mapping[str, Any], resolver: _Resolver) -> tuple[float, ...]:
    """Periods of the function's ``Schedule`` events written as ``rate(n unit)``."""
    found = []
    for event in (props.get("Events") or {}).values():
        if not isinstance(event, dict) or event.get("Type") != "Schedule":
            continue
        expression = str(resolver.resolve((event.get("Properties") or {}).get("Schedule", "")))
        match = re.fullmatch(r"rate\((\d+) (\w+)\)", expression.strip())
        if match is None or match.group(2) not in _RATE_UNITS:
            raise TemplateError(f"the local stack runs rate(n unit) schedules, not {expression}")
        found.append(float(int(match.group(1)) * _RATE_UNITS[match.group(2)]))
    return tuple(found)


def _object_created(props: Mapping[str, Any]) -> tuple[str, ...]:
    """Key prefixes of the S3 "Object Created" EventBridge rules of the function."""
    prefixes = []
    for event in (props.get("Events") or {}).values():
        if not isinstance(event, dict) or event.get("Type") != "EventBridgeRule":
            continue
        pattern = (event.get("Properties") or {}).get("Pattern") or {}
        if "aws.s3" not in (pattern.get("source") or []) or "Object Created" not in (
            pattern.get("detail-type") or []
        ):
            continue
        keys = ((pattern.get("detail") or {}).get("object") or {}).get("key") or [{"prefix": ""}]
        prefixes += [str(k.get("prefix", "")) for k in keys if isinstance(k, dict)]
    return tuple(prefixes)


def _function(  # noqa: PLR0913, PLR0917 - the function plus what it is resolved against
    logical_id: str,
    props: Mapping[str, Any],
    globals_: Mapping[str, Any],
    resolver: _Resolver,
    root: Path,
    api: Api | None,
) -> Function:
    merged = {**globals_, **props}
    variables = {
        **((globals_.get("Environment") or {}).get("Variables") or {}),
        **((props.get("Environment") or {}).get("Variables") or {}),
    }
    environment = {
        key: str(resolved)
        for key, value in variables.items()
        if (resolved := resolver.resolve(value)) is not None
    }
    return Function(
        logical_id=logical_id,
        code_uri=(root / str(resolver.resolve(merged["CodeUri"]))).resolve(),
        handler=str(resolver.resolve(merged["Handler"])),
        runtime=str(resolver.resolve(merged.get("Runtime", ""))),
        memory_size=int(resolver.resolve(merged.get("MemorySize", 128))),
        timeout=int(resolver.resolve(merged.get("Timeout", 3))),
        environment=environment,
        routes=_routes(logical_id, props, api),
        object_created=_object_created(props),
        schedules=_schedules(props, resolver),
        streams=any(
            isinstance(event, dict) and event.get("Type") == "DynamoDB"
            for event in (props.get("Events") or {}).values()
        ),
    )


def _table_args(props: Mapping[str, Any], resolver: _Resolver) -> dict[str, Any]:
    """boto3 ``create_table`` arguments of a table's properties."""
    args = {k: resolver.resolve(props[k]) for k in _CREATE_TABLE_KEYS if k in props}
    if "StreamSpecification" in args:  # CloudFormation's form has no StreamEnabled
        args["StreamSpecification"] = {"StreamEnabled": True, **args["StreamSpecification"]}
    return args


def load(
    path: Path = DEFAULT_TEMPLATE, parameter_overrides: Mapping[str, str] | None = None
) -> StackTemplate:
    """Load ``path`` and return what the local stack needs, intrinsics resolved locally."""
    document = load_yaml(path)
    resources: dict[str, Any] = document.get("Resources") or {}
    resolver = _Resolver(
        parameters=_parameters(document, parameter_overrides or {}),
        resources=resources,
        conditions=document.get("Conditions") or {},
    )
    root = path.resolve().parent
    globals_ = (document.get("Globals") or {}).get("Function") or {}

    apis = [
        (logical_id, res.get("Properties") or {})
        for logical_id, res in resources.items()
        if res.get("Type") == _API
    ]
    if len(apis) > 1:
        raise TemplateError("the local stack emulates one AWS::Serverless::Api")
    api = _api(apis[0][0], apis[0][1], resolver, resources) if apis else None

    functions: dict[str, Function] = {}
    tables: dict[str, Table] = {}
    buckets: dict[str, Bucket] = {}
    secrets: dict[str, Secret] = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        if "Condition" in resource and not resolver.condition(str(resource["Condition"])):
            continue
        if kind == _FUNCTION:
            functions[logical_id] = _function(logical_id, props, globals_, resolver, root, api)
        elif kind == _TABLE:
            tables[logical_id] = Table(
                logical_id, local_name(logical_id), _table_args(props, resolver)
            )
        elif kind == _BUCKET:
            status = (resolver.resolve(props.get("VersioningConfiguration")) or {}).get("Status")
            buckets[logical_id] = Bucket(
                logical_id,
                local_name(logical_id),
                status == "Enabled",
                _expirations(resolver.resolve(props.get("LifecycleConfiguration")) or {}),
                _cors_origins(resolver.resolve(props.get("CorsConfiguration")) or {}),
            )
        elif kind == _SECRET:
            secrets[logical_id] = Secret(
                logical_id=logical_id,
                name=local_name(logical_id),
                secret_string=(
                    str(resolver.resolve(props["SecretString"]))
                    if "SecretString" in props
                    # GenerateSecretString: a random value, as Secrets Manager would make.
                    else token_urlsafe(48)
                    if "GenerateSecretString" in props
                    else ""
                ),
                description=str(resolver.resolve(props.get("Description", ""))),
            )

    outputs: dict[str, str] = {}
    for name, output in (document.get("Outputs") or {}).items():
        try:
            outputs[name] = str(resolver.resolve(output.get("Value")))
        except TemplateError:
            continue
    return StackTemplate(
        path=path.resolve(),
        parameters=dict(resolver.parameters),
        api=api,
        functions=functions,
        tables=tables,
        buckets=buckets,
        secrets=secrets,
        outputs=outputs,
        **_usage(resources, resolver),
    )


def _usage(resources: Mapping[str, Any], resolver: _Resolver) -> dict[str, Any]:
    """The usage plans, and the template's own API keys (with a Value) on a plan."""
    plans: dict[str, UsagePlan] = {}
    values: dict[str, str] = {}
    plan_keys: list[tuple[str, str]] = []
    for logical_id, resource in resources.items():
        if "Condition" in resource and not resolver.condition(str(resource["Condition"])):
            continue
        kind, props = resource.get("Type"), resource.get("Properties") or {}
        if kind == _USAGE_PLAN:
            plans[local_name(logical_id)] = _usage_plan(logical_id, resolver.resolve(props))
        elif kind == _API_KEY and "Value" in props:
            values[logical_id] = str(resolver.resolve(props["Value"]))
        elif kind == _USAGE_PLAN_KEY:
            plan_keys.append((str(props["KeyId"].get("Ref")), str(props["UsagePlanId"].get("Ref"))))
    api_keys = {
        values[key]: local_name(plan)
        for key, plan in plan_keys
        if key in values and local_name(plan) in plans
    }
    return {"usage_plans": plans, "api_keys": api_keys}


def _usage_plan(logical_id: str, props: Mapping[str, Any]) -> UsagePlan:
    """A usage plan's stage-wide throttle and quota (per-method throttles are not emulated)."""
    throttle = props.get("Throttle") or {}
    quota = props.get("Quota") or {}
    if quota and str(quota.get("Period", "")).upper() != "DAY":
        raise TemplateError(f"usage plan {logical_id}: only daily quotas are emulated")
    if quota and int(quota.get("Offset", 0) or 0):
        raise TemplateError(f"usage plan {logical_id}: quota offsets are not emulated")
    rate, burst = throttle.get("RateLimit"), throttle.get("BurstLimit")
    return UsagePlan(
        name=local_name(logical_id),
        rate=float(rate) if rate is not None else None,
        burst=int(burst) if burst is not None else None,
        quota=int(quota["Limit"]) if quota.get("Limit") is not None else None,
    )


def _expirations(lifecycle: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """(prefix, days) of every enabled rule that expires current objects."""
    found = []
    for rule in lifecycle.get("Rules") or []:
        if not isinstance(rule, dict):  # a rule of a false condition (AWS::NoValue)
            continue
        days = rule.get("ExpirationInDays")
        if isinstance(days, str) and days.isdigit():
            days = int(days)  # a parameter's value (``!Ref``) resolves to its text
        if rule.get("Status") == "Enabled" and isinstance(days, int):
            found.append((str(rule.get("Prefix") or ""), days))
    return tuple(found)


def _cors_origins(cors: dict[str, Any]) -> tuple[str, ...]:
    """Origins of the CORS rules that allow GET."""
    origins: list[str] = []
    for rule in cors.get("CorsRules") or []:
        if "GET" in (rule.get("AllowedMethods") or []):
            origins += [str(o) for o in rule.get("AllowedOrigins") or []]
    return tuple(origins)
