"""The event log's reader: concurrent appends, and no event skipped however late it commits."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from starlette.testclient import TestClient

from courseflow import check, events
from courseflow.events import CourseCreated, EnrollmentRequested, Event
from courseflow.eventstore import migrations, store
from courseflow.eventstore.eventlog import START, Checkpoint, EventLog, Recorded, Tail
from courseflow.platform.config import Settings
from projections import timeline
from projections.feed import Feed
from projections.projector import Projector, read_checkpoints
from tests.conftest import Servers
from tests.helpers import Conn, wait_until


def _append(conn: Conn, stream: str, version: int, event: Event) -> None:
    """Append in the connection's transaction, left open (the connection is not in autocommit)."""
    with conn.cursor() as cur:
        store.append(cur, [store.Appended(stream, version, [event], [b"{}"])])


def _create(conn: Conn, course_id: int) -> None:
    _append(conn, store.course_stream(course_id), 0, CourseCreated(course_id=course_id, title="", capacity=1))


def _insert(conn: Conn, course_id: int, txid: int | None = None) -> None:
    """A course's creation as a plain INSERT, as under the schema before 005, or with a transaction id given."""
    data = events.encode(CourseCreated(course_id=course_id, title="", capacity=1)).decode()
    columns, values = "stream, stream_version, type, data", "%s, 1, 'CourseCreated', %s"
    if txid is None:
        conn.execute(f"INSERT INTO events ({columns}) VALUES ({values})", (store.course_stream(course_id), data))
    else:
        conn.execute(
            f"INSERT INTO events (txid, {columns}) VALUES (%s::xid8, {values})",
            (str(txid), store.course_stream(course_id), data),
        )


def _projected(db: Conn) -> list[int]:
    return [row[0] for row in db.execute("SELECT course_id FROM course_seats ORDER BY course_id")]


def _positions(recorded: list[Recorded]) -> list[int]:
    return [r.position for r in recorded]


def test_an_event_committed_late_is_read_by_no_reader_until_it_can_no_longer_be_overtaken(
    settings: Settings, db: Conn
) -> None:
    """Transaction A appends and stays open; B appends after it and commits. Nobody may read B before A."""
    projector = Projector(settings.postgres.url)  # stepped by hand
    # B's append must not wait for A's COMMIT (no global append lock): a wait fails it rather than hanging.
    impatient = "-c lock_timeout=5s"
    with (
        psycopg.connect(settings.postgres.url) as first,
        psycopg.connect(settings.postgres.url, options=impatient) as second,
    ):
        _create(first, 1)
        _create(second, 2)
        second.commit()
        assert projector.step(db) == 0
        assert _projected(db) == []
        assert timeline.read_after(db, 0, 10) == []
        tail = timeline.follow(db, START, 10)
        assert (tail.events, tail.unread) == ([], True)
        first.commit()
    assert projector.step(db) == 2 * len(projector.projections)  # both events, into every read model
    assert _projected(db) == [1, 2]
    assert projector.step(db) == 0  # each applied exactly once
    assert _positions(timeline.read_after(db, 0, 10)) == [1, 2]
    assert timeline.follow(db, START, 10).unread is False


def test_the_log_is_read_in_transaction_order_and_paged_by_event_id(client: TestClient, settings: Settings) -> None:
    """A transaction that began first but appended last is read first: a page resumes after its event's place."""
    now = datetime.now(UTC)

    def requested(course_id: int) -> EnrollmentRequested:
        return EnrollmentRequested(
            course_id=course_id,
            request_id=str(uuid.uuid4()),
            student_id=7,
            idempotency_key=f"k{course_id}",
            priority=0,
            requested_at=now,
        )

    with psycopg.connect(settings.postgres.url) as early, psycopg.connect(settings.postgres.url) as late:
        early.execute("SELECT pg_current_xact_id()")  # its transaction id is taken now, before the other's
        _append(late, store.course_stream(1), 1, requested(1))
        late.commit()
        _append(early, store.course_stream(2), 1, requested(2))
        early.commit()
    first = client.get("/api/v1/students/7/events?limit=1").json()
    assert [(e["stream"], e["position"]) for e in first["events"]] == [("course-2", 2)]
    rest = client.get(f"/api/v1/students/7/events?after={first['next_after']}").json()
    assert [(e["stream"], e["position"]) for e in rest["events"]] == [("course-1", 1)]
    assert rest["next_after"] is None
    # An id past the end of the log reads nothing, as before.
    assert client.get("/api/v1/students/7/events?after=99").json()["events"] == []


