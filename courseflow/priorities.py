"""Priorities are the server's: a registrar grants a student one; the student's requests take it."""

from __future__ import annotations

import msgspec

from courseflow import store
from courseflow.events import StudentPriorityChanged


def student_stream(student_id: int) -> str:
    return f"student-{student_id}"


class Granted(msgspec.Struct, frozen=True):
    student_id: int
    priority: int
    previous: int


def grant(cur: store.Cursor, student_id: int, priority: int, actor: str) -> Granted:
    """Record a student's priority and its StudentPriorityChanged event; setting the same value again records nothing.

    Call inside a transaction: the row stays locked until COMMIT, so concurrent grants apply one after the other.
    """
    # Insert-then-lock: two first grants for one student cannot both insert.
    cur.execute(
        "INSERT INTO student_priorities (student_id, priority) VALUES (%s, 0) ON CONFLICT DO NOTHING", (student_id,)
    )
    cur.execute("SELECT priority, version FROM student_priorities WHERE student_id = %s FOR UPDATE", (student_id,))
    row = cur.fetchone()
    assert row is not None
    previous, version = row
    if previous != priority:
        changed = StudentPriorityChanged(student_id=student_id, priority=priority, previous=previous)
        metadata = msgspec.json.encode({"actor": actor})
        (version,) = store.append(cur, [store.Appended(student_stream(student_id), version, [changed], [metadata])])
        cur.execute(
            "UPDATE student_priorities SET priority = %s, version = %s, updated_at = now() WHERE student_id = %s",
            (priority, version, student_id),
        )
    return Granted(student_id=student_id, priority=priority, previous=previous)


def granted(conn: store.Conn) -> dict[int, int]:
    """Every student's granted priority (those never set are 0 and not listed)."""
    return dict(conn.execute("SELECT student_id, priority FROM student_priorities WHERE priority > 0").fetchall())


def of(conn: store.Conn, student_id: int) -> int:
    row = conn.execute("SELECT priority FROM student_priorities WHERE student_id = %s", (student_id,)).fetchone()
    return int(row[0]) if row else 0
