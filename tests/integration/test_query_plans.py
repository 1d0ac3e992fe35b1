"""The hot path's lookups probe their indexes on tables that grew since their last analyze (a fresh database in
its first minutes, before autovacuum's first pass): a plan that scans the table costs every round more as the
table grows, and a crowd's decisions then fall further behind each second."""

from __future__ import annotations

from courseflow.eventstore import store
from courseflow.eventstore.eventlog import Checkpoint, EventLog
from tests.helpers import Conn

ROWS = 5000


def _fill(db: Conn) -> None:
    """ROWS decisions and their request rows, written at once and never analyzed."""
    db.execute(
        "INSERT INTO events (stream, stream_version, type, data)"
        " SELECT 'course-1', n, 'Waitlisted', jsonb_build_object('request_id', gen_random_uuid()::text,"
        " 'student_id', n, 'course_id', 1) FROM generate_series(1, %s) AS n",
        (ROWS,),
    )
    db.execute(
        "INSERT INTO enrollment_requests (request_id, course_id, student_id, idempotency_key, priority, arrival_ms,"
        " arrival_seq, requested_at, status)"
        " SELECT gen_random_uuid(), 1, n, 'k' || n, 0, n, 0, now(), 'waitlisted' FROM generate_series(1, %s) AS n",
        (ROWS,),
    )


def _scans(db: Conn, table: str) -> int:
    """Sequential scans of `table` in the current transaction, not yet flushed to the cumulative statistics."""
    row = db.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = %s", (table,)).fetchone()
    return int(row[0]) if row else 0


def test_following_the_log_and_finding_holders_scan_no_table(db: Conn) -> None:
    _fill(db)
    last = db.execute("SELECT txid::text, position FROM events ORDER BY position DESC LIMIT 1").fetchone()
    assert last is not None
    with db.transaction(), db.cursor() as cur:
        log = EventLog(cur)
        assert not log.unread_after(Checkpoint(int(last[0]), last[1]))
        assert log.unread_after(Checkpoint(int(last[0]), last[1] - 1))
        assert log.checkpoint_after(last[1] + 1) is None
        assert store.holders(cur, {(1, ROWS - 1), (1, ROWS + 1)}) == {store.Holder(course_id=1, student_id=ROWS - 1)}
        assert _scans(db, "events") == 0
        assert _scans(db, "enrollment_requests") == 0
