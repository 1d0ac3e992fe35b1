"""What a token says, read strictly: each claim once, times as numbers, a subject that names one principal.

PyJWT checks the signature, the audience, the issuer and whether the token is current; it reads `exp`, `iat`
and `nbf` with `int()`, so `"1900000000"` passes, and its JSON decoding keeps the last of two equal keys. The
token's own segments are read again here, after PyJWT verified them, so that neither reaches a principal.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Literal, NoReturn, cast, get_args

import msgspec

Role = Literal["student", "registrar", "service"]
ROLES: tuple[Role, ...] = get_args(Role)
# An identity provider's subject is an id or a name; longer ones are refused, not stored in every log line.
MAX_SUB_CHARS = 128


class Refused(Exception):
    """What is wrong with a token, in plain words that follow "the token is not valid: "."""


class Claims(msgspec.Struct, frozen=True):
    """The claims a principal is made from (others, such as `aud` and `iss`, are PyJWT's to check)."""

    sub: str
    role: Role
    # NumericDate (RFC 7519 §2): seconds since 1970, a JSON number, never a string.
    exp: float
    iat: float | None = None
    nbf: float | None = None


def read(token: str) -> Claims:
    """The claims of a token in canonical three-segment form (see `auth.canonical`); raises Refused."""
    header, payload, _ = token.split(".")
    _object(header, "header")
    claims = _object(payload, "payload")
    times = {name: _time(name, claims[name]) for name in ("exp", "iat", "nbf") if name in claims}
    if "exp" not in times:
        raise Refused("it has no exp")
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str):
        raise Refused("its sub must be a string")
    if role not in ROLES:
        raise Refused(f"its role must be one of {', '.join(ROLES)}")
    return Claims(sub=sub, role=cast(Role, role), **times)


def _time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = "text" if isinstance(value, str) else "null" if value is None else "a JSON array or object"
        raise Refused(f"its {name} must be a number of seconds since 1970, not {shown}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise Refused(f"its {name} lies beyond any calendar")
    return seconds


def subject_fault(sub: str) -> str | None:
    """Why `sub` cannot name a principal, for every role; None when it can."""
    if not sub.strip():
        return "is empty or blank"
    if len(sub) > MAX_SUB_CHARS:
        return f"is longer than {MAX_SUB_CHARS} characters"
    if sub != sub.strip():
        return "has whitespace around it"
    if not sub.isprintable():
        return "holds control characters"
    return None


def _object(segment: str, part: str) -> dict[str, Any]:
    """A segment's JSON object; a key given twice is refused (PyJWT's `json.loads` would keep the last)."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    try:
        found = json.loads(raw, object_pairs_hook=_once, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, _Twice):
            raise Refused(f"its {part} gives {exc.key} more than once") from None
        raise Refused(f"its {part} is not JSON") from None
    if not isinstance(found, dict):
        raise Refused(f"its {part} is not a JSON object")
    return found


class _Twice(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = ascii(key[:64])  # quoted, and only ASCII: it is repeated in a response header


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Twice(key)
        found[key] = value
    return found


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
