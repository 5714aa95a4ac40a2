"""template.yaml: linters, security baseline, events per route, layers and the SAM build.

The cheap guard against "runs locally, fails on deploy". cfn-lint, ``sam validate --lint``
and checkov run once per module (module-scoped fixtures); they are looked up on PATH
(``make test`` / ``make template`` put .venv-tools/bin there) and the tests that need one
are skipped, naming it, when it is missing. No AWS account is needed: the tools run with a
region set and no credentials or AWS config at all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from local.template import load, load_yaml
from shared import deadline

pytestmark = [pytest.mark.template, pytest.mark.xdist_group("template")]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
TOOL_TIMEOUT = 300

# What the Lambda Python runtime provides besides the standard library (the AWS SDK and
# its dependencies). A function without the DicomLayer may import nothing else.
RUNTIME_PROVIDED = {
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "urllib3",
    "six",
    "certifi",
}
CHECKOV_ID = re.compile(r"^CKV2?_AWS_\d+$")
MIN_REASON_LENGTH = 15


# --------------------------------------------------------------------------- loading


#: The raw document, intrinsic functions unresolved (local.template is the one loader).
TPL = load_yaml(TEMPLATE)
RESOURCES: dict[str, dict[str, Any]] = TPL["Resources"]
GLOBAL_FUNCTION: dict[str, Any] = TPL.get("Globals", {}).get("Function", {})


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {lid: res for lid, res in RESOURCES.items() if res["Type"] == kind}


FUNCTIONS = _of_type("AWS::Serverless::Function")
LAYERS = _of_type("AWS::Serverless::LayerVersion")
BUCKETS = _of_type("AWS::S3::Bucket")
TABLES = _of_type("AWS::DynamoDB::Table")
APIS = _of_type("AWS::Serverless::Api")


def _routes() -> list[tuple[str, str, str, str]]:
    """(function, event name, METHOD, path) of every Api event in the template."""
    routes = []
    for fn, res in FUNCTIONS.items():
        for name, event in res["Properties"].get("Events", {}).items():
            if event["Type"] == "Api":
                props = event["Properties"]
                routes.append((fn, name, props["Method"].upper(), props["Path"]))
    return routes


ROUTES = _routes()


def _refs(value: Any) -> set[str]:
    """Logical ids referenced anywhere in a value (Ref, GetAtt, ${Id} in Sub)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
        return set().union(*(_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    return set()


def _authorizer_functions() -> set[str]:
    found: set[str] = set()
    for api in APIS.values():
        for authorizer in api["Properties"].get("Auth", {}).get("Authorizers", {}).values():
            found |= _refs(authorizer.get("FunctionArn"))
    return found


def _prop(lid: str, name: str) -> Any:
    """A function property, falling back to Globals.Function."""
    return RESOURCES[lid]["Properties"].get(name, GLOBAL_FUNCTION.get(name))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _load_events() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(EVENTS.glob("*.json"))
    }


# --------------------------------------------------------------------------- tools


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH: run `make template` (puts .venv-tools/bin on PATH)")
    return path


def _run(
    args: list[str], env: dict[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{Path(args[0]).name} took more than {TOOL_TIMEOUT} s")


@pytest.fixture(scope="module")
def tool_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for the tools: a region, and no AWS credentials or config at all."""
    nowhere = tmp_path_factory.mktemp("no-aws") / "absent"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=str(nowhere),
        AWS_SHARED_CREDENTIALS_FILE=str(nowhere),
        AWS_EC2_METADATA_DISABLED="true",
        SAM_CLI_TELEMETRY="0",
    )
    return env


@pytest.fixture(scope="module")
def cfn_lint(tool_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([_tool("cfn-lint"), str(TEMPLATE)], tool_env)


@pytest.fixture(scope="module")
def sam_validate(tool_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([_tool("sam"), "validate", "--lint", "--template-file", str(TEMPLATE)], tool_env)


@pytest.fixture(scope="module")
def checkov(tool_env: dict[str, str]) -> dict[str, Any]:
    """checkov's JSON report for the template (cloudformation framework, offline)."""
    proc = _run(
        [
            _tool("checkov"),
            *("-f", str(TEMPLATE), "--framework", "cloudformation"),
            *("--skip-download", "--output", "json"),
        ],
        tool_env,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    reports = report if isinstance(report, list) else [report]
    found = [r for r in reports if r.get("check_type") == "cloudformation"]
    assert found, f"checkov scanned nothing: {report}"
    return {"returncode": proc.returncode, **found[0]}


# --------------------------------------------------------------------------- linters


def test_cfn_lint_passes(cfn_lint: subprocess.CompletedProcess[str]) -> None:
    assert cfn_lint.returncode == 0, cfn_lint.stdout + cfn_lint.stderr


def test_sam_validate_lint_passes_without_aws_credentials(
    sam_validate: subprocess.CompletedProcess[str],
) -> None:
    output = sam_validate.stdout + sam_validate.stderr
    assert sam_validate.returncode == 0, output
    assert "is a valid SAM Template" in output


def test_checkov_finds_nothing_unexplained(checkov: dict[str, Any]) -> None:
    results = checkov["results"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]
    ]
    assert failed == [], "fix the template or skip with a reason in its Metadata:\n" + "\n".join(
        failed
    )
    assert results.get("parsing_errors", []) == []
    assert checkov["returncode"] == 0


def test_checkov_skips_reported_carry_their_reason(checkov: dict[str, Any]) -> None:
    for check in checkov["results"]["skipped_checks"]:
        comment = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(comment) >= MIN_REASON_LENGTH, f"{check['check_id']} {check['resource']}"


@pytest.mark.parametrize("lid", sorted(RESOURCES))
def test_every_checkov_skip_in_the_template_has_a_reason(lid: str) -> None:
    skips = (RESOURCES[lid].get("Metadata") or {}).get("checkov", {}).get("skip", [])
    for skip in skips:
        assert CHECKOV_ID.match(str(skip.get("id", ""))), f"{lid}: bad check id {skip}"
        reason = str(skip.get("comment") or "").strip()
        assert len(reason) >= MIN_REASON_LENGTH, f"{lid}: {skip.get('id')} needs a real comment"


def test_no_inline_checkov_suppression_without_reason() -> None:
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        match = re.search(r"checkov:skip=(.*)", line)
        if match:
            check, _, reason = match.group(1).partition(":")
            assert CHECKOV_ID.match(check.strip()), line
            assert len(reason.strip()) >= MIN_REASON_LENGTH, line


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize(
    ("fn", "event_name", "method", "path"), ROUTES, ids=[f"{r[0]}.{r[1]}" for r in ROUTES]
)
def test_every_route_has_an_event_file(fn: str, event_name: str, method: str, path: str) -> None:
    found = [
        name
        for name, event in _load_events().items()
        if event.get("httpMethod") == method and event.get("resource") == path
    ]
    assert found, f"no events/*.json with httpMethod {method} and resource {path} ({fn})"


def test_event_files_are_up_to_date() -> None:
    pytest.importorskip("pydicom", reason="tools/make_events.py needs pydicom (dev extras)")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.make_events", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stage() -> str:
    return str(TPL["Parameters"]["StageName"]["Default"])


@pytest.mark.parametrize("name", sorted(n for n, e in _load_events().items() if "httpMethod" in e))
def test_proxy_events_are_consistent(name: str) -> None:
    event = _load_events()[name]
    path = event["resource"]
    for key, value in (event.get("pathParameters") or {}).items():
        path = path.replace("{" + key + "}", value)
    assert event["path"] == path
    context = event["requestContext"]
    assert context["stage"] == _stage()
    assert context["path"] == f"/{_stage()}{path}"
    assert context["httpMethod"] == event["httpMethod"]
    assert context["resourcePath"] == event["resource"]
    assert {k: [v] for k, v in event["headers"].items()} == event["multiValueHeaders"]


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, e in _load_events().items()
        if e.get("httpMethod") == "POST"
        and "/studies" in e.get("resource", "")
        and "/restore/" not in e.get("resource", "")
        and "$bulkUpdate" not in e.get("resource", "")
    ),
)
def test_stow_events_carry_a_base64_multipart_dicom_body(name: str) -> None:
    event = _load_events()[name]
    assert event["isBase64Encoded"] is True
    content_type = event["headers"]["Content-Type"]
    assert content_type.startswith("multipart/related")
    assert 'type="application/dicom"' in content_type
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    assert boundary
    body = base64.b64decode(event["body"], validate=True)
    assert body.endswith(f"--{boundary.group(1)}--\r\n".encode())
    part = body.split(f"--{boundary.group(1)}\r\n".encode())[1]
    _, content = part.split(b"\r\n\r\n", 1)
    assert content[128:132] == b"DICM", "the part is not a DICOM Part 10 file"
    assert event["requestContext"].get("authorizer"), "POST routes pass through the authorizer"


def test_authorizer_event_is_a_token_event_for_a_real_route() -> None:
    event = json.loads((EVENTS / "authorizer-token.json").read_text(encoding="utf-8"))
    assert event["type"] == "TOKEN"
    assert event["authorizationToken"]
    arn = re.match(
        r"^arn:aws:execute-api:[a-z0-9-]+:\d{12}:\w+/(\w+)/([A-Z]+)(/.*)$", event["methodArn"]
    )
    assert arn, event["methodArn"]
    stage, method, path = arn.groups()
    assert stage == _stage()
    patterns = [
        re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) for _, _, m, p in ROUTES if m == method
    ]
    assert any(re.fullmatch(p, path) for p in patterns), f"{method} {path} is no route"


