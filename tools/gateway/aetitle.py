"""AE titles as PS3.5 §6.2 defines the AE value representation: at most 16 characters of the
default repertoire (printable ASCII) without backslash, leading and trailing spaces not
significant, never all spaces."""

from __future__ import annotations

AE_TITLE_MAX = 16
# HTTP clients and proxies remove these path segments (RFC 3986 §5.2.4).
DOT_SEGMENTS = frozenset({".", ".."})
# The archive's routes take a path parameter of the characters Powertools' resolver allows
# (``aws_lambda_powertools.event_handler.api_gateway._NAMED_GROUP_BOUNDARY_PATTERN``): an
# AE title holding one of these is answered 404 ("no resource matches this path").
NOT_IN_PATH = frozenset('"#/?`')


def problem(title: str) -> str:
    """Why ``title`` is not an AE value ('' when it is one); spaces around it are ignored."""
    if len(title) > AE_TITLE_MAX:
        return f"longer than {AE_TITLE_MAX} characters"
    if not title.strip():
        return "empty or all spaces"
    if any(not (" " <= c <= "~") for c in title):
        return "not printable ASCII (control or non-ASCII characters)"
    if "\\" in title:
        return "contains a backslash"
    return ""


def path_problem(title: str) -> str:
    """Why ``title`` cannot be the archive's STOW-RS ``{CALLING_AET}`` path segment ('' when
    it can): a dot segment, or a character the archive's routes refuse."""
    title = title.strip()
    if title in DOT_SEGMENTS:
        return f"'{title}' is a dot segment, which HTTP removes from a path"
    refused = sorted(set(title) & NOT_IN_PATH)
    if refused:
        return f"the archive's URL cannot hold {' '.join(refused)}"
    return ""


def from_field(field: bytes) -> str | None:
    """The AE title in a fixed-length PDU field (PS3.8 §9.3.2: called and calling AE titles
    are 16 bytes, padded with spaces), or None when it is not an AE value."""
    try:
        title = field.decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if problem(title) else title.strip()


def shown(field: bytes) -> str:
    """A title from the wire as it may be logged: escaped, so that it cannot forge a line."""
    return ascii(field.rstrip(b" "))[2:-1]
