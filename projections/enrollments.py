"""Every request of every student, with its current status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql

from courseflow.domain import PENDING, RequestState, evolve
from courseflow.events import (
    EnrollmentDropped,
    RequestDeadLettered,
    RequestDecision,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded, recordset

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
        """A request's first event (its decision, or its dead-lettering) and its later changes in the batch become
        one new row; changes to older rows fold into one per request. Status and reason are `domain.evolve`'s.
        One UPDATE, then one INSERT, for the whole batch."""
        new: dict[str, dict[str, Any]] = {}
        changed: dict[str, dict[str, Any]] = {}
        for recorded in batch:
            e, now = recorded.event, recorded.recorded_at
            if isinstance(e, RequestDeadLettered) and e.request_id is not None:
                new[e.request_id] = _row(e, e.course_id, e.priority, e.requested_at, evolve(PENDING, e), None, now)
            elif isinstance(e, RequestDecision):
                new[e.request_id] = _row(e, e.course_id, e.priority, e.requested_at, evolve(PENDING, e), now, now)
            elif isinstance(e, EnrollmentDropped | WaitlistLeft | WaitlistPromoted):
                after = evolve(PENDING, e)
                row = new.get(e.request_id) or changed.setdefault(e.request_id, {"request_id": e.request_id})
                row.update({"status": after.status, "reason": after.reason, "updated_at": now})
        t = table["enrollments"]
        if changed:
            cur.execute(sql.SQL(_UPDATE).format(table=t), [recordset(list(changed.values()))])
        if new:
            cur.execute(sql.SQL(_INSERT).format(table=t), [recordset(list(new.values()))])


def _row(
    e: RequestDeadLettered | RequestDecision,
    course_id: int | None,
    priority: int | None,
    requested_at: datetime | None,
    state: RequestState,
    decided: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The row a request starts with: set aside undecided, or decided."""
    return {
        "request_id": e.request_id,
        "course_id": course_id,
        "student_id": e.student_id,
        "priority": priority,
        "status": state.status,
        "reason": state.reason,
        "requested_at": requested_at,
        "decided_at": decided,
        "updated_at": now,
    }
