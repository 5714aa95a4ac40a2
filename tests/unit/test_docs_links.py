"""The front door and the docs hold together: README.md stays short and shows the two
commands, and every relative link in README.md and docs/ names a file that exists and, with
a `#fragment`, a heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_NOT_IN_ANCHOR = re.compile(r"[^\w\- ]")


def _prose_lines(path: Path) -> list[str]:
    """The lines of a markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _anchors(path: Path) -> set[str]:
    """The `#fragment`s GitHub gives the headings of a markdown file."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose_lines(path):
        heading = _HEADING.match(line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(2)).replace("`", "")
        slug = _NOT_IN_ANCHOR.sub("", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    links = []
    for line in _prose_lines(path):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                links.append(target)
    return links


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_heading_that_exist(document: Path) -> None:
    # GIVEN a markdown document of the repository
    broken = []
    # WHEN each relative link is resolved from the document's folder
    for target in _relative_links(document):
        file_part, _, fragment = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        # THEN the file exists, and a fragment names one of its headings
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_stays_under_200_lines_and_shows_the_two_commands() -> None:
    # GIVEN the front door
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # THEN a newcomer reads it in a few screens, and finds how to run and test the archive
    assert len(text.splitlines()) < 200
    assert "make serve" in text
    assert "make test" in text


def test_the_docs_index_lists_every_document() -> None:
    # GIVEN docs/README.md, the index of the docs
    index = ROOT / "docs" / "README.md"
    listed = {(index.parent / link.partition("#")[0]).resolve() for link in _relative_links(index)}
    # THEN every document under docs/ is one of its links
    missing = [
        str(doc.relative_to(ROOT))
        for doc in DOCUMENTS
        if doc.is_relative_to(ROOT / "docs") and doc != index and doc.resolve() not in listed
    ]
    assert not missing, f"not in docs/README.md: {missing}"
