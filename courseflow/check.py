"""`courseflow check`: the invariants, verified on a live deployment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import msgspec
import psycopg

from courseflow.domain import MAX_ID, CourseState, created, evolve
from courseflow.events import CourseCreated, CourseEvent
from courseflow.eventstore import partition_count
from courseflow.eventstore.eventlog import START, EventLog
from courseflow.eventstore.store import DECISIONS
from courseflow.platform import redis_clients
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from courseflow.platform.redis_clients import SyncRedis
from projections.rebuild import differences


class Finding(msgspec.Struct, frozen=True):
    check: str
    ok: bool
    detail: str


def run(settings: Settings) -> list[Finding]:
    keys = Keys(settings.queue.prefix, settings.queue.partitions)
    with (
        psycopg.connect(settings.postgres.url, autocommit=True) as db,
        redis_clients.connect(settings) as rds,
    ):
        partition_count.verify(db, keys.partitions)  # another count would read the wrong keys and report nonsense
        accounted = _accepted_requests_accounted_for(db, rds, keys)
        counts = _counts(db)
        return [
            accounted,
            _one_decision_each(db),
            _seats_match_the_events(counts),
            _capacity_respected(counts),
            _waitlists_match_the_events(counts),
            _transaction_ids_in_the_past(db),
            _ids_within_the_safe_bound(db),
            _read_models_equal_replay(settings),
        ]


def _ids_within_the_safe_bound(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    """No course or student id beyond MAX_ID: written before the bound was enforced, a client would round it (and
    the API cannot address it). Such rows need renumbering by hand."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM courses WHERE course_id > %(most)s),"
        " (SELECT count(*) FROM enrollment_requests WHERE student_id > %(most)s OR course_id > %(most)s)",
        {"most": MAX_ID},
    ).fetchone()
    courses, requests = cast(tuple[int, int], row)
    detail = f"{courses} courses and {requests} requests name an id beyond {MAX_ID}"
    return Finding("every id is a safe integer (at most 2^53 - 1)", not courses and not requests, detail)


def _accepted_requests_accounted_for(db: psycopg.Connection[tuple[object, ...]], rds: SyncRedis, keys: Keys) -> Finding:
    """Every request that got a 202 is decided, pending, or dead-lettered.

    Exact whatever idempotency keys expired: intake counts every request it queues. The count is read
    first, so a request accepted meanwhile can only be seen as accounted for, never as lost.
    """
    accepted = sum(int(cast(bytes | None, rds.get(p.accepted)) or 0) for p in keys.all())
    remembered = set(_accepted_ids(rds, keys))
    pending, decided, dead = _accounted(db, rds, keys)
    accounted = pending | decided | dead
    lost = max(0, accepted - len(accounted))
    missing = remembered - accounted
    detail = f"{accepted} accepted: {len(decided)} decided, {len(pending)} pending, {len(dead)} dead-lettered"
    if lost or missing:
        detail += f"; {max(lost, len(missing))} LOST" + (f", e.g. {sorted(missing)[:5]}" if missing else "")
    return Finding("every accepted request is decided or pending", not lost and not missing, detail)


def _accounted(
    db: psycopg.Connection[tuple[object, ...]], rds: SyncRedis, keys: Keys
) -> tuple[set[str], set[str], set[str]]:
    """Request ids pending, decided and dead-lettered, read in the order a request moves through them."""
    pending = {k.decode() for p in keys.all() for k in cast(list[bytes], rds.hkeys(p.pending_index))}
    decided = {str(r[0]) for r in db.execute("SELECT request_id::text FROM enrollment_requests")}
    dead = {
        str(r[0])
        for r in db.execute(
            "SELECT data ->> 'request_id' FROM events WHERE type = 'RequestDeadLettered' AND data ? 'request_id'"
        )
    }
    return pending, decided, dead


def _accepted_ids(rds: SyncRedis, keys: Keys) -> Iterator[str]:
    """Requests queued recently enough that their marker is still held (markers expire after IDEMPOTENCY_TTL)."""
    for partition in keys.all():
        prefix = partition.queued("")
        for key in rds.scan_iter(match=f"{prefix}*", count=1000):
            yield (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) :]


