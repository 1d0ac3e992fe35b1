"""When users see a decision: the read models behind GET /api/v1/metrics, and each request's own status.

A worker's commit is not yet what a student sees: the seat counts and waitlists are the projector's read
models. Only the API is asked here, never the event log, so the measure holds whatever the events look like.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import msgspec

from tests.bench.procs import BenchError, wait_until
from tests.bench.stack import Server, Stack

# Short against a drain of a second or more; each poll is a few milliseconds of API and PostgreSQL time.
INTERVAL_S = 0.01
# The requests accepted last, whose status endpoint must show them decided too.
LAST_REQUESTS = 10


class Shown(msgspec.Struct, frozen=True):
    """The part of GET /api/v1/metrics that says what is decided: pending requests, seats and waitlist places."""

    queue_depth: int
    seats_taken: int
    waitlist_length: int
    projection_lag: int
    courses: list[dict[str, object]]


class _Status(msgspec.Struct, frozen=True):
    status: str


class Visible(msgspec.Struct, frozen=True):
    """What the API showed when every decision had become visible."""

    epoch: float
    holding: int
    # The last requests whose status endpoint answered decided.
    checked: int
    polls: int
    # How long one poll took on average: the resolution of the measure.
    poll_ms: float


def _shown(api: Server) -> Shown:
    status, body = api.get("/api/v1/metrics")
    if status != 200:
        raise BenchError(f"GET /api/v1/metrics: {status} {body!r}")
    return msgspec.json.decode(body, type=Shown)


def _decided(api: Server, request_id: str) -> bool:
    status, body = api.get(f"/api/v1/enrollments/{request_id}")
    if status != 200:
        raise BenchError(f"GET /api/v1/enrollments/{request_id}: {status} {body!r}")
    return msgspec.json.decode(body, type=_Status).status != "pending"


def wait_projected(api: Server, courses: int, timeout: float = 60.0) -> None:
    """Until the read models list every course and nothing is left to project: the projector is up."""

    def ready() -> bool:
        shown = _shown(api)
        return len(shown.courses) >= courses and shown.projection_lag == 0

    wait_until(ready, timeout, "the projector to project the courses", INTERVAL_S)


def wait_visible(stack: Stack, api: Server, timeout: float) -> Visible:
    """Once the workers have committed every decision: poll until the API shows them all.

    Every bench request comes from its own student, so each decision holds a seat or a waitlist place unless
    rejected; the write model says how many hold one, and the read models must show that many, with nothing
    pending. The last requests accepted must answer decided on their status endpoint too: asked beside the
    metrics (a decided request never turns pending again), so that they add no round trips to the clock.
    """
    row = stack.db.execute(
        "SELECT count(*) FILTER (WHERE status IN ('granted', 'waitlisted')) FROM enrollment_requests"
    ).fetchone()
    holding = int(row[0]) if row else 0
    unseen = [
        str(r[0])
        for r in stack.db.execute(
            "SELECT request_id FROM enrollment_requests ORDER BY arrival_ms DESC, arrival_seq DESC LIMIT %s",
            (LAST_REQUESTS,),
        )
    ]
    checked = len(unseen)
    polls, polling_s = 0, 0.0
    shown: Shown | None = None

    def seen() -> bool:
        nonlocal polls, polling_s, shown, unseen
        for children in stack.live.values():
            for child in children:
                child.check_alive()
        started = time.monotonic()
        asked = pool.submit(_shown, api)
        answers = list(pool.map(partial(_decided, api), unseen))
        unseen = [request_id for request_id, done in zip(unseen, answers, strict=True) if not done]
        shown = asked.result()
        polls, polling_s = polls + 1, polling_s + time.monotonic() - started
        return not unseen and not shown.queue_depth and shown.seats_taken + shown.waitlist_length >= holding

    with ThreadPoolExecutor(LAST_REQUESTS + 1, thread_name_prefix="visibility") as pool:
        try:
            wait_until(seen, timeout, "the decisions to show through the API", INTERVAL_S)
        except BenchError as exc:
            last_shown = (
                "nothing"
                if shown is None
                else (
                    f"{shown.queue_depth} pending, {shown.seats_taken + shown.waitlist_length:,} seats and waitlist"
                    f" places, projection lag {shown.projection_lag}, {len(unseen)} of the last requests pending"
                )
            )
            expected = f"{holding:,} hold a seat or waitlist place"
            raise BenchError(f"{exc}: {expected}; the API last showed {last_shown}") from None
    return Visible(epoch=time.time(), holding=holding, checked=checked, polls=polls, poll_ms=polling_s / polls * 1000)
