"""Request bodies and parameters, checked at the door so every rejection names the field at fault.

Bodies are decoded by msgspec straight into typed Structs whose constraints live on the types; an
unknown field, a wrong type, a duplicate key or an out-of-range value is a 4xx before anything
reaches Redis or PostgreSQL.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
import msgspec.inspect
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from courseflow.domain import MAX_ID, Id
from courseflow.http.msgspec_errors import NOT_BLANK, culprit, malformed
from courseflow.http.problems import InvalidInput

MAX_BODY_BYTES = 16 * 1024
MAX_CAPACITY = 1_000_000
MAX_PAGE = 1000
# Listings whose every item costs a look-up (a queue depth, a decoded entry) are shorter.
MAX_LISTING = 500
# /metrics lists courses a page at a time to anyone: its answer stays small whatever the number of courses.
MAX_METRICS_PAGE = 100
# Timestamps a registration can sensibly name; outside them a typo (year 9999) would only break things later.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# A log position or a place to page from: sent back as given, so held to the ids' bound too.
After = Annotated[int, Meta(ge=0, le=MAX_ID)]
Priority = Annotated[int, Meta(ge=0, le=100)]
Capacity = Annotated[int, Meta(ge=0, le=MAX_CAPACITY)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128)]
Title = Annotated[str, Meta(max_length=200, pattern=NOT_BLANK)]
# Read by `timestamp` as RFC 3339: no ISO 8601 week dates, basic format or comma fractions.
Timestamp = Annotated[str, Meta(max_length=64, extra_json_schema={"format": "date-time"})]
# RFC 3339's date-time (§5.6, a space for the T as its note allows), the zone left optional so that its absence
# is said as such; msgspec's datetime then checks the calendar, and would also take an offset without its colon.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?", re.ASCII)


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Enrollment(_Body, frozen=True):
    course_id: Id
    # A student may leave it out: a student only ever enrolls themselves.
    student_id: Id | None = None
    idempotency_key: IdempotencyKey | None = None
    # Honoured from registrars and services only; a student's comes from the registrar's setting.
    priority: Priority | None = None


class NewCourse(_Body, frozen=True):
    course_id: Id
    capacity: Capacity
    # Required: a course is chosen by its title on the pages, and a blank one reads as nothing to choose.
    title: Title
    opens_at: Timestamp | None = None
    closes_at: Timestamp | None = None


class CoursePatch(_Body, frozen=True):
    """Fields left UNSET stay as they are; a window bound set to null is removed."""

    capacity: Capacity | UnsetType = UNSET
    opens_at: Timestamp | UnsetType | None = UNSET
    closes_at: Timestamp | UnsetType | None = UNSET


class PriorityGrant(_Body, frozen=True):
    priority: Priority


class Window(msgspec.Struct, frozen=True):
    """A registration window as parsed datetimes; UNSET = leave as is."""

    opens_at: datetime | UnsetType | None = UNSET
    closes_at: datetime | UnsetType | None = UNSET


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """Path or query parameters; unknown query parameters are ignored, as browsers and caches add their own."""


class CoursePath(Params, frozen=True, kw_only=True):
    course_id: Id


class StudentPath(Params, frozen=True, kw_only=True):
    student_id: Id


class RequestPath(Params, frozen=True, kw_only=True):
    request_id: Annotated[uuid.UUID, Meta(description="The request id a 202 answered with")]


class Page(Params, frozen=True, kw_only=True):
    after: Annotated[After, Meta(description="Start after this: a log position in histories, a place in waitlists")] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE, description="At most this many items")] = 100


Listing = Annotated[int, Meta(ge=1, le=MAX_LISTING, description="At most this many items")]


class CoursePage(Params, frozen=True, kw_only=True):
    after: Annotated[After, Meta(description="Only courses whose id is larger than this")] = 0
    limit: Listing = 100


class DeadLetterQuery(Params, frozen=True, kw_only=True):
    limit: Listing = 100


class MetricsQuery(Params, frozen=True, kw_only=True):
    course_id: Annotated[Id | None, Meta(description="One course only")] = None
    after: Annotated[After, Meta(description="List only courses whose id is larger than this (`next_after`)")] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_METRICS_PAGE, description="List at most this many courses")] = (
        MAX_METRICS_PAGE
    )


B = TypeVar("B", bound=_Body)


async def read(request: Request, kind: type[B]) -> B:
    """The request's JSON body as `kind`: 415 unless JSON, 413 past MAX_BODY_BYTES, 400 unreadable, 422 invalid."""
    # One pass over the headers. Two Content-Types (or encodings) say two things: refused, not one chosen.
    content_type = content_encoding = content_length = None
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            if content_type is not None:
                raise _twice("Content-Type")
            content_type = value
        elif name == b"content-encoding":
            if content_encoding is not None:
                raise _twice("Content-Encoding")
            content_encoding = value
        elif name == b"content-length":
            content_length = content_length or value
    if content_type not in _JSON:
        _refuse_media_type(content_type)
    if content_encoding is not None and content_encoding.strip().lower() != b"identity":
        raise InvalidInput(
            "Content-Encoding", "is not supported: send the body uncompressed", status=415, location="header"
        )
    if content_length is not None and content_length.isdigit() and int(content_length) > MAX_BODY_BYTES:
        raise _too_large()
    return decode(await _body(request.receive), kind)


