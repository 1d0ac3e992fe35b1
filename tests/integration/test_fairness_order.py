"""The fairness order's three forms agree: the Python key, the real Redis priority set filled through the real
library function, and the SQL ORDER BY on a real table, for random sets of (priority, arrival) requests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, cast

import hypothesis
import psycopg
import redis
from hypothesis import given
from hypothesis import strategies as st

from courseflow import events, fairness
from courseflow.events import EnrollmentRequested
from courseflow.intake.accept import around_priority
from courseflow.intake.queue import parse_member
from courseflow.platform.config import Settings
from courseflow.platform.functions import Functions
from courseflow.platform.keys import Keys
from courseflow.platform.library import QueueRequest

COURSE = 1
# A stream id's sequence number is 64 bits: one past this rolls over into the next millisecond, sequence 0.
_LAST_SEQ = 2**64 - 1

# Arrivals ahead of the server's clock (so the stream's `*` ids are ours to choose), drawn mostly from a few
# values so that ties on priority and on the arrival's millisecond are common, and crossing the digit counts
# where a wrong zero-padding would show.
_ms = st.one_of(
    st.sampled_from([9_999_999_999_999, 10**13, 10**13 + 1, 99_999_999_999_999, 10**14, 10**15 - 1]),
    st.integers(2 * 10**12, 10**15 - 1),
)
_seq = st.one_of(st.sampled_from([0, 1, 9, 10, 99, 100, 10**9]), st.integers(0, 10**10 - 1))
_priority = st.one_of(st.integers(0, 2), st.integers(0, 100))
_ranks = st.lists(
    st.builds(fairness.Rank, priority=_priority, arrival_ms=_ms, arrival_seq=_seq),
    min_size=1,
    max_size=12,
    unique_by=lambda rank: (rank.arrival_ms, rank.arrival_seq),
)
_prefixes = (f"fairness{n}" for n in itertools.count())


def redis_order(rds: redis.Redis, ranks: list[fairness.Rank]) -> list[fairness.Rank]:
    """Queue each request through the library's `queue_request`, the stream's next id set to its arrival."""
    keys = Keys(next(_prefixes)).of_course(COURSE)
    rds.sadd(keys.courses, COURSE)
    rds.xadd(keys.requests, {"x": "y"}, id="0-1")
    functions = Functions(rds)
    # Streams only grow: requests go in in arrival order, whatever order they are decided in.
    for n, rank in enumerate(sorted(ranks, key=lambda r: (r.arrival_ms, r.arrival_seq))):
        before = (rank.arrival_ms, rank.arrival_seq - 1) if rank.arrival_seq else (rank.arrival_ms - 1, _LAST_SEQ)
        rds.execute_command("XSETID", keys.requests, f"{before[0]}-{before[1]}")  # type: ignore[no-untyped-call]
        request_id = f"00000000-0000-4000-8000-{n:012d}"
        request = EnrollmentRequested(
            course_id=COURSE,
            request_id=request_id,
            student_id=n + 1,
            idempotency_key=f"k{n}",
            priority=0,
            requested_at=datetime.now(UTC),
        )
        head, tail = around_priority(events.encode(request))
        queued = functions(
            QueueRequest(
                courses=keys.courses,
                queued_marker=keys.queued(request_id),
                requests=keys.requests,
                priority_set=keys.priority_set(COURSE),
                pending_index=keys.pending_index,
                granted_priorities=keys.priorities,
                accepted_counter=keys.accepted,
                request_id=request_id,
                before_priority=head,
                after_priority=tail,
                priority=rank.priority,
                course_id=COURSE,
                marker_ttl_s=0,
                student_id=n + 1,
            )
        )
        assert queued.outcome == "queued"
    ordered: list[fairness.Rank] = []
    for member, score in cast(list[tuple[bytes, float]], rds.zrange(keys.priority_set(COURSE), 0, -1, withscores=True)):
        pending = parse_member(member)
        rank = fairness.Rank(pending.request.priority, pending.arrival.ms, pending.arrival.seq)
        # Encoded as fairness.py's encoder has it.
        assert score == fairness.score(rank.priority)
        assert member.startswith(fairness.member_prefix(rank.arrival_ms, rank.arrival_seq))
        ordered.append(rank)
    return ordered


def sql_order(db: psycopg.Connection[tuple[Any, ...]], ranks: list[fairness.Rank]) -> list[fairness.Rank]:
    """The ORDER BY every waitlist query uses, on a table shaped like the waitlist's own."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS ranked (LIKE waitlist_entries)")
    db.execute("TRUNCATE ranked")
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO ranked (request_id, course_id, student_id, priority, arrival_ms, arrival_seq)"
            " VALUES (gen_random_uuid(), 1, 1, %s, %s, %s)",
            ranks,
        )
    query = f"SELECT priority, arrival_ms, arrival_seq FROM ranked ORDER BY {fairness.order_by()}"
    ordered = [fairness.Rank(*row) for row in db.execute(query)]
    # The row comparison that numbers waitlist places puts each exactly where the ORDER BY does.
    places = db.execute(
        f"SELECT (SELECT count(*) FROM ranked o WHERE {fairness.row('o')} < {fairness.row('w')})"
        f" FROM ranked w ORDER BY {fairness.order_by('w')}"
    ).fetchall()
    assert [place for (place,) in places] == list(range(len(ranks)))
    return ordered


def test_python_redis_and_sql_order_requests_alike(settings: Settings, rds: redis.Redis) -> None:
    with psycopg.connect(settings.postgres.url, autocommit=True) as db:

        @given(ranks=_ranks)
        @hypothesis.settings(max_examples=40, deadline=None)
        def agree(ranks: list[fairness.Rank]) -> None:
            expected = sorted(ranks, key=fairness.sort_key)
            assert redis_order(rds, ranks) == expected
            assert sql_order(db, ranks) == expected

        agree()
