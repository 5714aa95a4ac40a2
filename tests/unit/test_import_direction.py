"""Imports point one way (docs/architecture.md): functions -> the edge and the composition
root -> services -> the domain and the ports; adapters -> the ports and the domain.

Every module of ``shared/`` and ``functions/`` is parsed (imports inside functions and
under ``TYPE_CHECKING`` included) and its imports of the project's own packages checked:

- an adapter imports no service, edge, composition root or local stack, and no adapter
  of another backend (``sqlite_*``, ``dynamo_*``, the embedded object store's
  ``file_blobs``/``local_urls``/``local_secrets`` are each one backend);
- a service imports no adapter, edge or composition root;
- the domain (``dicom``, ``dicomweb``, ``index``) imports no service, adapter, edge or
  composition root, and ``dicom`` nothing of ``dicomweb``;
- a function imports no adapter (it builds through ``shared.bootstrap``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTER = ("shared.http", "shared.bootstrap", "functions", "local", "tools")
#: Adapters of one backend, by the start of their module name.
BACKENDS = (("sqlite_",), ("dynamo_",), ("file_blobs", "local_urls", "local_secrets"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Each module an import names (``from a import b``: ``a.b``, which may be a name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def _backend(adapter: str) -> tuple[str, ...] | None:
    short = adapter.split(".")[2] if adapter.count(".") >= 2 else ""
    return next((b for b in BACKENDS if short.startswith(b)), None)


_DOMAIN_MAY_NOT = (*OUTER, "shared.adapters", "shared.services")
#: Per layer: the packages it may not import, and why.
FORBIDDEN: dict[str, tuple[tuple[str, ...], str]] = {
    "adapters": ((*OUTER, "shared.services"), "an adapter takes ports and the domain only"),
    "services": ((*OUTER, "shared.adapters"), "a service speaks to ports, not adapters"),
    "dicom": ((*_DOMAIN_MAY_NOT, "shared.dicomweb"), "dicom/ depends on nothing outside it"),
    "dicomweb": (_DOMAIN_MAY_NOT, "the domain depends on nothing outside it"),
    "index": (_DOMAIN_MAY_NOT, "the domain depends on nothing outside it"),
    "functions": (("shared.adapters",), "a function builds through shared.bootstrap"),
}


def _breach(layer: str, importer: str, name: str) -> str | None:
    """Why ``importer`` (of ``layer``) may not import ``name``; None when it may."""
    forbidden, reason = FORBIDDEN.get(layer, ((), ""))
    if any(_within(name, f) for f in forbidden):
        return reason
    if layer == "adapters" and _within(name, "shared.adapters"):
        theirs = _backend(name)
        if theirs is not None and theirs != _backend(importer):
            return "another backend's adapter"
    return None


def problems(importer: str, source: str) -> list[str]:
    """What the module ``importer`` breaks of the rules above."""
    parts = importer.split(".")
    layer = parts[1] if parts[0] == "shared" and len(parts) > 1 else parts[0]
    found = []
    for line, name in imported(ast.parse(source)):
        reason = _breach(layer, importer, name)
        if reason is not None:
            found.append(f"{importer}:{line} imports {name}: {reason}")
    return found


def sources() -> list[Path]:
    found = [*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    return sorted(p for p in found if "_generated" not in p.parts)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    assert problems(module_name(path), path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("shared.adapters.sqlite_index", "from shared.adapters import dynamo_keys"),
        ("shared.adapters.sqlite_index", "from shared.adapters.dynamo_keys import STUDY_SK"),
        ("shared.adapters.dynamo_index", "from shared.services import store"),
        ("shared.adapters.s3_blobs", "import shared.http"),
        ("shared.services.search", "from shared.adapters.sqlite_catalog import SqliteCatalog"),
        ("shared.services.store", "from shared import bootstrap"),
        ("shared.index.writes", "from shared.services.store import commit"),
        ("shared.dicom.validate", "from shared.dicomweb import paths"),
        ("functions.qido.app", "from shared.adapters import sqlite_catalog"),
    ],
)
def test_the_check_finds_each_kind_of_breach(importer: str, source: str) -> None:
    assert len(problems(importer, source)) == 1


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("shared.adapters.sqlite_index", "from shared.adapters.sqlite_schema import prepare"),
        ("shared.adapters.dynamo_search", "from shared.adapters import dynamo_plan"),
        ("shared.adapters.file_blobs", "from shared.adapters.local_urls import UrlSigner"),
        ("shared.adapters.dynamo_index", "from shared.index import writes"),
        ("shared.services.search", "from shared.ports import Catalog"),
        ("functions.qido.app", "from shared import bootstrap, http"),
    ],
)
def test_what_the_layers_may_import_passes(importer: str, source: str) -> None:
    assert problems(importer, source) == []