# --------------------------------------------------------------------------- security baseline


@pytest.mark.parametrize("lid", sorted(BUCKETS))
def test_bucket_is_encrypted_versioned_private_and_retained(lid: str) -> None:
    bucket = BUCKETS[lid]
    props = bucket["Properties"]
    assert bucket.get("DeletionPolicy") == "Retain"
    assert bucket.get("UpdateReplacePolicy") == "Retain"
    rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algorithm = rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert algorithm in {"AES256", "aws:kms", "aws:kms:dsse"}
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    block = props["PublicAccessBlockConfiguration"]
    for key in (
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ):
        assert block.get(key) is True, key


def _denies_insecure_transport(statement: dict[str, Any], bucket: str) -> bool:
    condition = statement.get("Condition", {}).get("Bool", {})
    resources = _as_list(statement.get("Resource"))
    covers_objects = any(
        isinstance(r, dict) and "Fn::Sub" in r and r["Fn::Sub"].endswith("/*") for r in resources
    )
    return (
        statement.get("Effect") == "Deny"
        and statement.get("Principal") in ("*", {"AWS": "*"})
        and "s3:*" in _as_list(statement.get("Action"))
        and str(condition.get("aws:SecureTransport")).lower() == "false"
        and bucket in _refs(resources)
        and covers_objects
    )


