"""Which calling AE titles may use which of the gateway's services (``--allow``).

``--allow AE`` lets ``AE`` use every service; ``--allow AE:find,retrieve`` limits it to the
services named after the last colon: ``store`` (C-STORE, and Storage Commitment, which
asks about what was stored), ``find`` (C-FIND) and ``retrieve`` (C-MOVE, C-GET). An AE
title may itself hold a colon (``CT:1``): the text after the last one is read as services
only when each comma-separated word is a service name. C-ECHO is open to every allowed AE.
Without any ``--allow``, every calling AE may use every service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Service = Literal["store", "find", "retrieve"]
SERVICES: tuple[Service, ...] = ("store", "find", "retrieve")


@dataclass(frozen=True)
class Entry:
    """One ``--allow`` value: an AE title and the services it may use."""

    title: str
    services: frozenset[str]


def parse(value: str) -> Entry:
    """An ``--allow`` value as an :class:`Entry` (every service when none is named)."""
    title, colon, tail = value.rpartition(":")
    if colon:
        words = [w.strip().lower() for w in tail.split(",")]
        if words and all(w in SERVICES for w in words):
            return Entry(title.strip(), frozenset(words))
    return Entry(value.strip(), frozenset(SERVICES))


@dataclass(frozen=True)
class Access:
    """The policy made of every ``--allow`` value."""

    entries: tuple[Entry, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> Access:
        """The policy of the ``--allow`` values (repeated titles: their services merged)."""
        merged: dict[str, set[str]] = {}
        for value in values:
            entry = parse(value)
            merged.setdefault(entry.title, set()).update(entry.services)
        return cls(tuple(Entry(t, frozenset(s)) for t, s in merged.items()))

    @property
    def titles(self) -> list[str]:
        """The calling AE titles accepted at association ([] = any)."""
        return [e.title for e in self.entries]

    def may(self, calling: str, service: Service) -> bool:
        """Whether ``calling`` may use ``service``."""
        if not self.entries:
            return True
        calling = calling.strip()
        return any(e.title == calling and service in e.services for e in self.entries)