def _transaction_id_only(conn: Conn) -> None:
    """Open a transaction that holds back the log's readers but will end without appending (no NOTIFY)."""
    conn.execute("SELECT pg_current_xact_id()")


def test_transaction_ids_are_ordered_as_numbers(db: Conn) -> None:
    """Transaction ids are read as text: the log must still put 9 before 10, as the numbers they are."""
    _insert(db, 1, txid=10)
    _insert(db, 2, txid=9)
    with db.cursor() as cur:
        log = EventLog(cur)
        assert [(r.txid, r.position) for r in log.read(START, 10)] == [(9, 2), (10, 1)]
        assert log.end() == Checkpoint(10, 1)
        assert _positions(log.read(Checkpoint(9, 2), 10)) == [1]


def test_check_names_a_log_ahead_of_the_servers_transaction_ids(settings: Settings, db: Conn) -> None:
    """A dump restored into a new cluster: the server's transaction ids start below the log's."""
    _insert(db, 1)
    assert _finding(settings).ok
    _insert(db, 2, txid=2**40)
    finding = _finding(settings)
    assert not finding.ok and "pg_resetwal --epoch" in finding.detail


def _finding(settings: Settings) -> check.Finding:
    (found,) = [f for f in check.run(settings) if f.check == "the log's transaction ids are behind the server's"]
    return found


class CountingSteps(Projector):
    """A projector that counts the steps it began, so a test can wait for one that began after a commit."""

    began = 0

    def step(self, conn: Conn) -> int:
        self.began += 1
        return super().step(conn)


