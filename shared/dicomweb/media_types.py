"""Media-type parsing (RFC 9110 / RFC 2046 syntax, as PS3.18 chapter 8 uses it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: lower-cased ``type/subtype`` and its parameters."""

    essence: str
    params: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        """Return a parameter value (names are case-insensitive), unquoted."""
        return self.params.get(name.lower())


def parse(value: str | None) -> MediaType:
    """Parse one media type; quoted and unquoted parameter values are equivalent.

    ``type=application/dicom`` (unquoted, although ``/`` is a tspecial) is accepted as
    clients commonly send it.
    """
    if not value or not value.strip():
        return MediaType("")
    message = Message()
    message["content-type"] = value
    essence = value.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for name, param_value in message.get_params(failobj=[])[1:]:
        text = param_value if isinstance(param_value, str) else str(param_value)
        params[name.strip().lower()] = text.strip().strip('"')
    return MediaType(essence, params)


def parse_list(value: str | None) -> list[tuple[MediaType, float]]:
    """Parse an Accept header into (media type, q) pairs, highest q first, stable."""
    if not value or not value.strip():
        return []
    ranges: list[tuple[MediaType, float]] = []
    for item in _split_outside_quotes(value, ","):
        media = parse(item)
        if not media.essence:
            continue
        try:
            q = float(media.params.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append((media, q))
    return sorted(ranges, key=lambda r: -r[1])


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def accepts(accept_header: str | None, offered: tuple[str, ...]) -> bool:
    """Whether an Accept header admits any of the offered essences (absent = anything)."""
    ranges = parse_list(accept_header)
    if not ranges:
        return True
    for media, q in ranges:
        if q <= 0:
            continue
        essence = media.essence
        if essence == "*/*" or essence in offered:
            return True
        if essence.endswith("/*") and any(o.startswith(essence[:-1]) for o in offered):
            return True
    return False
