"""Traces on real servers: one trace from the HTTP request through the stream to the worker's commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from courseflow.platform import tracing
from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, stream_entries, wait_decided, wait_until

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition
SEND = f"send {KEYS.requests}"
PROCESS = f"process {KEYS.requests}"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, its spans kept in memory; off again after.

    The provider lives in courseflow.tracing, not in OpenTelemetry's set-once global: each test gets its own.
    The workers run as threads of this process, so the API's spans and theirs all land here.
    """
    exporter = InMemorySpanExporter()
    tracing.configure("courseflow-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def wait_for(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    wait_until(lambda: len(named(exporter, name)) >= count, what=f"{count} {name!r} span(s)")
    return named(exporter, name)


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_one_request_is_one_trace_from_http_to_commit(
    spans: InMemorySpanExporter, client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 5)
    start_workers()
    spans.clear()
    enroll(client, 1, 1)
    wait_decided(db, 1)
    (process,) = wait_for(spans, PROCESS)

    (http,) = named(spans, "POST /enroll")
    (send,) = named(spans, SEND)
    (commit,) = named(spans, "commit decisions")
    assert len({s.context.trace_id for s in (http, send, process, commit)}) == 1
    # One tree: the worker's span is the send span's child (a batch of one), and the commit its own child.
    assert parent_id(send) == http.context.span_id
    assert parent_id(process) == send.context.span_id
    assert parent_id(commit) == process.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]

    assert http.kind is SpanKind.SERVER and send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert http.attributes is not None
    assert dict(http.attributes) == {
        "http.request.method": "POST",
        "url.path": "/enroll",
        "http.route": "/enroll",
        "http.response.status_code": 202,
    }
    assert send.attributes is not None and send.attributes["courseflow.intake.outcome"] == "queued"
    assert process.attributes is not None and process.attributes["messaging.batch.message_count"] == 1
    # The projector's batch that applied the decision has its span too (a trace of its own).
    wait_for(spans, "project events")


def test_a_batch_links_to_every_request_it_decides(
    spans: InMemorySpanExporter, client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 5)
    for student in (1, 2, 3):
        enroll(client, student, 1)
    start_workers()  # after the three are queued: the worker reads them as one batch
    wait_decided(db, 3)
    (process,) = wait_for(spans, PROCESS)
    sends = named(spans, SEND)
    assert {link.context.span_id for link in process.links} == {s.context.span_id for s in sends}
    assert process.parent is None  # its own trace: it belongs to none of the three more than the others
    assert all(parent_id(c) == process.context.span_id for c in named(spans, "commit decisions"))


def test_the_entry_carries_the_send_span_context(
    spans: InMemorySpanExporter, client: TestClient, rds: redis.Redis
) -> None:
    create_course(client, 1, 5)
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    client.post(
        "/enroll",
        json={"student_id": 1, "course_id": 1, "idempotency_key": "k1", "priority": 0},
        headers={"traceparent": incoming},
    )
    (send,) = named(spans, SEND)
    (http,) = named(spans, "POST /enroll")
    # The caller's trace continues here.
    assert http.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_id(http) == 0xB7AD6B7169203331
    ((_, fields),) = stream_entries(rds, KEYS.requests)
    assert fields[b"traceparent"] == f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-01".encode()
    assert b"tracestate" not in fields  # written only when there is one


def test_with_tracing_off_entries_carry_no_trace_fields(client: TestClient, rds: redis.Redis) -> None:
    assert tracing.tracer() is None
    create_course(client, 1, 5)
    enroll(client, 1, 1)
    ((_, fields),) = stream_entries(rds, KEYS.requests)
    assert set(fields) == {b"request"}
