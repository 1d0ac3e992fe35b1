"""Every request of every student, with its current status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql

from courseflow.domain import STATUS_AFTER
from courseflow.events import (
    EnrollmentDropped,
    EnrollmentRejected,
    EnrollmentRequested,
    RequestDeadLettered,
    RequestDecision,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded, recordset

_CHANGES = (RequestDecision, WaitlistPromoted, EnrollmentDropped, WaitlistLeft)
_COLUMNS = {
    "request_id": "uuid",
    "course_id": "bigint",
    "student_id": "bigint",
    "priority": "smallint",
    "status": "text",
    "reason": "text",
    "requested_at": "timestamptz",
    "decided_at": "timestamptz",
    "updated_at": "timestamptz",
}
_NAMES = ", ".join(_COLUMNS)

# New rows, one statement per batch. A request dead-lettered before may come back (`courseflow dlq retry`):
# its row is replaced.
_INSERT = (
    f"INSERT INTO {{table}} ({_NAMES}) SELECT {_NAMES} FROM json_to_recordset(%s::json)"
    f" AS u({', '.join(f'{name} {type_}' for name, type_ in _COLUMNS.items())})"
    " ON CONFLICT (request_id) DO UPDATE SET course_id = excluded.course_id, student_id = excluded.student_id,"
    " priority = excluded.priority, status = excluded.status, reason = excluded.reason,"
    " requested_at = excluded.requested_at, decided_at = excluded.decided_at, updated_at = excluded.updated_at"
)
# Changes to rows of earlier batches, one statement per batch (one change per request: they are folded first).
_UPDATE = (
    "UPDATE {table} t SET status = u.status, reason = u.reason, updated_at = u.updated_at,"
    " decided_at = coalesce(u.decided_at, t.decided_at)"
    " FROM json_to_recordset(%s::json) AS u(request_id uuid, status text, reason text, updated_at timestamptz,"
    " decided_at timestamptz) WHERE t.request_id = u.request_id"
)


class Enrollments(Projection):
    name = "enrollments"
    tables = ("enrollments",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """A request and its later changes in the batch become one new row; changes to older rows fold into one
        per request. One UPDATE, then one INSERT, for the whole batch."""
        new: dict[str, dict[str, Any]] = {}
        changed: dict[str, dict[str, Any]] = {}
        for recorded in batch:
            e, now = recorded.event, recorded.recorded_at
            if isinstance(e, EnrollmentRequested):
                new[e.request_id] = _row(e, e.priority, e.requested_at, "pending", None, None, now)
            elif isinstance(e, RequestDeadLettered) and e.request_id is not None:
                new[e.request_id] = _row(e, e.priority, e.requested_at, "dead_lettered", e.reason, None, now)
            elif isinstance(e, RequestDecision) and e.carries_request:
                # The decision carries its request (sql/007): the request's first event is its decision.
                reason = e.reason if isinstance(e, EnrollmentRejected) else None
                new[e.request_id] = _row(e, e.priority, e.requested_at, STATUS_AFTER[type(e)], reason, now, now)
            elif isinstance(e, _CHANGES):
                status, reason = STATUS_AFTER[type(e)], e.reason if isinstance(e, EnrollmentRejected) else None
                decided = now if isinstance(e, RequestDecision) else None
                row = new.get(e.request_id) or changed.setdefault(e.request_id, {"request_id": e.request_id})
                row.update({"status": status, "reason": reason, "updated_at": now})
                if decided is not None:
                    row["decided_at"] = decided
        t = table["enrollments"]
        if changed:
            cur.execute(sql.SQL(_UPDATE).format(table=t), [recordset(list(changed.values()))])
        if new:
            cur.execute(sql.SQL(_INSERT).format(table=t), [recordset(list(new.values()))])


def _row(
    e: EnrollmentRequested | RequestDeadLettered | RequestDecision,
    priority: int | None,
    requested_at: datetime | None,
    status: str,
    reason: str | None,
    decided: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The row a request starts with: pending, set aside undecided, or decided."""
    return {
        "request_id": e.request_id,
        "course_id": e.course_id,
        "student_id": e.student_id,
        "priority": priority,
        "status": status,
        "reason": reason,
        "requested_at": requested_at,
        "decided_at": decided,
        "updated_at": now,
    }
