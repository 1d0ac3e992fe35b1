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
    # Older versions (an A/B's base) list every course instead of counting them.
    course_count: int | None = None
    courses: list[dict[str, object]] = msgspec.field(default_factory=list)

    @property
    def known_courses(self) -> int:
        return self.course_count if self.course_count is not None else len(self.courses)


class _CourseShown(msgspec.Struct, frozen=True):
    queue_depth: int
    seats_taken: int
    waitlist_length: int


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
        return shown.known_courses >= courses and shown.projection_lag == 0

    wait_until(ready, timeout, "the projector to project the courses", INTERVAL_S)


def _course_shown(api: Server, course_id: int, holding: int) -> bool:
    """One course's figures (cheap: no projection lag, no latency percentiles): nothing pending, all held shown."""
    status, body = api.get(f"/api/v1/metrics?course_id={course_id}")
    if status != 200:
        raise BenchError(f"GET /api/v1/metrics?course_id={course_id}: {status} {body!r}")
    shown = msgspec.json.decode(body, type=_CourseShown)
    return not shown.queue_depth and shown.seats_taken + shown.waitlist_length >= holding


def wait_visible(stack: Stack, api: Server, timeout: float) -> Visible:
    """Once the workers have committed every decision: poll until the API shows them all.

    Every bench request comes from its own student, so each decision holds a seat or a waitlist place unless
    rejected; the write model says how many hold one in each course, and the read models must show that many,
    with nothing pending. While the projector is behind, one course at a time is asked (the first not yet
    shown complete; the rest at once when it is) with `?course_id=`: the whole metrics cost tens of
    milliseconds a call (projection lag, latency percentiles), which would slow the projector being measured
    and blur the clock. Then the whole GET /api/v1/metrics must show the totals, and the last requests
    accepted must answer decided on their status endpoint, asked beside it.
    """
    holding = {
        int(course_id): int(count)
        for course_id, count in stack.db.execute(
            "SELECT course_id, count(*) FILTER (WHERE status IN ('granted', 'waitlisted'))"
            " FROM enrollment_requests GROUP BY course_id ORDER BY course_id"
        )
    }
    unseen = [
        str(r[0])
        for r in stack.db.execute(
            "SELECT request_id FROM enrollment_requests ORDER BY arrival_ms DESC, arrival_seq DESC LIMIT %s",
            (LAST_REQUESTS,),
        )
    ]
    checked, waiting, total = len(unseen), list(holding), sum(holding.values())
    polls, polling_s = 0, 0.0
    shown: Shown | None = None
    # When each course had shown all its decisions, at each poll of the whole metrics from then on.
    shown_at: list[float] = []

    def incomplete(course_ids: list[int]) -> list[int]:
        """The courses that do not show all their decisions yet."""
        answers = pool.map(lambda c: _course_shown(api, c, holding[c]), course_ids)
        return [c for c, done in zip(course_ids, answers, strict=True) if not done]

    def seen() -> bool:
        nonlocal polls, polling_s, shown, unseen, waiting
        for children in stack.live.values():
            for child in children:
                child.check_alive()
        started = time.monotonic()
        polls += 1
        try:
            if waiting:
                if incomplete(waiting[:1]):
                    return False
                waiting = incomplete(waiting[1:])
                if waiting:
                    return False
            shown_at.append(time.time())
            asked = pool.submit(_shown, api)
            answers = list(pool.map(partial(_decided, api), unseen))
            unseen = [request_id for request_id, done in zip(unseen, answers, strict=True) if not done]
            shown = asked.result()
            return not unseen and not shown.queue_depth and shown.seats_taken + shown.waitlist_length >= total
        finally:
            polling_s += time.monotonic() - started

    with ThreadPoolExecutor(LAST_REQUESTS + 1, thread_name_prefix="visibility") as pool:
        try:
            wait_until(seen, timeout, "the decisions to show through the API", INTERVAL_S)
        except BenchError as exc:
            last_shown = (
                f"{len(waiting)} courses short of their decisions"
                if shown is None
                else (
                    f"{shown.queue_depth} pending, {shown.seats_taken + shown.waitlist_length:,} seats and waitlist"
                    f" places, projection lag {shown.projection_lag}, {len(unseen)} of the last requests pending"
                )
            )
            expected = f"{total:,} hold a seat or waitlist place"
            raise BenchError(f"{exc}: {expected}; the API last showed {last_shown}") from None
    # The whole metrics take tens of milliseconds to answer (what they count): when they confirm at once what
    # the courses showed, the decisions were visible from the courses' answer on.
    epoch = shown_at[0] if len(shown_at) == 1 else time.time()
    return Visible(epoch=epoch, holding=total, checked=checked, polls=polls, poll_ms=polling_s / polls * 1000)
