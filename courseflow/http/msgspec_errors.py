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

# "... - at `$.c`", "... - at `$.b[1].x`", "... - at `$[0]`": the JSON path of the value at fault.
_AT = re.compile(r"\s*- at `\$\.?([^`]*)`$")
# "Object missing required field `a`", "Object contains unknown field `z`": a field named inside the object.
_NAMED = re.compile(r"^Object (missing required|contains unknown) field `([^`]*)`")


class Culprit(msgspec.Struct, frozen=True):
    """The field at fault (a dotted path, `[i]` for array items; `body` when it is the whole value) and what is
    wrong with it, worded to follow the field's name."""

    field: str
    detail: str


def culprit(error: msgspec.ValidationError) -> Culprit:
    message = str(error)
    at = _AT.search(message)
    path = at.group(1) if at else ""
    message = message[: at.start()] if at else message
    named = _NAMED.match(message)
    if named:
        kind, name = named.groups()
        field = f"{path}.{name}" if path else name
        detail = "is required" if kind == "missing required" else "is not a known field"
        return Culprit(field[:MAX_FIELD_CHARS], detail)
    return Culprit((path or "body")[:MAX_FIELD_CHARS], "is invalid: " + message[:1].lower() + message[1:])
