"""The authorizer's route table (shared/_generated/routes.py) is derived from template.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.template import load
from shared import keys
from tools import make_routes

pytestmark = pytest.mark.template


def test_the_route_table_is_up_to_date() -> None:
    assert make_routes.main(["--check"]) == 0


_TEMPLATE = """
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      Auth:
        DefaultAuthorizer: Keys
        Authorizers: {{Keys: {{FunctionArn: !GetAtt AuthorizerFunction.Arn}}}}
  AuthorizerFunction:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: a/, Handler: app.handler}}
{functions}
"""
_FUNCTION = """
  {name}:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: f/
      Handler: app.handler
      Events:
{events}
"""
_EVENT = """        {event}:
          Type: Api
          Properties: {{RestApiId: !Ref Api, Path: "{path}", Method: {method}}}
"""


def _template(tmp_path: Path, functions: dict[str, list[tuple[str, str, str]]]) -> Path:
    text = _TEMPLATE.format(
        functions="".join(
            _FUNCTION.format(
                name=name,
                events="".join(
                    _EVENT.format(event=event, method=method, path=path)
                    for event, method, path in events
                ),
            )
            for name, events in functions.items()
        )
    )
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_resource_a_scope_holds_alone_opens_as_a_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(make_routes, "FUNCTION_SCOPES", {"Read": (keys.READ,)})
    path = _template(
        tmp_path,
        {"Read": [("A", "get", "/base/rs/studies"), ("B", "get", "/base/rs/studies/{S}/series")]},
    )
    table = make_routes.scope_routes(load(path))
    assert table[keys.READ] == (("GET", "base/rs/studies"), ("GET", "base/rs/studies/*"))
    assert table[keys.STORE] == ()


def test_a_resource_shared_with_another_scope_opens_route_by_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        make_routes, "FUNCTION_SCOPES", {"Up": (keys.STORE,), "List": (keys.ADMIN,)}
    )
    path = _template(
        tmp_path,
        {
            "Up": [("Status", "get", "/base/up/{AE}/uploads/{ID}")],
            "List": [("List", "get", "/base/up/{AE}/uploads")],
        },
    )
    table = make_routes.scope_routes(load(path))
    assert table[keys.ADMIN] == (("GET", "base/up/*/uploads"),)
    assert table[keys.STORE] == (("GET", "base/up/*/uploads/*"),)


def test_a_function_without_scopes_stops_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(make_routes, "FUNCTION_SCOPES", {})
    path = _template(tmp_path, {"Delete": [("Remove", "delete", "/base/rs/studies/{S}")]})
    with pytest.raises(SystemExit, match="Delete"):
        make_routes.scope_routes(load(path))
