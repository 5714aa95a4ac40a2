"""Routing: which of the template's routes a method and path reach, as API Gateway picks.

Path templates hold literal segments, ``{param}`` (one segment) and greedy ``{param+}``
(the rest of the path); ``ANY`` matches every method. Literal segments win over parameters,
and greedy routes come last.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from local.template import Route


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    literal_segments: int
    greedy: bool


def _compile(route: Route) -> _CompiledRoute:
    parts = []
    literals = 0
    greedy = False
    for segment in route.path.strip("/").split("/"):
        match = re.fullmatch(r"\{([A-Za-z0-9_.-]+)(\+?)\}", segment)
        if match and match.group(2):
            parts.append(f"(?P<{_group(match.group(1))}>.+)")
            greedy = True
        elif match:
            parts.append(f"(?P<{_group(match.group(1))}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    pattern = re.compile("/" + "/".join(parts) if parts != [""] else "/")
    return _CompiledRoute(route, pattern, literals, greedy)


def _group(name: str) -> str:
    """Return a regex group name for a path parameter (names may hold ``-`` or ``.``)."""
    return "p_" + "".join(c if c.isalnum() or c == "_" else f"_{ord(c)}_" for c in name)


def _param_name(group: str) -> str:
    return re.sub(r"_(\d+)_", lambda m: chr(int(m.group(1))), group[2:])


class Router:
    """Match request paths and methods to the template's routes, most specific first."""

    def __init__(self, routes: list[Route]) -> None:
        compiled = [_compile(route) for route in routes]
        self._routes = sorted(compiled, key=lambda c: (c.greedy, -c.literal_segments))
        # The routes are tried in turn: the answers for the paths asked lately are kept.
        self._recent = functools.lru_cache(maxsize=1024)(self._match)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """Return the route and raw path parameters, or None (API Gateway's 403/404)."""
        found = self._recent(method, path)
        return None if found is None else (found[0], dict(found[1]))

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        if len(path) > 1:
            path = path.rstrip("/")
        for compiled in self._routes:
            found = compiled.pattern.fullmatch(path)
            if found and compiled.route.method in (method, "ANY"):
                params = {_param_name(k): v for k, v in found.groupdict().items()}
                return compiled.route, params
        return None