@pytest.mark.parametrize("lid", sorted(BUCKETS))
def test_bucket_policy_denies_insecure_transport(lid: str) -> None:
    policies = [
        res["Properties"]["PolicyDocument"]
        for res in _of_type("AWS::S3::BucketPolicy").values()
        if lid in _refs(res["Properties"]["Bucket"])
    ]
    assert any(_denies_insecure_transport(s, lid) for doc in policies for s in doc["Statement"]), (
        f"{lid} needs a Deny on aws:SecureTransport=false for the bucket and its objects"
    )


@pytest.mark.parametrize("lid", sorted(TABLES))
def test_table_has_pitr_encryption_deletion_protection_and_retain(lid: str) -> None:
    table = TABLES[lid]
    props = table["Properties"]
    assert table.get("DeletionPolicy") == "Retain"
    assert table.get("UpdateReplacePolicy") == "Retain"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True


@pytest.mark.parametrize("lid", sorted(APIS))
def test_api_has_access_logs_tracing_throttling_and_an_authorizer(lid: str) -> None:
    props = APIS[lid]["Properties"]
    condition, log, otherwise = props["AccessLogSetting"]["Fn::If"]
    assert condition == "ApiAccessLogs"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert log["DestinationArn"]
    assert "$input" not in log["Format"], "access logs must not carry request data"
    assert props["TracingEnabled"] is True
    throttled = [
        s
        for s in props["MethodSettings"]
        if s.get("ResourcePath") == "/*"
        and s.get("HttpMethod") == "*"
        and s.get("ThrottlingBurstLimit")
        and s.get("ThrottlingRateLimit")
    ]
    assert throttled, "a stage-wide throttle (/* *) is required"
    assert props["Auth"]["DefaultAuthorizer"] in props["Auth"]["Authorizers"]


