"""bench/ and tests/ share helpers through ``tests.support`` only, and no module reaches for
another's private names.

Every ``bench/*.py`` and ``tests/**/*.py`` is parsed (imports inside functions included):

- ``bench`` imports nothing of ``tests`` but ``tests.support``;
- only a benchmark's own test (``tests/unit/test_bench_*.py``) imports ``bench``;
- no module imports a leading-underscore name of another module of ``bench`` or ``tests``,
  or reads one as an attribute of such a module it imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = "tests.support"


@dataclass(frozen=True)
class Use:
    """A name a module takes from another: ``module`` itself, or its attribute ``name``."""

    line: int
    module: str
    name: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}" if self.name else self.module


def module_name(relative: Path) -> str:
    """``tests/support/fuzz.py`` -> ``tests.support.fuzz``; a package by its folder."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> list[Path]:
    return sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "tests").rglob("*.py")])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _chain(node: ast.Attribute) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]`` when it starts from a plain name; else ``[]``."""
    names = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        names.append(value.attr)
        value = value.value
    return [value.id, *reversed(names)] if isinstance(value, ast.Name) else []


def uses(tree: ast.Module, importer: str, *, is_package: bool = False) -> Iterator[Use]:
    """Every import in ``tree`` (at any depth), and every attribute read from a name an
    import bound."""
    bound: dict[str, str] = {}  # local name -> the module (or module attribute) it holds
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Use(node.lineno, alias.name)
                top = alias.name.split(".")[0]
                bound[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            for alias in node.names:
                yield Use(node.lineno, module, alias.name)
                bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in bound:
                dotted = [bound[chain[0]], *chain[1:]]
                yield Use(node.lineno, ".".join(dotted[:-1]), dotted[-1])


def problems(source: str, relative: Path) -> list[str]:
    """What the module at ``relative`` (from the project root) breaks of the rules above."""
    importer = module_name(relative)
    side = importer.split(".")[0]
    benchmark_test = relative.name.startswith("test_bench_")
    tree = ast.parse(source, str(relative))
    found = []
    for use in uses(tree, importer, is_package=relative.name == "__init__.py"):
        taken = use.dotted
        other = taken.split(".")[0]
        if other not in {"bench", "tests"}:
            continue
        where = f"{relative}:{use.line}"
        in_support = taken == SUPPORT or taken.startswith(f"{SUPPORT}.")
        if side == "bench" and other == "tests" and not in_support:
            found.append(f"{where} imports {taken}: bench takes helpers from {SUPPORT}")
        if side == "tests" and other == "bench" and not benchmark_test:
            found.append(f"{where} imports {taken}: only a benchmark's test_bench_*.py")
        if any(_is_private(part) for part in taken.split(".")[1:]):
            found.append(f"{where} uses {taken}: private to its module")
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_bench_and_tests_share_only_public_support(path: Path) -> None:
    assert problems(path.read_text(), path.relative_to(ROOT)) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("bench/b.py", "from tests.unit.test_y import run", "imports tests.unit.test_y.run"),
        ("bench/b.py", "def f():\n    import tests.served\n", "imports tests.served"),
        ("bench/b.py", "from tests import dicom_files", "imports tests.dicom_files"),
        ("bench/b.py", "from tests.support.fuzz import _bomb", "tests.support.fuzz._bomb"),
        ("bench/b.py", "from bench import bench_y\nbench_y._load()", "bench.bench_y._load"),
        ("tests/unit/test_y.py", "from bench.bench_x import run", "only a benchmark's"),
        ("tests/unit/test_y.py", "import tests.support.fuzz as f\nf._x", "fuzz._x: private"),
        ("tests/unit/test_y.py", "from ..support import fuzz\nfuzz._x", "fuzz._x: private"),
    ],
)
def test_the_check_finds_each_kind_of_breach(module: str, source: str, expected: str) -> None:
    """Lazy imports, relative imports and attribute reads included."""
    found = problems(source, Path(module))
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("bench/b.py", "from tests.support import dicom_files\ndicom_files.data('x')"),
        ("bench/b.py", "from tests.support.fuzz import cases\nfrom bench import b2"),
        ("tests/unit/test_bench_b.py", "from bench.b import run"),
        ("tests/unit/test_y.py", "from tests.support import handlers\nhandlers.__file__"),
        ("tests/unit/test_y.py", "from shared import http\nhttp._private"),
    ],
)
def test_public_names_and_other_packages_are_not_its_business(module: str, source: str) -> None:
    assert problems(source, Path(module)) == []
