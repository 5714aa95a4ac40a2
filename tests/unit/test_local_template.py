"""The local stack reads routes, authorizer, gateway responses and resources from template.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from local import template
from local.api_gateway.authorizer import policy_allows
from local.api_gateway.proxy import is_binary
from local.api_gateway.router import Router

STOW = "/o3-dpacs-wado/stowRsListener/{CALLING_AET}/studies"


@pytest.fixture(scope="module")
def stack() -> template.StackTemplate:
    return template.load()


def test_short_tags_become_intrinsic_functions(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "A: !Ref X\nB: !GetAtt Fn.Arn\nC: !Sub '${X}-y'\nD: !If [Cond, 1, 2]\n"
        "E: !Join [',', [a, b]]\nF: 2010-09-09\n",
        encoding="utf-8",
    )
    assert template.load_yaml(path) == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Fn", "Arn"]},
        "C": {"Fn::Sub": "${X}-y"},
        "D": {"Fn::If": ["Cond", 1, 2]},
        "E": {"Fn::Join": [",", ["a", "b"]]},
        "F": "2010-09-09",
    }


def test_parameters_have_defaults_and_accept_overrides() -> None:
    assert template.load().parameters["AuthorizerCacheTtl"] == "300"
    overridden = template.load(parameter_overrides={"AuthorizerCacheTtl": "0", "StageName": "x"})
    assert overridden.parameters["AuthorizerCacheTtl"] == "0"
    assert overridden.api is not None
    assert overridden.api.authorizers["ApiKeyAuthorizer"].reauthorize_every == 0
    assert overridden.api.stage_name == "x"


def test_unknown_parameter_override_is_rejected() -> None:
    with pytest.raises(template.TemplateError):
        template.load(parameter_overrides={"NoSuchParameter": "1"})


def test_stow_routes_come_from_the_function_events(stack: template.StackTemplate) -> None:
    routes = {(r.method, r.path): r for r in stack.routes}
    assert routes[("POST", STOW)].function == "StowFunction"
    assert routes[("POST", STOW)].authorizer == "ApiKeyAuthorizer"
    assert routes[("POST", STOW + "/{STUDY_UID}")].authorizer == "ApiKeyAuthorizer"
    assert routes[("OPTIONS", STOW)].authorizer is None
    assert routes[("OPTIONS", STOW + "/{STUDY_UID}")].authorizer is None


def test_every_function_has_code_and_handler(stack: template.StackTemplate) -> None:
    for function in stack.functions.values():
        assert function.code_uri.is_dir()
        assert function.handler == "app.lambda_handler"


def test_authorizer_is_the_token_authorizer_function(stack: template.StackTemplate) -> None:
    assert stack.api is not None
    authorizer = stack.api.authorizers[stack.api.default_authorizer or ""]
    assert authorizer.function == "AuthorizerFunction"
    assert authorizer.payload_type == "TOKEN"
    assert authorizer.identity_header == "Authorization"
    assert authorizer.reauthorize_every == 300
    assert stack.api.add_default_authorizer_to_cors_preflight is False


def test_binary_media_types_are_unescaped(stack: template.StackTemplate) -> None:
    assert stack.api is not None
    assert stack.api.binary_media_types == ("*/*",)


def test_gateway_responses_have_status_headers_and_templates(
    stack: template.StackTemplate,
) -> None:
    assert stack.api is not None
    unauthorized = stack.api.gateway_responses["UNAUTHORIZED"]
    assert unauthorized.status == 401
    assert unauthorized.headers["Access-Control-Allow-Origin"] == "*"
    assert unauthorized.headers["WWW-Authenticate"] == "ApiKey"
    assert "application/json" in unauthorized.templates
    assert stack.api.gateway_responses["MISSING_AUTHENTICATION_TOKEN"].status == 404
    assert stack.api.gateway_responses["REQUEST_TOO_LARGE"].status == 413
    assert stack.api.gateway_responses["DEFAULT_5XX"].status is None


def test_environment_resolves_refs_to_local_names(stack: template.StackTemplate) -> None:
    authorizer = stack.functions["AuthorizerFunction"].environment
    assert authorizer["API_KEYS_SECRET_ID"] == stack.secrets["ApiKeysSecret"].name
    assert authorizer["KEY_CACHE_TTL"] == "60"
    stow = stack.functions["StowFunction"].environment
    assert stow["DICOM_BUCKET"] == stack.buckets["DicomBucket"].name
    assert stow["INDEX_TABLE"] == stack.tables["IndexTable"].name
    assert stow["API_BASE_PATH"] == "/o3-dpacs-wado"
    assert stack.environment()["API_KEYS_SECRET_ID"] == stack.secrets["ApiKeysSecret"].name


def test_table_definition_is_ready_for_create_table(stack: template.StackTemplate) -> None:
    args = stack.tables["IndexTable"].create_args
    assert args["BillingMode"] == "PAY_PER_REQUEST"
    assert args["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    indexes = {gsi["IndexName"] for gsi in args["GlobalSecondaryIndexes"]}
    assert {"ByPatientId", "ByAccession", "ByList", "BySeriesUid"} <= indexes
    defined = {a["AttributeName"] for a in args["AttributeDefinitions"]}
    for gsi in args["GlobalSecondaryIndexes"]:
        assert {k["AttributeName"] for k in gsi["KeySchema"]} <= defined
    assert "PointInTimeRecoverySpecification" not in args


def test_bucket_and_secret(stack: template.StackTemplate) -> None:
    assert stack.buckets["DicomBucket"].versioning is True
    assert stack.secrets["ApiKeysSecret"].secret_string == '{"keys": []}'
    assert stack.outputs["ApiKeysSecretArn"] == stack.secrets["ApiKeysSecret"].name


def test_router_prefers_literal_segments_and_extracts_parameters(
    stack: template.StackTemplate,
) -> None:
    router = Router(stack.routes)
    found = router.match("POST", "/o3-dpacs-wado/stowRsListener/AE1/studies/1.2.3")
    assert found is not None
    route, params = found
    assert route.path == STOW + "/{STUDY_UID}"
    assert params == {"CALLING_AET": "AE1", "STUDY_UID": "1.2.3"}
    assert router.match("GET", "/o3-dpacs-wado/stowRsListener/AE1/studies") is None
    assert router.match("POST", "/o3-dpacs-wado/nothing") is None


def test_binary_media_type_matching() -> None:
    assert is_binary("application/dicom", ("*/*",))
    assert is_binary("multipart/related; type=application/dicom", ("multipart/*",))
    assert not is_binary("application/json", ("image/*", "application/dicom"))
    assert not is_binary(None, ("*/*",))


def test_policy_evaluation_needs_an_allow_and_honours_deny() -> None:
    arn = "arn:aws:execute-api:us-east-1:123456789012:api/v1/POST/o3-dpacs-wado/x"
    allow = {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "arn:*/v1/*/*"}
    deny = {"Effect": "Deny", "Action": "execute-api:*", "Resource": [arn]}
    assert policy_allows({"Statement": [allow]}, arn)
    assert not policy_allows({"Statement": [allow, deny]}, arn)
    assert not policy_allows({"Statement": []}, arn)
    other_stage = {**allow, "Resource": "arn:*/v2/*/*"}
    assert not policy_allows({"Statement": [other_stage]}, arn)


_KEYED = """
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      ApiKeySourceType: AUTHORIZER
      Auth:
        ApiKeyRequired: true
        {preflight}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Get: {{Type: Api, Properties: {{RestApiId: !Ref Api, Path: /a, Method: get}}}}
        Open:
          Type: Api
          Properties: {{RestApiId: !Ref Api, Path: /b, Method: get, Auth: {{ApiKeyRequired: false}}}}
        Preflight: {{Type: Api, Properties: {{RestApiId: !Ref Api, Path: /a, Method: options}}}}
  Plan:
    Type: AWS::ApiGateway::UsagePlan
    Properties:
      ApiStages: [{{ApiId: !Ref Api, Stage: !Ref Api.Stage}}]
      Quota: {{Limit: 10, Period: {period}}}
"""


@pytest.mark.parametrize("to_preflight", [True, False])
def test_api_key_required_is_applied_as_sam_applies_it(tmp_path: Path, to_preflight: bool) -> None:
    path = tmp_path / "t.yaml"
    preflight = "" if to_preflight else "AddApiKeyRequiredToCorsPreflight: false"
    path.write_text(_KEYED.format(preflight=preflight, period="DAY"), encoding="utf-8")
    loaded = template.load(path)
    assert loaded.api is not None and loaded.api.api_key_source == "AUTHORIZER"
    required = {(r.method, r.path): r.api_key_required for r in loaded.routes}
    assert required == {("GET", "/a"): True, ("GET", "/b"): False, ("OPTIONS", "/a"): to_preflight}
    assert loaded.usage_plans["local-plan"] == template.UsagePlan("local-plan", quota=10)


def test_quota_periods_other_than_a_day_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(_KEYED.format(preflight="", period="WEEK"), encoding="utf-8")
    with pytest.raises(template.TemplateError, match="daily"):
        template.load(path)