@pytest.mark.parametrize("lid", sorted(APIS))
def test_every_key_is_metered_by_a_usage_plan_and_preflights_need_no_key(lid: str) -> None:
    props = APIS[lid]["Properties"]
    assert props["ApiKeySourceType"] == "AUTHORIZER"
    assert props["Auth"]["ApiKeyRequired"] is True
    assert props["Auth"]["AddApiKeyRequiredToCorsPreflight"] is False
    for fn, name, method, _ in ROUTES:
        auth = RESOURCES[fn]["Properties"]["Events"][name]["Properties"].get("Auth", {})
        assert auth.get("ApiKeyRequired", True) is True, f"{fn}.{name} opts out of its limits"
        if method == "OPTIONS":
            assert auth.get("Authorizer") == "NONE"
    plans = _of_type("AWS::ApiGateway::UsagePlan")
    for plan in plans.values():
        (stage,) = plan["Properties"]["ApiStages"]
        assert stage == {"ApiId": {"Ref": lid}, "Stage": {"Ref": f"{lid}.Stage"}}
    default = plans["DefaultUsagePlan"]["Properties"]
    assert default["Throttle"] == {
        "RateLimit": {"Ref": "KeyRateLimit"},
        "BurstLimit": {"Ref": "KeyBurstLimit"},
    }
    assert TPL["Outputs"]["DefaultUsagePlanId"]["Value"] == {"Ref": "DefaultUsagePlan"}


