"""Deciding pending requests: one PostgreSQL transaction decides many courses and many requests."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from courseflow.domain import STATUS_AFTER, StreamId, decide
from courseflow.events import QueuedRequest, decode_request
from courseflow.eventstore import store
from courseflow.intake import queue
from courseflow.intake.queue import REQUEST_FIELD
from courseflow.platform import tracing
from courseflow.platform.keys import Keys
from courseflow.platform.metrics import ACCEPT_TO_DECISION, DECISION_BATCH_SIZE, DECISION_TRANSACTION, DECISIONS
from courseflow.platform.redis_clients import SyncRedis


class Delivered(msgspec.Struct, frozen=True):
    """A stream entry read by a worker, decoded."""

    partition: int
    entry_id: bytes
    fields: dict[bytes, bytes]
    request: QueuedRequest
    member: bytes

    @classmethod
    def decode(cls, partition: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Delivered:
        """Raises Undecodable with the reason when the entry is not a request that can be decided."""
        payload = fields.get(REQUEST_FIELD)
        if payload is None:
            raise Undecodable("missing request field")
        try:
            request = decode_request(payload)
            return cls(partition, entry_id, fields, request, queue.member(StreamId.parse(entry_id), payload))
        except (msgspec.DecodeError, ValueError) as exc:
            raise Undecodable(f"undecodable: {exc}") from None


class Undecodable(Exception):
    pass


class Outcome(msgspec.Struct):
    """What transactions did with a batch, for the acknowledgements that follow their COMMIT."""

    # Priority-set members decided (now or before), per course.
    settled: dict[int, list[bytes]] = msgspec.field(default_factory=dict)
    # Their request ids, per course: they leave the pending index with them.
    settled_ids: dict[int, list[str]] = msgspec.field(default_factory=dict)
    decided: set[str] = msgspec.field(default_factory=set)
    # Accepted before registration opened: acknowledged, left in the priority set.
    deferred: set[str] = msgspec.field(default_factory=set)
    unknown: list[int] = msgspec.field(default_factory=list)
    # What the transaction recorded: observed by the metrics once it has committed.
    recorded: list[store.Decided] = msgspec.field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for course_id, members in other.settled.items():
            self.settled.setdefault(course_id, []).extend(members)
        for course_id, ids in other.settled_ids.items():
            self.settled_ids.setdefault(course_id, []).extend(ids)
        self.decided |= other.decided
        self.deferred |= other.deferred
        self.unknown += [cid for cid in other.unknown if cid not in self.unknown]
        self.recorded += other.recorded


class Decider:
    """Decides, for a worker named `name`, at most `limit` requests per transaction."""

    def __init__(self, client: SyncRedis, keys: Keys, name: str, limit: int) -> None:
        self.redis, self.keys, self.name, self.limit = client, keys, name, limit

    def decide_batch(self, pg: store.Conn, by_course: dict[int, list[Delivered]]) -> Outcome:
        """Decide everything pending in each course up to the last request of the batch, in rounds of at
        most `limit` decisions in all, each round one transaction over all the batch's courses. Returns which of
        the batch's requests are decided or deferred, and the unknown courses."""
        outcome = Outcome()
        batch_ids = {a.request.request_id for items in by_course.values() for a in items}
        remaining = dict(by_course)
        while remaining:
            done, incomplete = self._round(pg, remaining)
            # Settle as we go: each round's requests are out of the priority set before the next reads it.
            queue.settle(self.redis, self.keys, done.settled, done.settled_ids)
            # Keep only what the batch's acknowledgements need: a backlog decided ahead of the batch is not held
            # round after round (the worker's memory would grow with the backlog).
            outcome.add(Outcome(decided=done.decided & batch_ids, deferred=done.deferred, unknown=done.unknown))
            remaining = {cid: items for cid, items in remaining.items() if cid in incomplete}
        return outcome

    def _round(self, pg: store.Conn, by_course: dict[int, list[Delivered]]) -> tuple[Outcome, set[int]]:
        outcome = Outcome()
        now = datetime.now(UTC)
        began = time.perf_counter()
        # Traced as the PostgreSQL transaction it is, inside the worker's `process` span.
        commit = tracing.span(
            "commit decisions", attributes={"db.system.name": "postgresql", "courseflow.courses": len(by_course)}
        )
        with commit, pg.transaction(), pg.cursor() as cur:
            locked = store.lock_courses(cur, by_course)
            outcome.unknown = [cid for cid in by_course if cid not in locked]
            open_now: dict[int, Sequence[bytes]] = {}
            for course_id in sorted(set(by_course) & set(locked)):
                batch = by_course[course_id]
                if locked[course_id].state.is_open(now):
                    open_now[course_id] = [a.member for a in batch]
                else:
                    # The priority set keeps them, durably, until the opening; the stream entries are done.
                    store.set_backlog(cur, course_id, True)
                    outcome.deferred |= {a.request.request_id for a in batch}
            # Read after taking the locks: everything a previous holder decided is committed by now.
            prefixes = queue.pending_through(self.redis, self.keys, open_now, self.limit)
            incomplete = {course_id for course_id, prefix in prefixes.items() if not prefix.reaches_all}
            plans = [(locked[course_id], prefix.members) for course_id, prefix in prefixes.items()]
            also = [a.request.request_id for course, _ in plans for a in by_course[course.state.course_id]]
            outcome.add(self._decide(cur, plans, also))
        _observe(outcome.recorded, began)
        return outcome, incomplete

    def open_backlog(self, pg: store.Conn) -> int:
        """Decide the best-ranked requests of one course whose registration has opened; returns how many
        it took from the backlog, 0 when no course has one."""
        began = time.perf_counter()
        with pg.transaction(), pg.cursor() as cur:
            course = store.lock_opened_backlog(cur, datetime.now(UTC))
            if course is None:
                return 0
            raw = queue.top(self.redis, self.keys, course.state.course_id, self.limit)
            if len(raw) < self.limit:
                store.set_backlog(cur, course.state.course_id, False)
            outcome = self._decide(cur, [(course, raw)], [])
        _observe(outcome.recorded, began)
        queue.settle(self.redis, self.keys, outcome.settled, outcome.settled_ids)
        return len(raw)

    def _decide(
        self, cur: store.Cursor, plans: Sequence[tuple[store.LockedCourse, list[bytes]]], also: Sequence[str]
    ) -> Outcome:
        """Decide each course's members (best first) not decided yet. `decided` gets the ids now decided,
        those of `also` found decided before included."""
        parsed = [(course, [queue.parse_member(m) for m in raw]) for course, raw in plans]
        ids = [p.request.request_id for _, items in parsed for p in items]
        done = store.decided_requests(cur, [*ids, *also])
        fresh = [(course, [p for p in items if p.request.request_id not in done]) for course, items in parsed]
        held = store.holders(cur, {(c.state.course_id, p.request.student_id) for c, items in fresh for p in items})
        decided = []
        for course, items in fresh:
            students = frozenset(s for cid, s in held if cid == course.state.course_id)
            decisions, after = decide(msgspec.structs.replace(course.state, holders=students), items)
            if decisions:
                decided.append(store.Decided(course, after, items, decisions))
        if decided:
            store.record_decisions(cur, decided, self.name)
        return Outcome(
            settled={course.state.course_id: raw for course, raw in plans},
            settled_ids={course.state.course_id: [p.request.request_id for p in items] for course, items in parsed},
            decided=done | set(ids),
            recorded=decided,
        )


def _observe(recorded: Sequence[store.Decided], began: float) -> None:
    """After COMMIT: the transaction's time and size, each decision's outcome, and each request's wait since
    its 202 (the time in its stream id, stamped by Redis as it was accepted) or, for a request made before
    its course opened, since the opening: the wait for registration to open is nobody's latency."""
    if not recorded:
        return
    committed = time.time()
    DECISION_TRANSACTION.observe(time.perf_counter() - began)
    DECISION_BATCH_SIZE.observe(sum(len(d.decisions) for d in recorded))
    outcomes: Counter[str] = Counter()
    for d in recorded:
        opened = d.course.state.opens_at.timestamp() if d.course.state.opens_at is not None else 0.0
        arrival = {p.request.request_id: p.arrival for p in d.pending}
        for decision in d.decisions:
            outcomes[STATUS_AFTER[type(decision)]] += 1
            waited_since = max(arrival[decision.request_id].ms / 1000, opened)
            ACCEPT_TO_DECISION.observe(max(0.0, committed - waited_since))
    for status, count in outcomes.items():
        DECISIONS.labels(status).inc(count)
