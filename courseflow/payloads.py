"""Request bodies checked field by field, so every rejection names the field at fault."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

MAX_BODY_BYTES = 16 * 1024


class InvalidInput(Exception):
    """A 4xx answer: `field` names the culprit; `status` is 400 for unreadable bodies, else 422."""

    def __init__(self, field: str, detail: str, status: int = 422) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
        self.status = status


class Enrollment(msgspec.Struct, frozen=True):
    student_id: int
    course_id: int
    idempotency_key: str
    priority: int = 0


class NewCourse(msgspec.Struct, frozen=True):
    course_id: int
    capacity: int
    title: str = ""
    opens_at: datetime | None = None
    closes_at: datetime | None = None


class CoursePatch(msgspec.Struct, frozen=True):
    """Fields left UNSET stay as they are; a window bound set to None is removed."""

    capacity: int | None = None
    opens_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    closes_at: datetime | msgspec.UnsetType | None = msgspec.UNSET


class Page(msgspec.Struct, frozen=True):
    after: int
    limit: int


def json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput("body", f"must be at most {MAX_BODY_BYTES} bytes", status=413)
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})", status=400) from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    return data


def integer(data: dict[str, Any], field: str, low: int, high: int, default: int | None = None) -> int:
    value = data.get(field, default)
    if value is None:
        raise InvalidInput(field, "is required")
    # JSON booleans decode to bool, a subclass of int: refuse them explicitly.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(field, f"must be between {low} and {high}, got {value}")
    return value


def text(data: dict[str, Any], field: str, low: int, high: int, default: str | None = None) -> str:
    value = data.get(field, default)
    if value is None:
        raise InvalidInput(field, "is required")
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise InvalidInput(field, f"must be {low} to {high} characters long, got {len(value)}")
    if not value.isprintable():
        raise InvalidInput(field, "must contain printable characters only")
    return value


def _no_extra(data: dict[str, Any], allowed: set[str]) -> None:
    for field in data:
        if field not in allowed:
            raise InvalidInput(field, "is not a known field")


MAX_ID = 2**63 - 1


def enrollment(body: bytes, header_key: str | None) -> Enrollment:
    data = json_object(body)
    _no_extra(data, {"student_id", "course_id", "idempotency_key", "priority"})
    if header_key is not None and data.setdefault("idempotency_key", header_key) != header_key:
        raise InvalidInput("idempotency_key", "differs from the Idempotency-Key header")
    return Enrollment(
        student_id=integer(data, "student_id", 1, MAX_ID),
        course_id=integer(data, "course_id", 1, MAX_ID),
        idempotency_key=text(data, "idempotency_key", 1, 128),
        priority=integer(data, "priority", 0, 100, default=0),
    )


def timestamp(data: dict[str, Any], field: str) -> datetime | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be an ISO 8601 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, f"must be an ISO 8601 timestamp, got {value!r}") from None
    if parsed.tzinfo is None:
        raise InvalidInput(field, "must include a time zone, e.g. 2026-12-01T09:00:00Z")
    return parsed


def _window(opens_at: datetime | None, closes_at: datetime | None) -> None:
    if opens_at is not None and closes_at is not None and closes_at <= opens_at:
        raise InvalidInput("closes_at", "must be after opens_at")


MAX_CAPACITY = 1_000_000


def new_course(body: bytes) -> NewCourse:
    data = json_object(body)
    _no_extra(data, {"course_id", "capacity", "title", "opens_at", "closes_at"})
    course = NewCourse(
        course_id=integer(data, "course_id", 1, MAX_ID),
        capacity=integer(data, "capacity", 0, MAX_CAPACITY),
        title=text(data, "title", 0, 200, default=""),
        opens_at=timestamp(data, "opens_at"),
        closes_at=timestamp(data, "closes_at"),
    )
    _window(course.opens_at, course.closes_at)
    return course


def course_patch(body: bytes) -> CoursePatch:
    data = json_object(body)
    _no_extra(data, {"capacity", "opens_at", "closes_at"})
    if not data:
        raise InvalidInput("body", "must set at least one of capacity, opens_at, closes_at")
    patch = CoursePatch(
        capacity=integer(data, "capacity", 0, MAX_CAPACITY) if "capacity" in data else None,
        opens_at=timestamp(data, "opens_at") if "opens_at" in data else msgspec.UNSET,
        closes_at=timestamp(data, "closes_at") if "closes_at" in data else msgspec.UNSET,
    )
    if not isinstance(patch.opens_at, msgspec.UnsetType) and not isinstance(patch.closes_at, msgspec.UnsetType):
        _window(patch.opens_at, patch.closes_at)
    return patch


def page(query: Mapping[str, str], max_limit: int = 1000) -> Page:
    after = query.get("after", "0")
    limit = query.get("limit", "100")
    if not after.isdigit():
        raise InvalidInput("after", f"must be a position (a non-negative integer), got {after!r}")
    if not limit.isdigit() or not 1 <= int(limit) <= max_limit:
        raise InvalidInput("limit", f"must be between 1 and {max_limit}, got {limit!r}")
    return Page(int(after), int(limit))


def positive_id(raw: str | None, field: str) -> int:
    if raw is None or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise InvalidInput(field, f"must be a positive integer, got {raw!r}")
    return int(raw)