def test_legacy_keys_share_the_legacy_api_key_the_authorizer_names() -> None:
    value = RESOURCES["LegacyUsageKey"]["Properties"]["Value"]
    environment = RESOURCES["AuthorizerFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["LEGACY_USAGE_KEY"] == value
    plan_key = RESOURCES["LegacyUsagePlanKey"]["Properties"]
    assert plan_key["KeyId"] == {"Ref": "LegacyUsageKey"}
    assert plan_key["UsagePlanId"] == {"Ref": "LegacyUsagePlan"}
    legacy = RESOURCES["LegacyUsagePlan"]["Properties"]
    assert "Throttle" not in legacy and "Quota" not in legacy  # only the stage's limits


@pytest.mark.parametrize("kind", ["THROTTLED", "QUOTA_EXCEEDED"])
def test_over_a_limit_is_429_json_with_a_reason_and_cors(kind: str) -> None:
    for api in APIS.values():
        response = api["Properties"]["GatewayResponses"][kind]
        assert response["StatusCode"] == "429"
        assert "Access-Control-Allow-Origin" in response["ResponseParameters"]["Headers"]
        body = json.loads(response["ResponseTemplates"]["application/json"])
        assert body["reason"] == kind and body["message"]


# --------------------------------------------------------------------------- a first deploy


def test_access_logging_has_the_account_role_it_needs_or_is_off() -> None:
    """A REST stage with an access log fails to deploy unless the account (per region) has
    API Gateway's CloudWatch role: created by the stack (the default), said to exist, or no
    access log at all."""
    parameter = TPL["Parameters"]["ApiGatewayLoggingRole"]
    assert parameter["Default"] == "create"
    assert set(parameter["AllowedValues"]) == {"create", "existing", "none"}
    conditions = TPL["Conditions"]
    assert conditions["CreateApiGatewayLoggingRole"] == {
        "Fn::Equals": [{"Ref": "ApiGatewayLoggingRole"}, "create"]
    }
    assert conditions["ApiAccessLogs"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ApiGatewayLoggingRole"}, "none"]}]
    }
    (account_id,) = _of_type("AWS::ApiGateway::Account")
    account = RESOURCES[account_id]
    role_id = _refs(account["Properties"]["CloudWatchRoleArn"]).pop()
    role = RESOURCES[role_id]
    for resource in (account, role):
        assert resource["Condition"] == "CreateApiGatewayLoggingRole"
        # Deleting the stack must not take logging away from the region's other APIs.
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    (policy,) = role["Properties"]["ManagedPolicyArns"]
    assert policy["Fn::Sub"].endswith(
        ":iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
    )
    for api in APIS.values():
        # A conditional DependsOn: the stage waits for the account setting it needs.
        waits = [v for v in (api.get("Metadata") or {}).values() if "Fn::If" in str(v)]
        assert {"Fn::If": ["CreateApiGatewayLoggingRole", {"Ref": account_id}, "none"]} in waits


@pytest.mark.parametrize(
    "lid",
    sorted(
        lid
        for lid, fn in FUNCTIONS.items()
        if any(e.get("Type") == "Api" for e in (fn["Properties"].get("Events") or {}).values())
    ),
)
def test_function_timeout_leaves_time_to_answer_before_api_gateway_gives_up(lid: str) -> None:
    """API Gateway answers a bare 504 at 29 s, counted from before a cold start's init; the
    handlers stop STOP_MARGIN_S before the function's timeout (shared/deadline.py)."""
    timeout = int(_prop(lid, "Timeout"))
    assert timeout <= deadline.API_GATEWAY_TIMEOUT_S - deadline.COLD_START_ALLOWANCE_S
    assert timeout - deadline.STOP_MARGIN_S >= 15, "too little time left for real work"


def test_stored_studies_move_to_intelligent_tiering_only_when_asked() -> None:
    parameter = TPL["Parameters"]["IntelligentTieringAfterDays"]
    assert parameter["Default"] == 0
    assert TPL["Conditions"]["TierStudies"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "IntelligentTieringAfterDays"}, 0]}]
    }
    (bucket,) = BUCKETS.values()
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    tiering = [r["Fn::If"] for r in rules if "Fn::If" in r and r["Fn::If"][0] == "TierStudies"]
    assert len(tiering) == 1
    condition, rule, otherwise = tiering[0]
    assert condition == "TierStudies"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "dicom/", "only stored studies; retrieve/ bodies expire in a day"
    assert rule["Transitions"] == [
        {
            "StorageClass": "INTELLIGENT_TIERING",
            "TransitionInDays": {"Ref": "IntelligentTieringAfterDays"},
        }
    ]


@pytest.mark.parametrize("lid", sorted(FUNCTIONS))
def test_function_is_traced_and_reserves_concurrency_only_when_asked(lid: str) -> None:
    """Reserving concurrency fails the deploy in a new account (limit 10, 100 kept
    unreserved): a parameter per function group, 0 (none) by default."""
    assert _prop(lid, "Tracing") == "Active"
    reserved = _prop(lid, "ReservedConcurrentExecutions")
    condition, when_reserved, otherwise = reserved["Fn::If"]
    assert otherwise == {"Ref": "AWS::NoValue"}
    parameter = TPL["Parameters"][when_reserved["Ref"]]
    assert parameter["Default"] == 0
    assert TPL["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": when_reserved["Ref"]}, 0]}]
    }


