"""Which field a msgspec validation error is about, read from its message.

msgspec has no public field for the path or the kind of an error, only its message, so this is the one
place that reads those messages; `tests/unit/test_msgspec_errors.py` checks every shape relied on here
against the installed msgspec, and fails on a release whose messages read otherwise.
"""

from __future__ import annotations

import re

import msgspec

# Field names and paths are cut to this many characters: they come from the client's body.
MAX_FIELD_CHARS = 64

# "... - at `$.c`", "... - at `$.b[1].x`", "... - at `$[0]`": the JSON path of the value at fault, at the end. Only
# names and indices make up a path, so a client's field name quoted before it holding backticks is not taken for
# one (msgspec's text cannot tell apart a name crafted to end exactly like a path: that one is misplaced, still 422).
_AT = re.compile(r" - at `\$((?:\.\w+|\[\d+\])+)`$")
# "Object missing required field `a`", "Object contains unknown field `z`": a field named inside the object; the
# name runs to the message's last backtick, since it may hold backticks itself.
_NAMED = re.compile(r"^Object (missing required|contains unknown) field `(.*)`$", re.DOTALL)
# A string constraint that no whitespace-only value meets (`Meta(pattern=NOT_BLANK)`), said in words.
NOT_BLANK = r"\S"
_PATTERNS = {f"Expected `str` matching regex {NOT_BLANK!r}": "must not be blank"}


class Culprit(msgspec.Struct, frozen=True):
    """The field at fault (a dotted path, `[i]` for array items; `body` when it is the whole value) and what is
    wrong with it, worded to follow the field's name."""

    field: str
    detail: str


def culprit(error: msgspec.ValidationError) -> Culprit:
    message = str(error)
    at = _AT.search(message)
    path = at.group(1).removeprefix(".") if at else ""
    message = message[: at.start()] if at else message
    named = _NAMED.match(message)
    if named:
        kind, name = named.groups()
        field = f"{path}.{name}" if path else name
        detail = "is required" if kind == "missing required" else "is not a known field"
        return Culprit(field[:MAX_FIELD_CHARS], detail)
    words = _PATTERNS.get(message)
    if words is not None:
        return Culprit((path or "body")[:MAX_FIELD_CHARS], words)
    return Culprit((path or "body")[:MAX_FIELD_CHARS], "is invalid: " + message[:1].lower() + message[1:])


def malformed(error: msgspec.DecodeError, body: bytes) -> str:
    """Why a body is not JSON, worded to follow "body". msgspec calls a lone UTF-16 surrogate escape (`"\\ud800"`)
    "truncated" when a closing quote follows it: that is checked first, so a complete body is never called cut off."""
    lone = lone_surrogate(body)
    if lone is not None:
        return f"is not valid JSON: the escape {lone} is a lone UTF-16 surrogate (half of a pair, without the other)"
    return f"is not valid JSON ({error})"


# One escape sequence: `\\uXXXX`, or a backslash and the character it escapes (so `\\\\` is one, not two).
_ESCAPE = re.compile(rb"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)


def lone_surrogate(body: bytes) -> str | None:
    """The first `\\uD800`-`\\uDFFF` escape that is not a high surrogate directly followed by a low one."""
    high: re.Match[bytes] | None = None
    for escape in _ESCAPE.finditer(body):
        # A `\\u` without four hex digits after it matched as a one-character escape: no code unit.
        unit = int(escape.group(1)[1:], 16) if len(escape.group(1)) == 5 else None
        if high is not None:
            if unit is None or not 0xDC00 <= unit <= 0xDFFF or escape.start() != high.end():
                return high.group().decode()
            high = None
            continue
        if unit is not None and 0xD800 <= unit <= 0xDBFF:
            high = escape
        elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
            return escape.group().decode()
    return None if high is None else high.group().decode()
