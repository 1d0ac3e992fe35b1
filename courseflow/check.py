"""`courseflow check`: the invariants, verified on a live deployment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import msgspec
import psycopg

from courseflow.eventstore import partition_count
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
        return [
            _accepted_requests_accounted_for(db, rds, keys),
            _one_decision_each(db),
            _seats_match_the_events(db),
            _capacity_respected(db),
            _waitlists_match_the_events(db),
            _transaction_ids_in_the_past(db),
            _read_models_equal_replay(settings),
        ]


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


_SEATS_FROM_EVENTS = """
SELECT c.course_id, c.capacity, c.seats_taken, coalesce(s.seats_taken, -1),
       count(*) FILTER (WHERE e.type IN ('EnrollmentGranted', 'WaitlistPromoted'))
       - count(*) FILTER (WHERE e.type = 'EnrollmentDropped') AS from_events,
       c.waitlist_length, coalesce(s.waitlist_length, -1),
       count(*) FILTER (WHERE e.type = 'Waitlisted')
       - count(*) FILTER (WHERE e.type IN ('WaitlistPromoted', 'WaitlistLeft')) AS waiting_from_events
FROM courses c
LEFT JOIN course_seats s USING (course_id)
LEFT JOIN events e ON e.stream = 'course-' || c.course_id
GROUP BY c.course_id, s.seats_taken, s.waitlist_length ORDER BY c.course_id
"""


def _seats_match_the_events(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    """seats = granted + promoted - dropped, the same in the write model, the read model and the events."""
    wrong = [
        f"course {cid}: events say {derived}, write model {seats}, read model {projected}"
        for cid, _, seats, projected, derived, *_ in db.execute(_SEATS_FROM_EVENTS)
        if not seats == projected == derived
    ]
    return Finding("seats = granted - dropped", not wrong, "; ".join(wrong[:5]) or "all courses agree")


def _waitlists_match_the_events(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    wrong = [
        f"course {row[0]}: events say {row[7]}, write model {row[5]}, read model {row[6]}"
        for row in db.execute(_SEATS_FROM_EVENTS)
        if not row[5] == row[6] == row[7]
    ]
    return Finding("waitlist = waitlisted - promoted - left", not wrong, "; ".join(wrong[:5]) or "all courses agree")


def _capacity_respected(db: psycopg.Connection[tuple[object, ...]]) -> Finding:
    """Over capacity only after capacity was lowered below the seats, with no grant since.

    Positions order one course's events: they are appended under its row lock."""
    over = db.execute(
        "SELECT c.course_id, c.seats_taken, c.capacity FROM courses c WHERE c.seats_taken > c.capacity AND EXISTS ("
        " SELECT 1 FROM events g WHERE g.stream = 'course-' || c.course_id"
        " AND g.type IN ('EnrollmentGranted', 'WaitlistPromoted') AND g.position > coalesce(("
        "  SELECT max(position) FROM events x WHERE x.stream = g.stream AND x.type = 'CapacityChanged'), 0))"
    ).fetchall()
    detail = "; ".join(f"course {cid}: {seats} seats > capacity {cap}" for cid, seats, cap in over[:5])
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