@pytest.mark.parametrize("lid", sorted(FUNCTIONS))
def test_function_policies_are_inline_and_without_wildcards(lid: str) -> None:
    policies = _as_list(FUNCTIONS[lid]["Properties"].get("Policies", []))
    for policy in policies:
        # Managed policies and SAM policy templates hide their actions: write statements.
        assert isinstance(policy, dict) and "Statement" in policy, f"{lid}: {policy}"
        for statement in policy["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            actions = _as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], f"{lid}: wildcard action in {actions}"
            assert "*" not in _as_list(statement["Resource"]), f"{lid}: Resource '*'"


@pytest.mark.parametrize("lid", sorted(FUNCTIONS))
def test_function_has_a_log_group_with_retention(lid: str) -> None:
    groups = [
        res["Properties"]
        for res in _of_type("AWS::Logs::LogGroup").values()
        if res["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{lid}}}"}
    ]
    assert groups, f"{lid} needs an AWS::Logs::LogGroup named /aws/lambda/${{{lid}}}"
    assert groups[0].get("RetentionInDays")


# --------------------------------------------------------------------------- authorizer


def test_the_api_has_an_authorizer_function() -> None:
    assert _authorizer_functions(), "no API authorizer found"
    assert _authorizer_functions() <= set(FUNCTIONS)


@pytest.mark.parametrize("lid", sorted(_authorizer_functions()))
def test_authorizer_has_no_dicom_layer(lid: str) -> None:
    layers = _refs(_prop(lid, "Layers") or [])
    assert "DicomLayer" not in layers, f"{lid} runs before every uncached request: keep it light"


@pytest.mark.parametrize("lid", sorted(_authorizer_functions()))
def test_authorizer_imports_only_the_runtime_and_shared(lid: str) -> None:
    code = ROOT / _prop(lid, "CodeUri")
    module = str(_prop(lid, "Handler")).split(".")[0]
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(ROOT)!r}]\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    allowed = set(sys.stdlib_module_names) | RUNTIME_PROVIDED | {module, "shared", "functions"}
    extra = {
        name
        for name in json.loads(proc.stdout)
        if name not in allowed and not name.startswith("_") and name != "sitecustomize"
    }
    assert not extra, f"{lid} imports {sorted(extra)}, which its Lambda (no DicomLayer) lacks"


# --------------------------------------------------------------------------- layers and build


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#", 1)[0].strip()) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def _layer_requirements(*files: str) -> dict[str, Requirement]:
    text = "\n".join((ROOT / "layers" / name).read_text(encoding="utf-8") for name in files)
    return _requirements([ln for ln in text.splitlines() if ln.split("#", 1)[0].strip()])


def test_layer_requirements_agree_with_pyproject() -> None:
    dicom = _layer_requirements("dicom/requirements.txt", "dicom/requirements-nodeps.txt")
    pixels = _layer_requirements("pixels/requirements.txt")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = _requirements(pyproject["project"]["dependencies"])
    assert {"pydicom", "aws-lambda-powertools"} <= set(dicom)
    assert set(pixels) == {"numpy", "pillow", "imagecodecs"}
    assert not set(dicom) & set(pixels)
    for name, requirement in {**dicom, **pixels}.items():
        assert name in project, f"{name} is in a layer but not in [project].dependencies"
        assert requirement.specifier == project[name].specifier, name
    assert set(project) - {"boto3"} == set(dicom) | set(pixels), "a dependency in no layer"
    # The runtime provides the SDK (reason in layers/dicom/requirements.txt).
    assert not {"boto3", "botocore"} & (set(dicom) | set(pixels))


