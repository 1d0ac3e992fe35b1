"""Priorities are the server's: a registrar grants a student one; the student's requests take it."""

from __future__ import annotations

import msgspec

from courseflow.events import StudentPriorityChanged
from courseflow.eventstore import store
from courseflow.platform.library import Grant


def student_stream(student_id: int) -> str:
    return f"student-{student_id}"


class Granted(msgspec.Struct, frozen=True):
    student_id: int
    priority: int
    previous: int
    # The student stream's version after the grant: intake keeps the newest.
    version: int


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
    return Granted(student_id=student_id, priority=priority, previous=previous, version=version)


def granted(conn: store.Conn, within_s: float | None = None) -> list[Grant]:
    """Every grant, or those changed in the last `within_s` seconds."""
    rows = conn.execute(
        "SELECT student_id, priority, version FROM student_priorities WHERE version > 0"
        " AND (%(s)s::float8 IS NULL OR updated_at > now() - make_interval(secs => %(s)s))",
        {"s": within_s},
    ).fetchall()
    return [Grant(student, priority, version) for student, priority, version in rows]


def of(conn: store.Conn, student_id: int) -> int:
    row = conn.execute("SELECT priority FROM student_priorities WHERE student_id = %s", (student_id,)).fetchone()
    return int(row[0]) if row else 0
