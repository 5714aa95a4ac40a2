"""The end-of-run report: what was stored, skipped, a duplicate or failed, and why."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.importer.sender import DUPLICATE, FAILED, SKIPPED, STORED, Outcome
from tools.importer.walk import Note


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    elapsed_s: float = 0.0
    aborted: str = ""

    def of(self, status: str) -> list[Outcome]:
        """The outcomes with this status, in the order they came."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def counts(self) -> dict[str, int]:
        """How many files ended in each status, and how many notes."""
        counted = Counter(o.status for o in self.outcomes)
        return {
            STORED: counted[STORED],
            DUPLICATE: counted[DUPLICATE],
            SKIPPED: counted[SKIPPED],
            FAILED: counted[FAILED],
            "notes": len(self.notes),
        }

    @property
    def sent_bytes(self) -> int:
        """Bytes of the files the archive now holds from this run."""
        return sum(o.size for o in self.outcomes if o.status in {STORED, DUPLICATE})

    def as_json(self) -> dict[str, Any]:
        """The whole report (paths, SOP Instance UIDs, reasons; no patient data)."""
        return {
            "counts": self.counts,
            "elapsedSeconds": round(self.elapsed_s, 3),
            "bytes": self.sent_bytes,
            "aborted": self.aborted or None,
            "stored": [o.as_json() for o in self.of(STORED)],
            "duplicates": [o.as_json() for o in self.of(DUPLICATE)],
            "skipped": [o.as_json() for o in self.of(SKIPPED)],
            "failed": [o.as_json() for o in self.of(FAILED)],
            "notes": [{"source": n.source, "note": n.note} for n in self.notes],
        }

    def write(self, path: Path) -> None:
        """Write :meth:`as_json` to ``path``."""
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")

    def summary(self, max_lines: int = 20) -> str:
        """A few lines for the terminal: counts, rate, the first failures."""
        counts = self.counts
        rate = self.sent_bytes / 1e6 / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"stored {counts[STORED]}, duplicates {counts[DUPLICATE]}, "
            f"skipped (already stored) {counts[SKIPPED]}, failed {counts[FAILED]}, "
            f"not DICOM or notes {counts['notes']}  "
            f"({self.sent_bytes / 1e6:.1f} MB in {self.elapsed_s:.1f} s, {rate:.1f} MB/s)"
        ]
        if self.aborted:
            lines.append(f"stopped: {self.aborted}")
        failed = self.of(FAILED)
        for outcome in failed[:max_lines]:
            lines.append(f"  failed: {outcome.source}: {outcome.reason}")
        if len(failed) > max_lines:
            lines.append(f"  ... and {len(failed) - max_lines} more (see --report)")
        return "\n".join(lines)