@pytest.mark.parametrize("lid", sorted(FUNCTIONS))
def test_only_the_wado_functions_carry_the_pixel_layer(lid: str) -> None:
    # pydicom imports numpy whenever it is installed: STOW and QIDO must not have it.
    layers = _refs(_prop(lid, "Layers") or [])
    wado = str(_prop(lid, "CodeUri")).rstrip("/").endswith(("wado_rs", "wado_uri"))
    assert ("PixelLayer" in layers) == wado, lid


@pytest.mark.parametrize("lid", sorted(FUNCTIONS))
def test_function_folder_has_no_requirements_txt(lid: str) -> None:
    # Without one, SAM's python builder only copies the code and needs no python3.13 here;
    # third-party packages belong in layers/dicom/requirements.txt.
    code = ROOT / str(_prop(lid, "CodeUri"))
    assert not (code / "requirements.txt").exists()


@pytest.mark.parametrize("lid", sorted(LAYERS))
def test_layer_is_a_makefile_build_for_the_functions_platform(lid: str) -> None:
    layer = LAYERS[lid]
    meta, props = layer.get("Metadata", {}), layer["Properties"]
    assert meta.get("BuildMethod") == "makefile"
    assert [meta.get("BuildArchitecture")] == GLOBAL_FUNCTION["Architectures"]
    assert props["CompatibleArchitectures"] == GLOBAL_FUNCTION["Architectures"]
    assert GLOBAL_FUNCTION["Runtime"] in props["CompatibleRuntimes"]
    makefile = ROOT / str(meta.get("ContextPath") or props["ContentUri"]) / "Makefile"
    assert re.search(rf"^build-{lid}:", makefile.read_text(encoding="utf-8"), re.MULTILINE)


def test_dicom_layer_cross_installs_for_lambda() -> None:
    makefile = (ROOT / "layers" / "dicom" / "Makefile").read_text(encoding="utf-8")
    for flag in (
        "--platform manylinux_2_28_aarch64",
        "--platform manylinux_2_34_aarch64",
        "--platform manylinux2014_aarch64",
        "--implementation cp",
        "--python-version 3.13",
        "--only-binary=:all:",
        '--target "$(SITE)"',
    ):
        assert flag in makefile, flag


def test_samconfig_has_the_deploy_defaults() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    assert str(config["version"]) == "0.1"
    default = config["default"]
    assert default["global"]["parameters"]["stack_name"] == "dicomweb-pacs"
    deploy = default["deploy"]["parameters"]
    assert "CAPABILITY_IAM" in deploy["capabilities"]
    assert deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is True
    assert "region" not in deploy, "the region is chosen with sam deploy --guided"
    assert default["validate"]["parameters"]["lint"] is True


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _walk_names(path: Path) -> Iterator[str]:
    return (p.name for p in path.rglob("*"))


