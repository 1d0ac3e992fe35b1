"""Structured logs: every record, ours and the libraries' (uvicorn, psycopg…), rendered once, one line each.

`configure` runs at the start of every `courseflow` command. Records from `logging.getLogger(...)` and from
structlog loggers pass through the same processors: timestamp, level, logger, message, the context bound
with `structlog.contextvars` (request_id, course_id, student_id), the current trace id, and redaction of
tokens and passwords. JSON when stderr is not a terminal, readable columns when it is; LOG_FORMAT overrides.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from courseflow.platform.config import Settings

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - a dependency, but logs must not fail without it
    trace = None  # type: ignore[assignment]

FORMATS = ("json", "console")
# Our root handler's name, so configuring again replaces it and leaves others (pytest's capture) alone.
HANDLER_NAME = "courseflow"

_SECRETS = (
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s]*@"), r"\1***@"),
    (re.compile(r"(?i)\b(password\s*=\s*)('[^']*'|\S+)"), r"\1***"),
)
# Text none of `_SECRETS` can match lacks all of these: most values are passed by one search, not four rewrites.
_MAYBE_SECRET = re.compile(r"(?i)bearer|eyJ|://|password")
LEADING = ("timestamp", "level", "logger", "message")
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def choose(source: Settings | Mapping[str, str], stderr: TextIO | None = None) -> tuple[str, int]:
    """The format and level asked for: LOG_FORMAT and LOG_LEVEL, else JSON unless stderr is a terminal."""
    fmt: str | None
    if isinstance(source, Settings):
        fmt, level_name = source.logs.format, source.logs.level
    else:
        fmt, level_name = source.get("LOG_FORMAT") or None, source.get("LOG_LEVEL") or "INFO"
    if fmt is None:
        fmt = "console" if (stderr or sys.stderr).isatty() else "json"
    if fmt not in FORMATS:
        raise SystemExit(f"configuration error: LOG_FORMAT must be json or console, got {fmt!r}")
    level = logging.getLevelNamesMapping().get(level_name.upper())
    if level is None:
        raise SystemExit(f"configuration error: LOG_LEVEL must be a logging level name, got {level_name!r}")
    return fmt, level


def configure(source: Settings | Mapping[str, str], stream: TextIO | None = None) -> None:
    """Route all logging through one renderer on the root logger; safe to call again."""
    fmt, level = choose(source, stream)
    structlog.configure(
        processors=[*_pre_chain(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_config(source: Settings | Mapping[str, str]) -> dict[str, Any]:
    """A dictConfig for uvicorn: the same renderer, also in the processes it spawns (API_PROCESSES > 1),
    and no formatters of its own on its `uvicorn.*` loggers, which propagate to the root."""
    fmt, level = choose(source)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "courseflow.platform.logs.formatter", "fmt": fmt}},
        "handlers": {
            HANDLER_NAME: {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": [HANDLER_NAME], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(),
        # uvicorn's access records keep their fields in args; `access_fields` turns them into keys.
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks as text before redaction: a failed connect's traceback may quote its URL.
            structlog.processors.format_exc_info,
            redact,
            *(_json_keys() if fmt == "json" else []),
            renderer,
        ],
    )


def _json_keys() -> list[Processor]:
    return [structlog.processors.EventRenamer("message"), leading_keys]


def _pre_chain() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        access_fields,
        trace_id,
    ]


def leading_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger, message first: a line reads the same whichever context it carries."""
    first = {key: event_dict.pop(key) for key in LEADING if key in event_dict}
    first.update(event_dict)
    return first


def access_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """uvicorn.access's args (client_addr, method, full_path, http_version, status_code) as fields."""
    args = event_dict.pop("positional_args", None)
    if event_dict.get("logger") == "uvicorn.access" and isinstance(args, tuple) and len(args) == len(_ACCESS_FIELDS):
        event_dict.update(zip(_ACCESS_FIELDS, args, strict=True))
    return event_dict


def trace_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The current span's trace id, 32 hex digits, when a valid span is current (a cheap no-op otherwise)."""
    if trace is not None and "trace_id" not in event_dict:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict["trace_id"] = format(context.trace_id, "032x")
    return event_dict


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask bearer tokens, JWTs and URL or conninfo passwords in every string value, however they got there."""
    return {key: _masked(value) for key, value in event_dict.items()}


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        if _MAYBE_SECRET.search(value) is None:
            return value
        for pattern, replacement in _SECRETS:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if type(value) is tuple:
        return tuple(_masked(v) for v in value)
    return value
