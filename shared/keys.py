"""API keys: generation, digests and constant-time checks. Standard library only.

Keys are stored as SHA-256 digests in a secret (Secrets Manager); the plain key is shown
once, when it is created. A key is 32 random bytes (256 bits), so an unsalted SHA-256 digest
is not open to guessing. Every check compares the presented key's digest with *every*
active digest using ``hmac.compare_digest`` so the time taken does not depend on which key,
or how much of it, matched.

:class:`KeyRingCache` is the authorizer's copy of the key list: re-read after its TTL, and
at once when a presented key is not in it, at most once a second per process
(:data:`REFRESH_INTERVAL`), so a key is usable a second after it is stored and a flood of
wrong keys reads the secret no more than once a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

KEY_PREFIX = "o3k_"
_SCHEMES = ("bearer", "apikey")

#: What a key may do. ``store``: STOW-RS and the upload path; ``read``: QIDO-RS and every
#: WADO resource; ``admin``: the listing of upload results, with the objects dropped under
#: incoming/ by other tools (their names may hold patient names); ``read-deidentified``: the
#: read routes, where every answer is de-identified and UIDs are the de-identified ones
#: (docs/anonymization.md). A key with ``read`` too keeps the normal view.
STORE, READ, ADMIN, READ_DEIDENTIFIED = "store", "read", "admin", "read-deidentified"
SCOPES = (STORE, READ, ADMIN, READ_DEIDENTIFIED)
#: Scopes of a key created without any named, and of keys stored before scopes existed
#: (they keep full access).
DEFAULT_SCOPES = (READ, STORE)
LEGACY_SCOPES = (ADMIN, READ, STORE)


#: Prefix of a key's usage identifier: the value of its API Gateway API key. The identifier
#: only names the key's usage plan entry (the authorizer returns it as usageIdentifierKey;
#: with the API's key source AUTHORIZER, API Gateway never reads it from a request), so
#: knowing it grants nothing. It is still never logged.
USAGE_KEY_PREFIX = "o3u_"


@dataclass(frozen=True)
class Limits:
    """A key's own usage plan: steady requests per second, burst (the token bucket's size)
    and requests per UTC day (None: no daily quota)."""

    rate: float
    burst: int
    quota: int | None = None

    def describe(self) -> str:
        """``20/s burst 40, 100000/day``."""
        quota = f", {self.quota}/day" if self.quota is not None else ""
        return f"{self.rate:g}/s burst {self.burst}{quota}"


@dataclass(frozen=True)
class KeyEntry:
    """One active key as stored: never the key itself."""

    id: str
    sha256: str
    label: str = ""
    created: str = ""
    scopes: tuple[str, ...] = LEGACY_SCOPES
    #: The value of the key's API Gateway API key ("": a key from before per-key limits,
    #: which the authorizer maps to the stack's legacy plan).
    usage_key: str = ""
    #: API Gateway's id of that API key (deployed stacks only).
    usage_key_id: str = ""
    #: The key's own limits; None: the stack's default usage plan.
    limits: Limits | None = None
    #: API Gateway's id of the key's own usage plan (deployed stacks, own limits only).
    usage_plan_id: str = ""


#: API Gateway holds a usage plan's burst and quota as 32-bit integers.
MAX_COUNT = 2**31 - 1


def checked_limits(rate: float, burst: int | None = None, quota: int | None = None) -> Limits:
    """Limits from the key tool's options; burst defaults to twice the rate (at least 1);
    a quota of 0 means none. ValueError for impossible values."""
    if not (math.isfinite(rate) and 0 < rate <= MAX_COUNT / 2):
        raise ValueError(
            f"--rate must be a positive number of requests per second, at most {MAX_COUNT // 2}"
        )
    if burst is None:
        burst = max(1, math.ceil(2 * rate))
    if not 1 <= burst <= MAX_COUNT:
        raise ValueError(f"--burst must be from 1 to {MAX_COUNT} requests")
    if quota is not None and not 0 <= quota <= MAX_COUNT:
        raise ValueError(f"--quota must be 0 (none) or a number of requests per day to {MAX_COUNT}")
    return Limits(rate=float(rate), burst=int(burst), quota=quota or None)


def new_usage_key() -> str:
    """A random usage identifier (an API Gateway API key value: 20 to 128 characters)."""
    return USAGE_KEY_PREFIX + secrets.token_hex(20)


def checked_scopes(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, known scopes; ValueError naming an unknown one."""
    for name in names:
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}; choose among {', '.join(SCOPES)}")
    if not names:
        raise ValueError("a key needs at least one scope")
    if READ_DEIDENTIFIED in names and STORE in names:
        raise ValueError(
            "read-deidentified is a read-only view: a key that may also store would receive "
            "STOW answers naming the original UIDs it sent; make two keys"
        )
    return tuple(sorted(set(names)))


def deidentified_view(scopes: tuple[str, ...]) -> bool:
    """Whether a key with these scopes sees the de-identified view: it has
    ``read-deidentified`` and not ``read`` (which keeps the normal view)."""
    return READ_DEIDENTIFIED in scopes and READ not in scopes


def digest(key: str) -> str:
    """Return the hex SHA-256 digest of a key (any string: lone surrogates are hashed as they
    come, never an error)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def generate(label: str = "", scopes: tuple[str, ...] = LEGACY_SCOPES) -> tuple[str, KeyEntry]:
    """Create a new random key; return the plain key (show it once) and its stored entry."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, entry_for(key, label, scopes)