@pytest.mark.sam_build
def test_sam_build_works_offline_of_docker_and_fits_lambda(
    tmp_path: Path, tool_env: dict[str, str]
) -> None:
    build = tmp_path / "build"
    proc = _run(
        [
            _tool("sam"),
            *("build", "--template-file", str(TEMPLATE), "--build-dir", str(build)),
            *("--cache-dir", str(tmp_path / "cache"), "--no-cached"),
        ],
        tool_env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sizes = {p.name: _tree_size(p) for p in build.iterdir() if p.is_dir()}
    for lid in FUNCTIONS:
        layers = _refs(_prop(lid, "Layers") or [])
        total = sizes[lid] + sum(sizes[layer] for layer in layers)
        assert total < LAMBDA_UNZIPPED_LIMIT, f"{lid} with {sorted(layers)}: {total} bytes"
        module = str(_prop(lid, "Handler")).split(".")[0]
        assert (build / lid / f"{module}.py").is_file()
    site = build / "DicomLayer" / "python"
    pixel_site = build / "PixelLayer" / "python"
    assert (site / "pydicom" / "__init__.py").is_file()
    for package in ("numpy", "PIL", "imagecodecs"):
        assert (pixel_site / package / "__init__.py").is_file(), package
        assert not (site / package).exists(), f"{package} belongs in the PixelLayer only"
    assert (site / "aws_lambda_powertools" / "__init__.py").is_file()
    assert not (site / "boto3").exists()
    assert not (site / "botocore").exists()
    assert (build / "AppLayer" / "python" / "shared" / "__init__.py").is_file()
    assert "__pycache__" not in set(_walk_names(build))
    assert _copyleft(site) == {}, "the deployed layer must be permissively licensed"
    assert _copyleft(pixel_site) == {}, "the deployed layer must be permissively licensed"


def _copyleft(site: Path) -> dict[str, list[str]]:
    """Distributions in a built layer whose metadata names a GPL-family licence."""
    found = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        lines = metadata.read_text(encoding="utf-8", errors="replace").splitlines()
        licences = [
            line
            for line in lines
            if line.startswith(("License:", "License-Expression:", "Classifier: License ::"))
        ]
        if any("GPL" in line for line in licences):
            found[metadata.parent.name] = licences
    return found


# --------------------------------------------------------------------------- conformance


def _shape(path: str) -> str:
    """A route path with its parameters blanked, query string dropped: /a/{}/b."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])


@pytest.mark.parametrize(
    ("fn", "event_name", "method", "path"), ROUTES, ids=[f"{r[0]}.{r[1]}" for r in ROUTES]
)
def test_every_route_is_in_the_conformance_statement(
    fn: str, event_name: str, method: str, path: str
) -> None:
    if method == "OPTIONS":
        return  # preflights are described once, in the Authorization section
    text = (ROOT / "docs" / "conformance-statement.md").read_text(encoding="utf-8")
    documented = {
        _shape(m) for m in re.findall(r"`(?:GET |POST |DELETE )?(/o3-dpacs-wado/[^`\s]*)", text)
    }
    assert _shape(path) in documented, f"{method} {path} ({fn}) is not in the conformance statement"


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, e in _load_events().items()
        if e.get("httpMethod") == "POST" and "/uploads" in e.get("resource", "")
    ),
)
def test_upload_events_carry_a_base64_json_body(name: str) -> None:
    event = _load_events()[name]
    assert event["isBase64Encoded"] is True
    assert event["headers"]["Content-Type"] == "application/json"
    assert isinstance(json.loads(base64.b64decode(event["body"])), dict)


def test_ingest_function_receives_object_created_events_of_incoming_and_a_sweep() -> None:
    ingest = load(TEMPLATE).functions["IngestFunction"]
    assert ingest.object_created == ("incoming/",)
    assert len(ingest.schedules) == 1
    assert ingest.timeout > 29  # not behind API Gateway: room for a 5 GB object
    events = _load_events()
    assert events["ingest-object-created.json"]["detail"]["object"]["key"].startswith("incoming/")
    assert events["ingest-sweep.json"]["detail-type"] == "Scheduled Event"


def test_monitoring_is_off_by_default_and_its_dashboard_reads_our_metrics() -> None:
    assert TPL["Parameters"]["Monitoring"]["Default"] == "off"
    monitored = {
        lid: r for lid, r in TPL["Resources"].items() if r.get("Condition") == "MonitoringOn"
    }
    assert {r["Type"] for r in monitored.values()} == {
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
    }
    assert {"Api5xxRateAlarm", "ThrottlesAlarm", "AuthorizerErrorsAlarm"} <= set(monitored)
    body = monitored["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    ours = {m[1] for w in widgets for m in w["properties"]["metrics"] if m[0] == "DICOMweb"}
    from shared import metrics

    assert ours <= {"Requests", "Latency", "BytesOut", "Failures", *metrics.COUNTS}
    throttles = monitored["ThrottlesAlarm"]["Properties"]["Metrics"]
    watched = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in throttles[1:]}
    assert watched == set(FUNCTIONS)