def test_the_projector_looks_again_when_an_older_transaction_ends_without_a_notify(settings: Settings) -> None:
    # Its idle wait is far longer than the deadline below: only looking again soon delivers in time.
    projector = CountingSteps(settings.postgres.url)
    thread = threading.Thread(target=projector.run, kwargs={"idle_wait_s": 120}, daemon=True)
    thread.start()
    try:
        with psycopg.connect(settings.postgres.url, autocommit=True) as db:
            with psycopg.connect(settings.postgres.url) as older, psycopg.connect(settings.postgres.url) as writer:
                _transaction_id_only(older)
                _create(writer, 1)
                writer.commit()
                mark = projector.began
                wait_until(lambda: projector.began > mark, what="a step that finds the course held back")
                older.commit()
            wait_until(lambda: _projected(db) == [1], timeout=10, what="the course to be projected")
    finally:
        projector.stop.set()
        with psycopg.connect(settings.postgres.url, autocommit=True) as db:
            db.execute("SELECT pg_notify(%s, '')", (store.NOTIFY_CHANNEL,))  # it waits for one to see the stop
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_live_feed_delivers_a_late_commit_in_log_order_and_looks_again_without_a_notify(
    settings: Settings,
) -> None:
    started = [0]
    finished: list[tuple[int, Tail]] = []  # (which read, what it found), each numbered when it began
    with psycopg.connect(settings.postgres.url, autocommit=True) as reader:
        one_at_a_time = threading.Lock()

        def follow(after: Checkpoint, limit: int) -> Tail:
            with one_at_a_time:
                started[0] += 1
                number = started[0]
                tail = timeline.follow(reader, after, limit)
                finished.append((number, tail))
                return tail

        async def read(after: Checkpoint, limit: int) -> Tail:
            return await asyncio.to_thread(follow, after, limit)

        async def a_read_since(mark: int) -> None:
            """Wait for a read that began after `mark` and found events held back."""
            await _until(lambda: any(n > mark and tail.unread for n, tail in finished), "a later read")

        async def scenario() -> None:
            # Its idle wait is far longer than the deadlines below: only a NOTIFY or looking again soon delivers.
            feed = Feed(settings.postgres.url, read, idle_s=120)
            await feed.start()
            try:
                assert await feed.started() == START
                course_1, course_2 = feed.subscribe(course_id=1), feed.subscribe(course_id=2)
                with psycopg.connect(settings.postgres.url) as first, psycopg.connect(settings.postgres.url) as second:
                    _create(first, 1)
                    _create(second, 2)
                    second.commit()
                    await a_read_since(started[0])
                    assert feed.position == START  # B's event is not dispatched while A is open
                    first.commit()
                got = [await asyncio.wait_for(sub.next(), 10) for sub in (course_1, course_2)]
                assert [r.position for r in got if isinstance(r, Recorded)] == [1, 2]
                # An older transaction that appends nothing, so sends no NOTIFY, holds the next event back.
                with psycopg.connect(settings.postgres.url) as older, psycopg.connect(settings.postgres.url) as w:
                    _transaction_id_only(older)
                    _append(w, store.course_stream(1), 2, CourseCreated(course_id=1, title="again", capacity=1))
                    w.commit()
                    await a_read_since(started[0])
                    older.commit()
                again = await asyncio.wait_for(course_1.next(), 10)  # the next one: nothing was sent twice
                assert isinstance(again, Recorded) and again.position == 3
            finally:
                await feed.stop()

        asyncio.run(scenario())


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_live_feed_reads_no_event_while_nobody_follows_and_every_one_once_somebody_does(
    settings: Settings,
) -> None:
    limits: list[int] = []
    with psycopg.connect(settings.postgres.url, autocommit=True) as reader:

        async def read(after: Checkpoint, limit: int) -> Tail:
            limits.append(limit)
            return await asyncio.to_thread(timeline.follow, reader, after, limit)

        async def scenario() -> None:
            feed = Feed(settings.postgres.url, read, idle_s=120)
            await feed.start()
            try:
                assert await feed.started() == START
                with psycopg.connect(settings.postgres.url) as writer:
                    _create(writer, 1)
                await _until(lambda: feed.position is not None and feed.position.position == 1, "the feed at the end")
                assert set(limits) == {0}  # nobody follows anything: no event was read
                sub = feed.subscribe(course_id=2)
                with psycopg.connect(settings.postgres.url) as writer:
                    _create(writer, 2)
                got = await asyncio.wait_for(sub.next(), 10)
                assert isinstance(got, Recorded) and got.position == 2
                assert set(limits) > {0}
            finally:
                await feed.stop()

        asyncio.run(scenario())


def test_events_from_before_the_migration_come_first_and_old_checkpoints_keep_their_meaning(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    """Events appended under the old global lock get transaction id 0: in position order, before every new one."""
    url = _fresh_database(servers, settings, "courseflow_log_upgrade")
    before = tmp_path / "sql"
    before.mkdir()
    for path in migrations.migration_files()[:4]:
        (before / path.name).write_text(path.read_text())
    migrations.migrate(url, before)
    with psycopg.connect(url, autocommit=True) as old:
        for course_id in (1, 2, 3):
            _insert(old, course_id)
        old.execute("UPDATE projection_checkpoints SET position = 2")
    migrations.migrate(url)
    with psycopg.connect(url) as conn:
        _create(conn, 4)
        conn.commit()
        with conn.cursor() as cur:
            log = EventLog(cur)
            assert [(r.txid, r.position) for r in log.read(START, 10)][:3] == [(0, 1), (0, 2), (0, 3)]
            saved = read_checkpoints(cur, ["course_seats"], lock=False)["course_seats"]
            assert saved == Checkpoint(0, 2)
            assert _positions(log.read(saved, 10)) == [3, 4]


def _fresh_database(servers: Servers, settings: Settings, name: str) -> str:
    """An empty database owned by the application's user; returns its URL."""
    owner = conninfo_to_dict(settings.postgres.url)["user"]
    with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f'CREATE DATABASE {name} OWNER "{owner}"')
    return settings.postgres.url.rsplit("/", 1)[0] + f"/{name}"
