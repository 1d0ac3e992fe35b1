"""The event log is the source of truth: no event skipped, and every read model equals a replay."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import msgspec
import psycopg
from starlette.testclient import TestClient

from courseflow import events
from courseflow.domain import CourseState, Pending, StreamId, decide
from courseflow.events import CourseCreated, EnrollmentGranted, EnrollmentRequested, QueuedRequest
from courseflow.eventstore import store
from courseflow.eventstore.eventlog import START, EventLog
from courseflow.platform.config import Settings
from projections import PROJECTIONS
from projections.projector import Projector
from projections.rebuild import differences, rebuild
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, wait_decided, wait_projected, wait_until

READ_MODEL_TABLES = [t for p in PROJECTIONS.values() for t in p.tables]


def snapshot(db: Conn) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in READ_MODEL_TABLES}


def random_workload(client: TestClient, db: Conn, seed: int) -> None:
    """Enrollments, drops, waitlist exits and capacity changes over three courses."""
    rng = random.Random(seed)
    for course_id in (1, 2, 3):
        create_course(client, course_id, rng.randint(1, 4))
    requests = [
        enroll(client, rng.randint(1, 15), rng.randint(1, 3), rng.choice([0, 50]), key=f"k{n}")["request_id"]
        for n in range(40)
    ]
    wait_decided(db, 40)
    for request_id in rng.sample(requests, 12):
        assert client.delete(f"/api/v1/enrollments/{request_id}").status_code in (200, 409)
    for course_id in (1, 2, 3):
        assert client.patch(f"/api/v1/courses/{course_id}", json={"capacity": rng.randint(0, 6)}).status_code == 200
    wait_projected(db)


def test_rebuild_equals_the_live_read_models_table_by_table(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    start_workers(2)
    random_workload(client, db, seed=5)
    live = snapshot(db)
    assert all(live.values()), "the workload must leave rows in every read model"
    assert differences(settings.postgres.url) == dict.fromkeys(READ_MODEL_TABLES, 0)
    with db.cursor() as cur:
        end = EventLog(cur).end()
    assert rebuild(settings.postgres.owner_url) == end
    assert snapshot(db) == live


def test_differences_finds_a_tampered_read_model(client: TestClient, db: Conn, settings: Settings) -> None:
    create_course(client, 1, 3)
    wait_projected(db)
    db.execute("UPDATE course_seats SET seats_taken = 2")
    assert differences(settings.postgres.url)["course_seats"] == 2
    rebuild(settings.postgres.owner_url, ["course_seats"])
    assert differences(settings.postgres.url, ["course_seats"]) == {"course_seats": 0}


def test_rebuild_while_serving(client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers) -> None:
    """Enrollments keep flowing during the rebuild; afterwards the live projector continues from the switch."""
    start_workers(2)
    create_course(client, 1, 50)
    stop = threading.Event()
    sent = 0

    def keep_enrolling() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 400:
            enroll(client, sent + 1, 1, priority=sent % 3)
            sent += 1

    flow = threading.Thread(target=keep_enrolling)
    flow.start()
    try:
        wait_until(lambda: sent >= 50, what="enrollments to flow")
        rebuild(settings.postgres.owner_url)
        rebuild(settings.postgres.owner_url, ["waitlists"])
    finally:
        stop.set()
        flow.join()
    wait_decided(db, sent)
    assert differences(settings.postgres.url) == dict.fromkeys(READ_MODEL_TABLES, 0)
    seats = db.execute("SELECT seats_taken, waitlist_length FROM course_seats").fetchone()
    assert seats == (min(50, sent), max(0, sent - 50))


def test_no_event_is_skipped_by_a_running_projector(settings: Settings, db: Conn, projector: Projector) -> None:
    """Many writers whose transactions commit in a different order than they took positions."""
    writers, each = 8, 25

    def write(writer: int) -> None:
        rng = random.Random(writer)
        with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
            for n in range(each):
                course_id = writer * 1000 + n + 1
                with conn.transaction(), conn.cursor() as cur:
                    created = CourseCreated(course_id=course_id, title="", capacity=1)
                    store.append(cur, [store.Appended(store.course_stream(course_id), 0, [created], [b"{}"])])
                    # Hold the transaction open a little after taking a position, as a slow commit would.
                    cur.execute("SELECT pg_sleep(%s)", (rng.random() * 0.004,))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_projected(db)
    (projected,) = db.execute("SELECT count(*) FROM course_seats").fetchone()  # type: ignore[misc]
    assert projected == writers * each


def test_decisions_recorded_before_they_carried_their_request_project_as_those_after(
    client: TestClient, db: Conn, settings: Settings
) -> None:
    """Before sql/007 a decision followed its request's EnrollmentRequested event; the log keeps both kinds."""
    create_course(client, 1, 2)
    asked = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def request(n: int) -> EnrollmentRequested:
        return EnrollmentRequested(
            course_id=1,
            request_id=f"00000000-0000-4000-8000-00000000000{n}",
            student_id=n,
            idempotency_key=f"k{n}",
            priority=n,
            requested_at=asked,
        )

    def decision(kind: str, n: int, **fields: object) -> dict[str, object]:
        """A decision as recorded before sql/007: its request's fields were in the event before it."""
        return {"type": kind, "course_id": 1, "request_id": request(n).request_id, "student_id": n, **fields}

    # The new way: the decision alone, carrying its request; the course has one seat left by then.
    queued = QueuedRequest(**msgspec.structs.asdict(request(3)))
    (carried,), _ = decide(CourseState(course_id=1, capacity=2, seats_taken=1), [Pending(queued, StreamId(9, 0))])
    assert isinstance(carried, EnrollmentGranted)
    logged: list[bytes] = [
        events.encode(request(1)),
        msgspec.json.encode(decision("EnrollmentGranted", 1, priority=1)),
        events.encode(carried),
        events.encode(request(2)),  # the old way again, after a new one: replay reads each the way it was written
        msgspec.json.encode(decision("Waitlisted", 2, priority=2, arrival="8-0")),
    ]
    with db.transaction(), db.cursor() as cur:
        for version, data in enumerate(logged, start=2):
            cur.execute(
                "INSERT INTO events (stream, stream_version, type, data) VALUES (%s, %s, %s, %s)",
                (store.course_stream(1), version, msgspec.json.decode(data)["type"], data.decode()),
            )
        cur.execute("UPDATE courses SET seats_taken = 2, waitlist_length = 1, version = 6 WHERE course_id = 1")
    wait_projected(db)

    rows = db.execute(
        "SELECT student_id, priority, status, requested_at, decided_at IS NOT NULL FROM enrollments ORDER BY student_id"
    ).fetchall()
    assert rows == [(1, 1, "granted", asked, True), (2, 2, "waitlisted", asked, True), (3, 3, "granted", asked, True)]
    counters = db.execute("SELECT requested, granted, waitlisted FROM enrollment_counters").fetchone()
    assert counters == (3, 2, 1)
    assert db.execute("SELECT student_id, arrival_ms FROM waitlist_entries").fetchall() == [(2, 8)]
    assert db.execute("SELECT seats_taken, waitlist_length FROM course_seats").fetchone() == (2, 1)
    assert differences(settings.postgres.url) == dict.fromkeys(READ_MODEL_TABLES, 0)
    with db.cursor() as cur:  # a page of one event at a time never cuts a pair, nor shows the request alone
        log, after, paged = EventLog(cur), START, list[str]()
        while page := log.read(after, 1, stream=store.course_stream(1)):
            paged, after = paged + [type(r.event).__name__ for r in page], page[-1].checkpoint
    assert paged == ["CourseCreated", "EnrollmentGranted", "EnrollmentGranted", "Waitlisted"]
    history = client.get("/api/v1/courses/1/events").json()["events"]
    # A registrar reads each request whole, carried by its decision, the old ones too.
    assert [e["data"].get("idempotency_key") for e in history] == [None, "k1", "k3", "k2"]