def _one_decision_each(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    twice = db.execute(
        f"SELECT data ->> 'request_id' FROM events WHERE type IN {DECISIONS} GROUP BY 1 HAVING count(*) > 1"
    ).fetchall()
    (total,) = db.execute(f"SELECT count(*) FROM events WHERE type IN {DECISIONS}").fetchone() or (0,)
    detail = f"{total} decisions" + (f"; decided more than once: {[r[0] for r in twice[:5]]}" if twice else "")
    return Finding("no request is decided twice", not twice, detail)


class _Replayed(msgspec.Struct):
    """A course as its events leave it, and whether a seat was taken since its capacity last changed."""

    state: CourseState
    seats_taken_since_capacity: bool = False


def _replay_courses(db: psycopg.Connection[tuple[object, ...]]) -> dict[int, _Replayed]:
    """Every course as `domain.evolve` leaves it after the whole log: the one rule of what an event does."""
    courses: dict[int, _Replayed] = {}
    after = START
    with db.cursor() as cur:
        log = EventLog(cur)
        while page := log.read(after, _PAGE):
            after = page[-1].checkpoint
            for recorded in page:
                event = recorded.event
                if isinstance(event, CourseCreated):
                    courses[event.course_id] = _Replayed(created(event))
                elif isinstance(event, CourseEvent) and (course := courses.get(event.course_id)) is not None:
                    before, course.state = course.state, evolve(course.state, event)
                    if course.state.capacity != before.capacity:
                        course.seats_taken_since_capacity = False
                    elif course.state.seats_taken > before.seats_taken:
                        course.seats_taken_since_capacity = True
    return courses


_PAGE = 5000


class _Counts(msgspec.Struct, frozen=True):
    """One course's seats and waitlist as the write model, the read model and the events have them."""

    course_id: int
    capacity: int
    seats: int
    projected_seats: int
    waitlist: int
    projected_waitlist: int
    replayed: _Replayed | None

    @property
    def replayed_seats(self) -> int:
        return -1 if self.replayed is None else self.replayed.state.seats_taken

    @property
    def replayed_waitlist(self) -> int:
        return -1 if self.replayed is None else self.replayed.state.waitlist_length


def _counts(db: psycopg.Connection[tuple[object, ...]]) -> list[_Counts]:
    replayed = _replay_courses(db)
    rows = db.execute(
        "SELECT c.course_id, c.capacity, c.seats_taken, coalesce(s.seats_taken, -1), c.waitlist_length,"
        " coalesce(s.waitlist_length, -1) FROM courses c LEFT JOIN course_seats s USING (course_id)"
        " ORDER BY c.course_id"
    ).fetchall()
    return [_Counts(*cast(tuple[int, int, int, int, int, int], row), replayed.get(cast(int, row[0]))) for row in rows]


def _seats_match_the_events(counts: list[_Counts]) -> Finding:
    """seats = granted + promoted - dropped, the same in the write model, the read model and the events."""
    wrong = [
        f"course {c.course_id}: events say {c.replayed_seats}, write model {c.seats}, read model {c.projected_seats}"
        for c in counts
        if not c.seats == c.projected_seats == c.replayed_seats
    ]
    return Finding("seats = granted - dropped", not wrong, "; ".join(wrong[:5]) or "all courses agree")


def _waitlists_match_the_events(counts: list[_Counts]) -> Finding:
    wrong = [
        f"course {c.course_id}: events say {c.replayed_waitlist}, write model {c.waitlist},"
        f" read model {c.projected_waitlist}"
        for c in counts
        if not c.waitlist == c.projected_waitlist == c.replayed_waitlist
    ]
    return Finding("waitlist = waitlisted - promoted - left", not wrong, "; ".join(wrong[:5]) or "all courses agree")


def _capacity_respected(counts: list[_Counts]) -> Finding:
    """Over capacity only after capacity was lowered below the seats, with no seat taken since."""
    over = [
        c for c in counts if c.seats > c.capacity and c.replayed is not None and c.replayed.seats_taken_since_capacity
    ]
    detail = "; ".join(f"course {c.course_id}: {c.seats} seats > capacity {c.capacity}" for c in over[:5])
    return Finding("no course over capacity", not over, detail or "every course within capacity")


def _transaction_ids_in_the_past(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    """Every event's transaction id is below the server's next one: else readers, which follow the log in
    transaction id order, would never reach what is appended now (a dump restored into a new cluster)."""
    row = db.execute(
        "SELECT txid::text, pg_snapshot_xmax(pg_current_snapshot())::text FROM events ORDER BY events.txid DESC LIMIT 1"
    ).fetchone()
    ahead = row is not None and int(str(row[0])) >= int(str(row[1]))
    detail = (
        f"the log holds transaction id {row[0]}, the server is at {row[1]}: new events would sort before it;"
        " raise the server's transaction id epoch (pg_resetwal --epoch) above the log's"
        if ahead and row is not None
        else "every event sorts before what is appended now"
    )
    return Finding("the log's transaction ids are behind the server's", not ahead, detail)


def _read_models_equal_replay(settings: Settings) -> Finding:
    diff = {table: n for table, n in differences(settings.postgres.url).items() if n}
    detail = ", ".join(f"{table}: {n} rows differ" for table, n in diff.items()) or "all read models match"
    return Finding("read models = replay of the events", not diff, detail)


def report(findings: list[Finding]) -> str:
    return "\n".join(f"{'ok  ' if f.ok else 'FAIL'}  {f.check}: {f.detail}" for f in findings)
