"""Generate shared/_generated/routes.py: the routes each API key scope opens, from template.yaml.

Run: ``python -m tools.make_routes`` (``--check`` fails when the file is stale; tests/template
runs the check). Which routes a function serves comes from its ``Api`` events in
template.yaml (``local.template``); which scopes it requires is said once, here
(:data:`FUNCTION_SCOPES`, and :data:`EVENT_SCOPES` for a route open to more). A function
with ``Api`` events behind the authorizer but no entry here stops the generator.

The authorizer (functions/authorizer/app.py) puts a key's patterns into its policy, which
API Gateway caches per key and matches against every request's method ARN (``*`` matches
any text, ``/`` included), so the patterns are kept few. Per scope, method and top-level
resource under the API's base path (``stowRsListener``, ``qido``, ``rs``, ``wado``), the
longest common prefix of the scope's routes, cut before the first path parameter, opens
``prefix/*`` (and ``prefix`` itself when it is a route), provided no route of that method
outside the scope lies under it; otherwise each route opens alone, its parameters as ``*``.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from local.template import DEFAULT_TEMPLATE, Route, StackTemplate, load
from shared import keys

OUT = Path(__file__).resolve().parent.parent / "shared" / "_generated" / "routes.py"

_READING = (keys.READ, keys.READ_DEIDENTIFIED)
#: The scopes each API function requires (any one of them); the function checks again.
#: ``read-deidentified`` opens the read routes: their functions serve such a key the
#: de-identified view (``shared.services.deidentified``).
FUNCTION_SCOPES: dict[str, tuple[str, ...]] = {
    "StowFunction": (keys.STORE,),
    "UploadsFunction": (keys.STORE,),
    "QidoFunction": _READING,
    "WadoRsFunction": _READING,
    "WadoUriFunction": _READING,
    "LifecycleFunction": (keys.ADMIN,),
}
#: Routes (function, event name) that open to more scopes than their function's: ``admin``
#: lists the upload results, where it sees the objects dropped under incoming/ by other tools.
EVENT_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("UploadsFunction", "ListUploads"): (keys.ADMIN,),
}

#: A path as segments: a literal, ``*`` for ``{param}``, ``**`` for greedy ``{param+}``.
Shape = tuple[str, ...]
_PARAMETER = re.compile(r"\{[^}]+\}")


def _shape(path: str) -> Shape:
    return tuple(
        ("**" if segment.endswith("+}") else "*") if _PARAMETER.fullmatch(segment) else segment
        for segment in path.strip("/").split("/")
    )


def _scopes(route: Route) -> tuple[str, ...]:
    if route.function not in FUNCTION_SCOPES:
        raise SystemExit(
            f"{route.function} serves {route.method} {route.path} behind the authorizer: "
            "say which scopes it requires in tools/make_routes.py FUNCTION_SCOPES"
        )
    return FUNCTION_SCOPES[route.function] + EVENT_SCOPES.get(
        (route.function, route.event_name), ()
    )


def _base(shapes: Sequence[Shape]) -> int:
    """How many leading literal segments every route shares (the API's base path)."""
    length = 0
    while all(len(s) > length and s[length] == shapes[0][length] for s in shapes) and (
        shapes[0][length] not in ("*", "**")
    ):
        length += 1
    return length


def _prefix(shapes: Sequence[Shape]) -> Shape:
    """The longest common prefix of ``shapes``, cut before the first parameter."""
    prefix: list[str] = []
    for segments in zip(*shapes, strict=False):
        if len(set(segments)) > 1 or segments[0] in ("*", "**"):
            break
        prefix.append(segments[0])
    return tuple(prefix)


def _under(shape: Shape, prefix: Shape) -> bool:
    """Whether a request to a route of ``shape`` may have a path starting with ``prefix``."""
    for index, literal in enumerate(prefix):
        if index >= len(shape):
            return False
        if shape[index] == "**":
            return True
        if shape[index] not in (literal, "*"):
            return False
    return True


def _pattern(shape: Shape) -> str:
    return "/".join("*" if s in ("*", "**") else s for s in shape)


def _patterns(mine: Sequence[Shape], others: Sequence[Shape]) -> list[str]:
    """The patterns opening ``mine`` (one method, one top-level resource) and no route of
    ``others`` (the same method, outside the scope)."""
    prefix = _prefix(mine)
    if not any(_under(shape, prefix) for shape in others):
        return ([_pattern(prefix)] if prefix in mine else []) + [_pattern((*prefix, "*"))]
    return [_pattern(shape) for shape in mine]


def scope_routes(template: StackTemplate) -> dict[str, tuple[tuple[str, str], ...]]:
    """(method, path pattern) of what each scope opens, in keys.SCOPES order; patterns by
    top-level resource, then method, in template order."""
    routes = [route for route in template.routes if route.authorizer is not None]
    shapes = {(route.method, route.path): _shape(route.path) for route in routes}
    base = _base(list(shapes.values()))
    table: dict[str, tuple[tuple[str, str], ...]] = {}
    for scope in keys.SCOPES:
        groups: dict[str, dict[str, list[Shape]]] = {}
        for route in routes:
            if scope in _scopes(route):
                shape = shapes[(route.method, route.path)]
                top = shape[base] if len(shape) > base else ""
                groups.setdefault(top, {}).setdefault(route.method, []).append(shape)
        found: list[tuple[str, str]] = []
        for by_method in groups.values():
            for method, mine in by_method.items():
                others = [
                    shapes[(r.method, r.path)]
                    for r in routes
                    if r.method == method and scope not in _scopes(r)
                ]
                found += [(method, pattern) for pattern in _patterns(mine, others)]
        table[scope] = tuple(dict.fromkeys(found))
    return table


def scope_denies(
    template: StackTemplate, table: dict[str, tuple[tuple[str, str], ...]]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Routes without parameters that a scope's patterns open but that are not the scope's
    (``POST rs/studies/$bulkUpdate``, an ``admin`` route, under ``store``'s ``POST
    rs/studies/*``): the authorizer denies them to a key that has no scope owning them."""
    routes = [route for route in template.routes if route.authorizer is not None]
    denies: dict[str, tuple[tuple[str, str], ...]] = {}
    for scope, opened in table.items():
        found: list[tuple[str, str]] = []
        for route in routes:
            path = route.path.strip("/")
            if scope in _scopes(route) or "{" in path:
                continue
            if any(m == route.method and fnmatch.fnmatchcase(path, p) for m, p in opened):
                found.append((route.method, path))
        denies[scope] = tuple(dict.fromkeys(found))
    return denies


def render(template: StackTemplate) -> str:
    """The text of shared/_generated/routes.py."""
    lines = [
        '"""The routes each API key scope opens: (method, path pattern under the stage).',
        "",
        "GENERATED: do not edit. Generator: tools/make_routes.py; source: the Api events of",
        "template.yaml and the scopes each function requires (tools/make_routes.py).",
        '"""',
        "",
        "SCOPE_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {",
    ]
    table = scope_routes(template)
    for scope, routes in table.items():
        lines.append(f'    "{scope}": (')
        lines += [f'        ("{method}", "{pattern}"),' for method, pattern in routes]
        lines.append("    ),")
    lines.append("}")
    lines += [
        "",
        "#: Routes a scope's patterns open that are another scope's: denied unless the key has",
        "#: a scope that owns them.",
        "SCOPE_DENIES: dict[str, tuple[tuple[str, str], ...]] = {",
    ]
    for scope, routes in scope_denies(template, table).items():
        if not routes:
            lines.append(f'    "{scope}": (),')
            continue
        lines.append(f'    "{scope}": (')
        lines += [f'        ("{method}", "{path}"),' for method, path in routes]
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the table, or with --check report whether it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    args = parser.parse_args(argv)
    text = render(load(args.template))
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.name} is out of date (run python -m tools.make_routes)")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
