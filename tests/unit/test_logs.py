"""One JSON line per record, the context bound to it, secrets masked: the log configuration on its own."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from courseflow.platform import logs
from courseflow.platform.config import LogsSettings, Settings

REQUIRED = ("timestamp", "level", "logger", "message")


# Shaped like a JWT, signed with nothing this server knows.
FORGED = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3Iiwicm9sZSI6InN0dWRlbnQifQ.c2lnbmF0dXJlLW5vdC12YWxpZA"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """`logs.configure` writing into a buffer; the root logger and structlog as they were afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_stdlib_record_is_one_json_line_with_the_bound_context(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    with structlog.contextvars.bound_contextvars(request_id="r-1", course_id=101, student_id=42):
        logging.getLogger("courseflow.test").info("decided %s", "r-1")
    logging.getLogger("courseflow.test").info("after")
    first, after = lines(stream.getvalue())
    assert first["message"] == "decided r-1" and "event" not in first
    assert (first["level"], first["logger"]) == ("info", "courseflow.test")
    assert first["timestamp"].endswith("Z") and first["timestamp"][:4].isdigit()
    assert (first["request_id"], first["course_id"], first["student_id"]) == ("r-1", 101, 42)
    assert "request_id" not in after and "trace_id" not in after


def test_structlog_loggers_and_settings_share_the_renderer(stream: io.StringIO) -> None:
    logs.configure(Settings(logs=LogsSettings(format="json", level="WARNING")), stream)
    structlog.get_logger("courseflow.native").warning("seat granted", course_id=7)
    logging.getLogger("courseflow.test").info("below the level")
    (line,) = lines(stream.getvalue())
    assert {k: line[k] for k in ("level", "logger", "message", "course_id")} == {
        "level": "warning",
        "logger": "courseflow.native",
        "message": "seat granted",
        "course_id": 7,
    }


def test_secrets_are_masked_in_messages_fields_and_tracebacks(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    log = logging.getLogger("courseflow.test")
    log.warning("header Authorization: Bearer abc.def-123 from %s", "postgresql://app:s3cret@db:5432/app")
    try:
        raise ValueError(f"cannot use {FORGED} with redis://:hunter2@cache:6379/0 or password=pw1 host=x")
    except ValueError:
        log.exception("failed")
    structlog.get_logger("courseflow.native").info("token", token=f"Bearer {FORGED}")
    text = stream.getvalue()
    for secret in ("abc.def-123", "s3cret", FORGED, "hunter2", "pw1"):
        assert secret not in text
    warning, failed, token = lines(text)
    assert warning["message"] == "header Authorization: Bearer *** from postgresql://app:***@db:5432/app"
    assert "ValueError: cannot use *** with redis://:***@cache:6379/0" in failed["exception"]
    assert token["token"] == "Bearer ***"


def test_the_current_trace_id_is_a_field(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("decide") as span:
        logging.getLogger("courseflow.test").info("inside")
    (line,) = lines(stream.getvalue())
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert len(line["trace_id"]) == 32


def test_console_format_is_for_people_and_bad_values_are_refused(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "console"}, stream)
    logging.getLogger("courseflow.test").info("hello %s", "there")
    assert "hello there" in stream.getvalue() and not stream.getvalue().startswith("{")
    with pytest.raises(SystemExit, match="LOG_FORMAT"):
        logs.configure({"LOG_FORMAT": "xml"})
    with pytest.raises(SystemExit, match="LOG_LEVEL"):
        logs.configure({"LOG_LEVEL": "chatty"})
