"""Request bodies checked field by field, so every rejection names the field at fault."""

from __future__ import annotations

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


def new_course(body: bytes) -> NewCourse:
    data = json_object(body)
    _no_extra(data, {"course_id", "capacity", "title"})
    return NewCourse(
        course_id=integer(data, "course_id", 1, MAX_ID),
        capacity=integer(data, "capacity", 0, 1_000_000),
        title=text(data, "title", 0, 200, default=""),
    )


def positive_id(raw: str | None, field: str) -> int:
    if raw is None or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise InvalidInput(field, f"must be a positive integer, got {raw!r}")
    return int(raw)
