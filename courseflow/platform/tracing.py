"""Traces: one per request, from the HTTP call through the stream to the worker's commit.

Off unless OTEL_TRACES_EXPORTER says otlp or console: then nothing is installed, the helpers here
return before doing any work, and stream entries carry no trace fields. The provider is held here
rather than set as the global one, which can be set only once per process: tests swap theirs in.
The trace context crosses the stream as `traceparent`/`tracestate` fields of the entry (W3C format),
following the OpenTelemetry messaging conventions: a PRODUCER `send` span at intake, a CONSUMER
`process` span per batch in the worker that links to every entry's context.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_NAME: Final = "courseflow"
TRACE_FIELDS: Final = (b"traceparent", b"tracestate")
MAX_LINKS: Final = 128
# A caller's tracestate rides along into every stream entry: past this size it is dropped, not stored.
MAX_TRACESTATE: Final = 512

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_w3c = TraceContextTextMapPropagator()


def configure(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Set up tracing for this process from the OTEL_* environment, or with `exporter` (tests), or turn it off.

    `service_name` is the default for OTEL_SERVICE_NAME. Returns the provider installed, None when off.
    A provider installed before is shut down (its spans flushed) first.
    """
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter is None and kind in ("", "none"):
        _install(None)
        return None
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        # Tests read spans the moment they end.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif kind == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Reads OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) itself.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise SystemExit(f"configuration error: OTEL_TRACES_EXPORTER must be otlp, console or none, got {kind!r}")
    _install(provider)
    return provider


def shutdown() -> None:
    """Turn tracing off, flushing the spans the provider still holds."""
    _install(None)


def _install(provider: TracerProvider | None) -> None:
    global _provider, _tracer
    if _provider is not None and _provider is not provider:
        _provider.shutdown()
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer(SCOPE_NAME)


def tracer() -> trace.Tracer | None:
    """The tracer, or None while tracing is off: callers skip their tracing work then."""
    return _tracer


def span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[Span | None]:
    """A span around a block, current within it; with tracing off, a no-op that yields None."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def inject() -> list[bytes]:
    """The current trace context as stream-entry fields (name, value, ...); empty with tracing off."""
    if _tracer is None:
        return []
    carrier: dict[str, str] = {}
    _w3c.inject(carrier)
    return [item for name in TRACE_FIELDS if (value := carrier.get(name.decode())) for item in (name, value.encode())]


def producer_context(fields: Mapping[bytes, bytes]) -> trace.SpanContext | None:
    """The trace context an entry was sent under, None when it has none (sent with tracing off, or older)."""
    carrier = {name.decode(): fields[name].decode(errors="replace") for name in TRACE_FIELDS if name in fields}
    if not carrier:
        return None
    found = trace.get_current_span(_w3c.extract(carrier)).get_span_context()
    return found if found.is_valid else None


@contextmanager
def consuming(
    name: str, producers: Sequence[trace.SpanContext | None], attributes: Mapping[str, AttributeValue]
) -> Iterator[Span | None]:
    """A CONSUMER span for a batch of entries, linked to each entry's producer; for a batch of one, also
    its child, so a lone request's trace is one tree. With tracing off, a no-op that yields None."""
    if _tracer is None:
        yield None
        return
    known = [p for p in producers if p is not None]
    parent = trace.set_span_in_context(trace.NonRecordingSpan(known[0])) if len(producers) == 1 and known else None
    with (
        _tracer.start_as_current_span(
            name,
            context=parent if parent is not None else otel_context.Context(),  # a new trace, not the caller's
            kind=SpanKind.CONSUMER,
            attributes={**attributes, "messaging.batch.message_count": len(producers)},
            # The SDK keeps 128 links a span by default: a larger batch links its first 128 and says how many it had.
            links=[Link(p) for p in known[:MAX_LINKS]],
        ) as current
    ):
        yield current


def record(name: str, started_ns: int, attributes: Mapping[str, AttributeValue]) -> None:
    """A span for work already done (from `started_ns`, time.time_ns(), to now): for spans kept only when
    the work turned out to be worth one. No-op with tracing off."""
    if _tracer is not None:
        _tracer.start_span(name, attributes=attributes, start_time=started_ns).end()


def now_ns() -> int:
    """The start time to pass to `record` later; 0 with tracing off (not read then)."""
    return time.time_ns() if _tracer is not None else 0


class Traced:
    """A SERVER span per HTTP request, `METHOD route-template`, continuing an incoming `traceparent`.

    Plain ASGI, outermost, so refusals by the gate or while draining are traced too. With tracing off
    it passes the request straight on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in TRACE_FIELDS and len(value) <= MAX_TRACESTATE
        }
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        with _tracer.start_as_current_span(
            method,
            context=_w3c.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as current:
            try:
                await self.app(scope, receive, sending)
            except Exception:
                if not status:
                    status.append(500)  # what Starlette's outermost error handler answers, outside this span
                raise
            finally:
                # The router put the matched route in the scope: name by its template, not the path.
                route = scope.get("route")
                template = getattr(route, "path", None)
                if isinstance(template, str):
                    current.update_name(f"{method} {template}")
                    current.set_attribute("http.route", template)
                if status:
                    current.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        current.set_status(Status(StatusCode.ERROR))
