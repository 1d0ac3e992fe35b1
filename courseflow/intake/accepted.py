"""Intake's count of accepted requests, which `courseflow check` holds against what was decided."""

from __future__ import annotations

from typing import cast

import psycopg

from courseflow.platform.keys import Keys
from courseflow.platform.redis_clients import SyncRedis


def start_counting(db: psycopg.Connection[tuple[object, ...]], rds: SyncRedis, keys: Keys) -> None:
    """Give intake's count of accepted requests a starting point where it has none (a first start, or Redis
    restored without it): every request known so far, each counted in its course's partition. Should intake
    count meanwhile, its count wins: that can only make the check miss a loss, never report a false one."""
    if all(rds.exists(p.accepted) for p in keys.all()):
        return
    # A request pending and decided at once (settled a moment later) counts once: a set per partition.
    known = {p.accepted: {k.decode() for k in cast(list[bytes], rds.hkeys(p.pending_index))} for p in keys.all()}
    for course_id, request_id in db.execute(
        "SELECT course_id, request_id::text FROM enrollment_requests"
        " UNION SELECT (data ->> 'course_id')::bigint, data ->> 'request_id' FROM events"
        " WHERE type = 'RequestDeadLettered' AND data ? 'request_id' AND data ? 'course_id'"
    ):
        known[keys.of_course(int(cast(int, course_id))).accepted].add(str(request_id))
    for key, ids in known.items():
        rds.set(key, len(ids), nx=True)