def entry_for(key: str, label: str = "", scopes: tuple[str, ...] = LEGACY_SCOPES) -> KeyEntry:
    """Return the stored entry for a given key (used for a dev key chosen by the operator)."""
    if len(key) < 16:
        raise ValueError("an API key must be at least 16 characters long")
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return KeyEntry(
        id=secrets.token_hex(4),
        sha256=digest(key),
        label=label,
        created=created,
        scopes=checked_scopes(scopes),
    )


def token_from_header(value: str | None) -> str | None:
    """Extract the key from an Authorization header value.

    The seed sends the raw key; ``Bearer <key>`` and ``ApiKey <key>`` are accepted too
    because browser viewers can only be configured to send a scheme-prefixed token.
    """
    if not value or not isinstance(value, str):
        return None
    token = value.strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() in _SCHEMES:
        token = rest.strip()
    return token or None


class KeyRing:
    """The set of active keys, checked in constant time."""

    def __init__(self, entries: list[KeyEntry]) -> None:
        self.entries = list(entries)

    def match(self, presented: str) -> KeyEntry | None:
        """Return the entry whose key was presented, or None; examines every entry."""
        candidate = digest(presented).encode("ascii")
        found: KeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(candidate, entry.sha256.encode("ascii")):
                found = entry
        return found


#: Seconds between two re-reads of the key list for keys not found in it (per process).
REFRESH_INTERVAL = 1.0


class RefreshLimit:
    """At most one re-read of the key list per ``interval`` seconds.

    One instance (:data:`REFRESHES`) is shared by every :class:`KeyRingCache` of a process, so
    presenting many unknown keys at once costs one read of the secret a second.
    """

    def __init__(self, interval: float = REFRESH_INTERVAL) -> None:
        self.interval = interval
        self._last: float | None = None
        self._lock = threading.Lock()

    def note(self, now: float) -> None:
        """A read happened at ``now`` (monotonic seconds)."""
        with self._lock:
            self._last = now

    def take(self, now: float) -> bool:
        """Claim a re-read at ``now`` if the last one is at least ``interval`` seconds old."""
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True


REFRESHES = RefreshLimit()


class KeyRingCache:
    """The active keys, read through ``load``; read again once ``ttl`` seconds old, and, when a
    presented key is not among them, at once unless the process read them less than
    ``limit.interval`` seconds ago.

    A key stored at time T therefore matches from T + ``limit.interval`` on; a revoked key
    keeps matching until the copy holding it is ``ttl`` seconds old.
    """

    def __init__(
        self,
        load: Callable[[], list[KeyEntry]],
        ttl: float,
        limit: RefreshLimit | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._limit = limit or REFRESHES
        self._clock = clock or time.monotonic
        self._ring: KeyRing | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def match(self, presented: str) -> KeyEntry | None:
        """The entry whose key was presented, or None (see the class for when it re-reads)."""
        with self._lock:
            now = self._clock()
            if self._ring is None or now - self._read_at >= self._ttl:
                self._read(now)
            found = self._current().match(presented)
            if found is None and self._limit.take(now):
                self._read(now)
                found = self._current().match(presented)
            return found

    def _read(self, now: float) -> None:
        self._ring = KeyRing(self._load())
        self._read_at = now
        self._limit.note(now)

    def _current(self) -> KeyRing:
        if self._ring is None:
            raise RuntimeError("the key list was never read")
        return self._ring


def parse_secret(text: str) -> list[KeyEntry]:
    """Parse the secret's JSON document into key entries; malformed entries are dropped."""
    try:
        document = json.loads(text)
    except (TypeError, ValueError):
        return []
    raw = document.get("keys", []) if isinstance(document, dict) else []
    entries = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("sha256"), str) and item.get("id"):
            entries.append(
                KeyEntry(
                    id=str(item["id"]),
                    sha256=item["sha256"],
                    label=str(item.get("label", "")),
                    created=str(item.get("created", "")),
                    scopes=_stored_scopes(item.get("scopes")),
                    usage_key=str(item.get("usage_key") or ""),
                    usage_key_id=str(item.get("usage_key_id") or ""),
                    limits=_stored_limits(item.get("limits")),
                    usage_plan_id=str(item.get("usage_plan_id") or ""),
                )
            )
    return entries


def _stored_limits(value: object) -> Limits | None:
    """Limits as stored; absent or malformed: the default plan."""
    if not isinstance(value, dict):
        return None
    try:
        quota = value.get("quota")
        return checked_limits(
            float(value["rate"]), int(value["burst"]), None if quota is None else int(quota)
        )
    except (KeyError, TypeError, ValueError):
        return None


def _stored_scopes(value: object) -> tuple[str, ...]:
    """Scopes as stored: absent means a key from before scopes (full access); unknown names
    grant nothing."""
    if value is None:
        return LEGACY_SCOPES
    if not isinstance(value, list):
        return ()
    return tuple(sorted({v for v in value if isinstance(v, str) and v in SCOPES}))


def dump_secret(entries: list[KeyEntry]) -> str:
    """Serialise key entries into the secret's JSON document."""
    return json.dumps({"keys": [_stored(e) for e in entries]}, separators=(",", ":"))


def _stored(entry: KeyEntry) -> dict[str, object]:
    """An entry as JSON; the usage fields only when set (older readers ignore them)."""
    document: dict[str, object] = {**asdict(entry), "scopes": list(entry.scopes)}
    for name in ("usage_key", "usage_key_id", "limits", "usage_plan_id"):
        if not document[name]:
            del document[name]
    return document
