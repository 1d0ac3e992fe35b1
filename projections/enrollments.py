"""Every request of every student, with its current status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql

from courseflow.domain import STATUS_AFTER
from courseflow.events import (
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    EnrollmentRequested,
    RequestDeadLettered,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.store import Cursor
from projections.base import Projection, Recorded

_DECISIONS = (EnrollmentGranted, Waitlisted, EnrollmentRejected)
_CHANGES = (*_DECISIONS, WaitlistPromoted, EnrollmentDropped, WaitlistLeft)


# A request dead-lettered before may come back (`courseflow dlq retry`): its row is replaced.
_INSERT = (
    "INSERT INTO {table} (request_id, course_id, student_id, priority, status, reason, requested_at, decided_at,"
    " updated_at) VALUES (%(r)s, %(c)s, %(s)s, %(p)s, %(status)s, %(reason)s, %(at)s, %(decided)s, %(now)s)"
    " ON CONFLICT (request_id) DO UPDATE SET course_id = excluded.course_id, student_id = excluded.student_id,"
    " priority = excluded.priority, status = excluded.status, reason = excluded.reason,"
    " requested_at = excluded.requested_at, decided_at = excluded.decided_at, updated_at = excluded.updated_at"
)
_UPDATE = (
    "UPDATE {table} SET status = %(status)s, reason = %(reason)s, updated_at = %(now)s,"
    " decided_at = coalesce(%(decided)s, decided_at) WHERE request_id = %(r)s"
)


class Enrollments(Projection):
    name = "enrollments"
    tables = ("enrollments",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """A request and its later changes in the same batch become one INSERT of the final row."""
        new: dict[str, dict[str, Any]] = {}
        changed: list[dict[str, Any]] = []
        for recorded in batch:
            e, now = recorded.event, recorded.recorded_at
            if isinstance(e, EnrollmentRequested):
                new[e.request_id] = _row(e, "pending", None, now)
            elif isinstance(e, RequestDeadLettered) and e.request_id is not None:
                new[e.request_id] = _row(e, "dead_lettered", e.reason, now)
            elif isinstance(e, _CHANGES):
                change = {
                    "status": STATUS_AFTER[type(e)],
                    "reason": e.reason if isinstance(e, EnrollmentRejected) else None,
                    "now": now,
                    "decided": now if isinstance(e, _DECISIONS) else None,
                }
                if e.request_id in new:
                    row = new[e.request_id]
                    row.update({k: v for k, v in change.items() if k != "decided" or v is not None})
                else:
                    changed.append(change | {"r": e.request_id})
        t = table["enrollments"]
        if changed:
            cur.executemany(sql.SQL(_UPDATE).format(table=t), changed)
        if new:
            cur.executemany(sql.SQL(_INSERT).format(table=t), list(new.values()))


def _row(
    e: EnrollmentRequested | RequestDeadLettered, status: str, reason: str | None, now: datetime
) -> dict[str, Any]:
    """The row a request starts with: pending, or set aside undecided."""
    return {
        "r": e.request_id,
        "c": e.course_id,
        "s": e.student_id,
        "p": e.priority,
        "status": status,
        "reason": reason,
        "at": e.requested_at,
        "decided": None,
        "now": now,
    }
