"""Generate shared/_generated/dictionary.py: tag and VR of every attribute the index knows.

Run: ``python -m tools.generate_dictionary`` (``--check`` fails when the file is stale).
The source is pydicom's copy of the PS3.6 data dictionary; the QIDO function then needs no
pydicom import (cold start).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword

from shared.dicom.levels import ALL_KEYWORDS

OUT = Path(__file__).resolve().parent.parent / "shared" / "_generated" / "dictionary.py"


def render() -> str:
    lines = [
        '"""Tag and VR of the attributes the index knows. GENERATED: do not edit.',
        "",
        "Generator: tools/generate_dictionary.py; source: pydicom "
        f"{pydicom.__version__.split('.')[0]}.x data dictionary (DICOM PS3.6).",
        '"""',
        "",
        "ATTRIBUTES: dict[str, tuple[str, str]] = {",
    ]
    for keyword in sorted(ALL_KEYWORDS):
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise SystemExit(f"unknown keyword {keyword}")
        lines.append(f'    "{keyword}": ("{tag:08X}", "{dictionary_VR(tag)}"),')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        return 0 if OUT.read_text() == text else 1
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