async def _body(receive: Receive) -> bytes:
    """The whole body, read once from `receive` (as `Request.body` reads it, without its async generator, whose
    set-up and finalisation cost more than the read itself on the enroll path)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("body", "was cut off: the client went away before sending all of it", status=400)
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# What clients send most, taken without parsing; anything else is parsed by `_refuse_media_type`.
_JSON = frozenset({b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"})


def _refuse_media_type(raw: bytes | None) -> None:
    """Return if `raw` is JSON in UTF-8 after all (other spellings, other cases), else raise the 415."""
    header = "" if raw is None else raw.decode("latin-1")
    media_type, _, parameters = header.partition(";")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"') if parameters.strip() else "utf-8"
    if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        shown = header[:64] if raw is not None else "none"
        raise InvalidInput(
            "Content-Type", f"must be application/json (UTF-8), got {shown!r}", status=415, location="header"
        )


def _twice(header: str) -> InvalidInput:
    return InvalidInput(header, "is given more than once", status=400, location="header")


def _too_large() -> InvalidInput:
    return InvalidInput("body", f"must be at most {MAX_BODY_BYTES} bytes", status=413)


class BodyLimit:
    """Refuses a body past MAX_BODY_BYTES (413) as it arrives, whoever reads it: a chunked body names no length
    up front, so the bytes `receive` hands over are counted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # GET and HEAD carry no body anyone reads; a live stream's disconnect listener must not raise.
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > MAX_BODY_BYTES:
                    raise _too_large()
            return message

        await self.app(scope, counted, send)


class _Reader(msgspec.Struct, frozen=True):
    decoder: msgspec.json.Decoder[Any]
    # The quoted field names when every field is a scalar: see `_no_duplicate_keys`.
    names: tuple[bytes, ...] | None


_readers: dict[type[Any], _Reader] = {}
_SCALARS = (
    msgspec.inspect.IntType,
    msgspec.inspect.StrType,
    msgspec.inspect.NoneType,
    msgspec.inspect.BoolType,
    msgspec.inspect.FloatType,
)


def _reader(kind: type[Any]) -> _Reader:
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    flat = all(
        isinstance(t, _SCALARS)
        for field in info.fields
        for t in (field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,))
    )
    names = tuple(f'"{field.encode_name}"'.encode() for field in info.fields) if flat else None
    return _Reader(msgspec.json.Decoder(kind), names)


def decode(body: bytes, kind: type[B]) -> B:
    reader = _readers.get(kind) or _readers.setdefault(kind, _reader(kind))
    try:
        value: B = reader.decoder.decode(body)
    except msgspec.ValidationError as exc:
        at_fault = culprit(exc)
        raise InvalidInput(at_fault.field, at_fault.detail) from None
    except UnicodeDecodeError:
        raise InvalidInput("body", "is not UTF-8", status=400) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", malformed(exc, body), status=400) from None
    _no_duplicate_keys(body, reader.names)
    return value


def _no_duplicate_keys(body: bytes, names: tuple[bytes, ...] | None) -> None:
    """msgspec keeps the last of two equal keys; a body that says two things must not silently mean one.

    `names`: the quoted field names of a body that decoded into a Struct of scalar fields, so its only object
    is the top one and its keys are those names. Without a backslash no key is escaped and no string value
    holds a quote, so each key appears verbatim and a duplicate shows as a name seen twice; only then (or
    with a backslash) is the body parsed again to find it."""
    if names and b"\\" not in body and max(map(body.count, names)) < 2:
        return

    def pairs(items: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise InvalidInput(key[:64], "appears twice in the body")
            seen.add(key)

    json.loads(body, object_pairs_hook=pairs)


def idempotency_key(value: str, field: str, typed: bool = False) -> str:
    """A key held to the body field's rules, wherever it came from (the body or the Idempotency-Key header).

    `typed`: it was decoded as an `IdempotencyKey` already, whose length is checked."""
    if not typed:
        try:
            msgspec.convert(value, IdempotencyKey)
        except msgspec.ValidationError as exc:
            raise InvalidInput(field, culprit(exc).detail) from None
    return text(value, field)


def text(value: str, field: str) -> str:
    if not value.isprintable():
        raise InvalidInput(field, "must contain printable characters only")
    return value


def timestamp(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        if not _RFC3339.fullmatch(value):
            raise ValueError(value)
        parsed = msgspec.convert(value, datetime)
    except (ValueError, msgspec.ValidationError):
        raise InvalidInput(
            field, f"must be an RFC 3339 timestamp such as 2026-12-01T09:00:00Z, got {value!r}"
        ) from None
    offset = parsed.utcoffset()
    if offset is None:
        raise InvalidInput(field, "must include a time zone, e.g. 2026-12-01T09:00:00Z")
    if offset.seconds % 60 or offset.microseconds or abs(offset) > timedelta(hours=14):
        # PostgreSQL keeps whole minutes only; real offsets lie within ±14:00.
        raise InvalidInput(field, f"must have a time zone offset in whole minutes within ±14:00, got {value!r}")
    if not EARLIEST <= parsed <= LATEST:
        raise InvalidInput(field, f"must be between {EARLIEST:%Y} and {LATEST:%Y}, got {value!r}")
    return parsed


def window(opens_at: str | UnsetType | None, closes_at: str | UnsetType | None) -> Window:
    """Parse a window's bounds; when both are given, closing must come after opening."""
    opens = opens_at if isinstance(opens_at, UnsetType) else timestamp(opens_at, "opens_at")
    closes = closes_at if isinstance(closes_at, UnsetType) else timestamp(closes_at, "closes_at")
    if isinstance(opens, datetime) and isinstance(closes, datetime) and closes <= opens:
        raise InvalidInput("closes_at", "must be after opens_at")
    return Window(opens, closes)


def is_id(raw: str) -> bool:
    """A student or course id as text: ASCII digits, 1 to MAX_ID."""
    # ASCII only: str.isdigit() also accepts superscripts and other scripts' digits, which int() refuses or reads.
    return 0 < len(raw) <= 20 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ID
