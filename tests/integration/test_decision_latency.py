"""Accept-to-decision latency, read from the decisions that carry their request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from courseflow.eventstore import store
from tests.helpers import Conn


def _append(db: Conn, version: int, kind: str, data: dict[str, object]) -> None:
    db.execute(
        "INSERT INTO events (stream, stream_version, type, data) VALUES ('course-1', %s, %s, %s)",
        (version, kind, msgspec.json.encode(data).decode()),
    )


def test_latency_reads_only_decisions_and_names_its_percentiles(db: Conn) -> None:
    assert store.decision_latency_ms(db) is None
    now = datetime.now(UTC)
    request = {"course_id": 1, "request_id": "00000000-0000-0000-0000-000000000001", "student_id": 1}
    # A request's own event from before sql/007, accepted an hour ago: not a decision, so not a latency.
    _append(
        db,
        1,
        "EnrollmentRequested",
        request | {"idempotency_key": "a", "priority": 0, "requested_at": (now - timedelta(hours=1)).isoformat()},
    )
    _append(
        db,
        2,
        "EnrollmentGranted",
        request | {"idempotency_key": "a", "priority": 0, "requested_at": (now - timedelta(seconds=1)).isoformat()},
    )
    latency = store.decision_latency_ms(db)
    assert isinstance(latency, store.DecisionLatency)
    assert 0 < latency.p50 <= latency.p95 <= latency.p99 < 60_000
