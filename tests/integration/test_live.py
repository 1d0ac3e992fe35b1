"""Live status: SSE and WebSocket streams from a real API process, resumed by log position, fanned out by one feed."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import courseflow_local as services
import httpx2 as httpx
import msgspec
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from courseflow.platform.config import Settings
from projections.feed import APPLICATION_NAME
from projections.projector import Projector
from tests.conftest import Servers, StartWorkers, serving_api
from tests.helpers import wait_until
from tests.trust import SECRET, bearer, secured

LATER = "2100-01-01T00:00:00Z"
STREAM = {"Accept": "text/event-stream"}


class Received(msgspec.Struct, frozen=True):
    type: str
    id: int
    data: dict[str, Any]


class Sse:
    """The messages of one SSE response, each awaited with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 15.0) -> Received:
        return await asyncio.wait_for(self._read(), timeout)

    async def _read(self) -> Received:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line.startswith(":"):
                continue  # a keep-alive comment
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif "event" in fields:
                return Received(fields["event"], int(fields["id"]), json.loads(fields["data"]))
        raise EOFError("the stream ended")

    async def until(self, wanted: str, timeout: float = 15.0) -> Received:
        while (message := await self.next(timeout)).type != wanted:
            pass
        return message


@asynccontextmanager
async def sse(http: httpx.AsyncClient, path: str, **headers: str) -> AsyncIterator[Sse]:
    async with http.stream("GET", path, headers=STREAM | headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Sse(response)


async def frame(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return found


def ws_url(base: str, query: str) -> str:
    return base.replace("http://", "ws://") + "/api/v1/ws?" + query


async def new_course(http: httpx.AsyncClient, course_id: int, capacity: int, opens_at: str | None = None) -> None:
    created = await http.post(
        "/api/v1/courses", json={"course_id": course_id, "capacity": capacity, "title": "Course", "opens_at": opens_at}
    )
    assert created.status_code == 201, created.text


async def enroll(http: httpx.AsyncClient, student_id: int, course_id: int, **headers: str) -> str:
    body = {"student_id": student_id, "course_id": course_id, "idempotency_key": f"s{student_id}-c{course_id}"}
    accepted = await http.post("/api/v1/enrollments", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["request_id"])


async def open_now(http: httpx.AsyncClient, course_id: int) -> None:
    assert (await http.patch(f"/api/v1/courses/{course_id}", json={"opens_at": None})).status_code == 200


def test_a_request_is_pushed_from_pending_to_granted(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            opens_at = datetime.now(UTC) + timedelta(seconds=3)
            await new_course(http, 1, 1, opens_at.isoformat())
            request_id = await enroll(http, 7, 1)
            async with sse(http, f"/api/v1/enrollments/{request_id}/events") as stream:
                first = await stream.next()
                assert (first.type, first.id, first.data["status"], first.data["queue_position"]) == (
                    "status",
                    0,
                    "pending",
                    1,
                )
                granted = await stream.next()
                assert (granted.type, granted.data["status"], granted.data["request_id"]) == (
                    "granted",
                    "granted",
                    request_id,
                )
                assert "queue_position" not in granted.data and granted.id > 0
                assert datetime.fromisoformat(granted.data["decided_at"]) >= opens_at

    asyncio.run(scenario())


def test_waitlisted_then_promoted_live_and_a_resume_gets_exactly_what_was_missed(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            first, second, third = [await enroll(http, s, 1) for s in (1, 2, 3)]
            async with sse(http, f"/api/v1/enrollments/{second}/events") as seconds:
                async with sse(http, f"/api/v1/enrollments/{third}/events") as thirds:
                    assert [(await s.next()).data["status"] for s in (seconds, thirds)] == ["pending", "pending"]
                    await open_now(http, 1)
                    assert (await seconds.next()).data["waitlist_position"] == 1
                    waitlisted = await thirds.next()
                    assert (waitlisted.type, waitlisted.data["waitlist_position"]) == ("waitlisted", 2)
                # third's stream is closed: its promotion below happens while it is away.
                assert (await http.delete(f"/api/v1/enrollments/{first}")).json()["status"] == "dropped"
                promoted = await seconds.next()
                assert (promoted.type, promoted.data["status"], promoted.data["request_id"]) == (
                    "promoted",
                    "granted",
                    second,
                )
            await http.delete(f"/api/v1/enrollments/{second}")
            resumed = {"Last-Event-ID": str(waitlisted.id)}
            async with sse(http, f"/api/v1/enrollments/{third}/events", **resumed) as thirds:
                missed = await thirds.next()
                assert (missed.type, missed.data["status"], missed.data["request_id"]) == ("promoted", "granted", third)
                await http.delete(f"/api/v1/enrollments/{third}")
                # Live again, and the promotion is not repeated.
                dropped = await thirds.next()
                assert (dropped.type, dropped.data["status"]) == ("dropped", "dropped")
            page = (await http.get(f"/api/v1/enrollments/{third}/events")).json()
            assert [(e["type"], e["position"]) for e in page["events"]] == [
                ("Waitlisted", waitlisted.id),
                ("WaitlistPromoted", missed.id),
                ("EnrollmentDropped", dropped.id),
            ]

    asyncio.run(scenario())


def test_a_last_event_id_that_is_no_position_is_a_400_naming_it(api_server: str, projector: Projector) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            request_id = await enroll(http, 1, 1)
            for bad in (b"x", b"\xb3", b"-1", b"9" * 5000):
                headers = [(b"Accept", b"text/event-stream"), (b"Last-Event-ID", bad)]
                unreadable = await http.get(f"/api/v1/enrollments/{request_id}/events", headers=headers)
                assert (unreadable.status_code, unreadable.json()["field"]) == (400, "Last-Event-ID"), bad[:8]

    asyncio.run(scenario())


def test_a_last_event_id_past_the_end_of_the_log_starts_afresh(api_server: str, projector: Projector) -> None:
    """A log restored from a backup: the stream starts again from the status, never silently."""

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            request_id = await enroll(http, 1, 1)
            past = {"Last-Event-ID": "999999999"}
            async with sse(http, f"/api/v1/enrollments/{request_id}/events", **past) as fresh:
                assert (await fresh.next()).type == "status"

    asyncio.run(scenario())


def test_a_waitlist_place_moves_up_live_when_someone_ahead_leaves(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            _, second, third = [await enroll(http, s, 1) for s in (1, 2, 3)]
            async with sse(http, f"/api/v1/enrollments/{third}/events") as thirds:
                assert (await thirds.next()).data["status"] == "pending"
                await open_now(http, 1)
                assert (await thirds.until("waitlisted")).data["waitlist_position"] == 2
                assert (await http.delete(f"/api/v1/enrollments/{second}")).json()["status"] == "left"
                moved = await thirds.next()
                assert (moved.type, moved.data["status"], moved.data["waitlist_position"]) == (
                    "waitlisted",
                    "waitlisted",
                    1,
                )
                assert (await http.get(f"/api/v1/enrollments/{third}")).json()["waitlist_position"] == 1

    asyncio.run(scenario())


def test_a_registrar_follows_a_course_its_events_and_counts(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            mine = await enroll(http, 1, 1)
            # The feed has seen this log (tests empty it between them) once the request's stream pushes its decision.
            async with sse(http, f"/api/v1/enrollments/{mine}/events") as stream:
                await stream.next()
                await open_now(http, 1)
                await stream.until("granted")
            async with sse(http, "/api/v1/courses/1/events") as course:
                counts = await course.next()
                assert (counts.type, counts.data["seats_taken"], counts.data["queue_depth"]) == ("counts", 1, 0)
                await enroll(http, 2, 1)
                logged = [await course.until("event")]
                assert [m.data["event"]["type"] for m in logged] == ["Waitlisted"]
                assert [m.id for m in logged] == [m.data["event"]["position"] for m in logged]
                # Counts come every two seconds; the first read after the waitlisting shows it.
                while (later := await course.until("counts")).data["waitlist_length"] != 1:
                    pass
                assert later.id == logged[-1].id
            # Without the Accept header: the JSON history, unchanged.
            history = (await http.get("/api/v1/courses/1/events")).json()["events"]
            assert [e["position"] for e in history][-1:] == [m.id for m in logged]

    asyncio.run(scenario())


def test_a_websocket_pushes_the_same_messages_as_the_event_stream(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            first, second = [await enroll(http, s, 1) for s in (1, 2)]
            async with (
                sse(http, f"/api/v1/enrollments/{second}/events") as stream,
                connect(ws_url(api_server, f"request_id={second}"), proxy=None, open_timeout=10) as ws,
            ):
                pushed, framed = [await stream.next()], [await frame(ws)]
                await open_now(http, 1)
                pushed.append(await stream.next())
                framed.append(await frame(ws))
                await http.delete(f"/api/v1/enrollments/{first}")
                pushed.append(await stream.next())
                framed.append(await frame(ws))
            assert [m.type for m in pushed] == ["status", "waitlisted", "promoted"]
            assert framed == [m.data for m in pushed]
            assert all(f["type"] == m.type and f["id"] == m.id for f, m in zip(framed, pushed, strict=True))

    asyncio.run(scenario())


def test_a_websocket_replays_a_courses_log_from_a_position_then_its_counts(
    api_server: str, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            _, second = [await enroll(http, s, 1) for s in (1, 2)]
            async with sse(http, f"/api/v1/enrollments/{second}/events") as stream:
                await stream.next()
                await open_now(http, 1)
                await stream.until("waitlisted")
            history = (await http.get("/api/v1/courses/1/events")).json()["events"]
            # As a browser would send its token (auth is off here): the subprotocol is chosen, or browsers hang up.
            offered = [Subprotocol("bearer"), Subprotocol("a.token")]
            async with connect(
                ws_url(api_server, "course_id=1&after=0"), subprotocols=offered, proxy=None, open_timeout=10
            ) as ws:
                assert ws.subprotocol == "bearer"
                replayed = [await frame(ws) for _ in range(len(history) + 1)]
            # The course's whole log from position 0, then its counts as of the last.
            assert [f["event"] for f in replayed[:-1]] == history
            assert (replayed[-1]["type"], replayed[-1]["id"]) == ("counts", history[-1]["position"])

    asyncio.run(scenario())


def test_a_websocket_with_a_bad_query_gets_a_422_naming_the_field_then_a_1008_close(api_server: str) -> None:
    async def scenario() -> None:
        for query, field in (
            ("request_id=nope", "request_id"),
            ("after=3", "request_id"),
            ("course_id=0", "course_id"),
        ):
            async with connect(ws_url(api_server, query), proxy=None, open_timeout=10) as ws:
                refused = await frame(ws)
                assert (refused["type"], refused["status"], refused["field"]) == ("error", 422, field)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def secured_api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # No leeway and two streams per student: expiry and the share of streams are seen in seconds.
    env = {
        "AUTH_JWT_SECRET": SECRET,
        "RATE_LIMIT_REGISTRAR": "off",
        "AUTH_LEEWAY": "0",
        "LIVE_STREAMS_PER_STUDENT": "2",
    }
    with serving_api(servers, tmp_path_factory.mktemp("live"), **env) as base:
        yield base


def test_a_student_follows_only_their_own_requests_and_no_course(
    secured_api: str, settings: Settings, start_workers: StartWorkers
) -> None:
    trusted = secured(settings)
    registrar, service = bearer(trusted, "registrar", "reg-1"), bearer(trusted, "service", "sis")
    one, two = bearer(trusted, "student", 1), bearer(trusted, "student", 2)
    start_workers()

    async def refused(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> int:
        async with http.stream("GET", path, headers=STREAM | headers) as response:
            assert response.headers["content-type"] == "application/problem+json"
            return response.status_code

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=secured_api, timeout=10) as http:
            created = await http.post(
                "/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}, headers=registrar
            )
            assert created.status_code == 201
            mine = await enroll(http, 1, 1, **one)
            path = f"/api/v1/enrollments/{mine}/events"
            assert await refused(http, path, two) == 404
            assert (await http.get(path, headers=two)).status_code == 404
            for caller in (one, service, registrar):
                async with sse(http, path, **caller) as stream:
                    assert (await stream.next()).data["request_id"] == mine
            assert await refused(http, "/api/v1/courses/1/events", one) == 403
            assert (await http.get("/api/v1/courses/1/events", headers=one)).status_code == 200
            async with sse(http, "/api/v1/courses/1/events", **service) as stream:
                assert (await stream.next()).type == "counts"
            for query, caller, status in ((f"request_id={mine}", two, 404), ("course_id=1", one, 403)):
                async with connect(ws_url(secured_api, query), additional_headers=caller, proxy=None) as ws:
                    assert (await frame(ws))["status"] == status
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            # No token: the handshake is answered 401 with problem details, as any request would be.
            with pytest.raises(InvalidStatus) as denied:
                async with connect(ws_url(secured_api, f"request_id={mine}"), proxy=None, open_timeout=10):
                    pass
            assert denied.value.response.status_code == 401
            assert denied.value.response.headers["Content-Type"] == "application/problem+json"
            assert b'"urn:courseflow:problem:unauthorized"' in denied.value.response.body
            # A browser offers its token as the subprotocol after `bearer`; a forged one is refused the same way.
            token = one["Authorization"].removeprefix("Bearer ")
            offered = [Subprotocol("bearer"), Subprotocol(token)]
            async with connect(ws_url(secured_api, f"request_id={mine}"), subprotocols=offered, proxy=None) as ws:
                assert ws.subprotocol == "bearer"
                assert (await frame(ws))["request_id"] == mine
            forged = [Subprotocol("bearer"), Subprotocol(token[:-4] + "AAAA")]
            with pytest.raises(InvalidStatus):
                async with connect(ws_url(secured_api, f"request_id={mine}"), subprotocols=forged, proxy=None):
                    pass

    asyncio.run(scenario())


def test_a_student_holds_a_bounded_share_of_streams_each_ending_with_its_token(
    secured_api: str, settings: Settings
) -> None:
    trusted = secured(settings)
    registrar = bearer(trusted, "registrar", "reg-1")
    lasting, brief = bearer(trusted, "student", 5), bearer(trusted, "student", 5, ttl_s=3)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=secured_api, timeout=10) as http:
            created = await http.post(
                "/api/v1/courses",
                json={"course_id": 2, "capacity": 5, "title": "Course", "opens_at": LATER},
                headers=registrar,
            )
            assert created.status_code == 201
            mine = await enroll(http, 5, 2, **lasting)
            path = f"/api/v1/enrollments/{mine}/events"
            async with sse(http, path, **lasting) as one, sse(http, path, **brief) as two:
                assert (await one.next()).type == (await two.next()).type == "status"
                async with http.stream("GET", path, headers=STREAM | lasting) as third:
                    assert third.status_code == 429
                    assert third.headers["content-type"] == "application/problem+json"
                    assert "Retry-After" in third.headers
                # The token behind the second stream expires: the stream ends, asking for a new connection.
                ended = await two.until("reconnect", timeout=20)
                assert ended.data["reason"] == "expired"
                # Its place is free again.
                async with sse(http, path, **lasting) as again:
                    assert (await again.next()).type == "status"

    asyncio.run(scenario())


@contextmanager
def more_open_files() -> Iterator[None]:
    """A thousand streams need a thousand sockets on each side: the soft limit up to the hard one, for this test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _all_opened(opened: asyncio.Semaphore, count: int, streams: list[asyncio.Task[str]], timeout: float) -> None:
    """Wait for every stream's first message; a stream that fails first raises its own error, not a timeout."""

    async def acquire_all() -> None:
        for _ in range(count):
            await opened.acquire()

    waiting = asyncio.create_task(acquire_all())
    try:
        async with asyncio.timeout(timeout):
            while not waiting.done():
                await asyncio.wait([waiting, *streams], return_when=asyncio.FIRST_COMPLETED)
                for task in streams:
                    if task.done() and not waiting.done():
                        task.result()  # a stream that ended before every stream opened: its error, or the early end
                        raise AssertionError(f"a stream ended before every stream opened: {task.result()!r}")
    finally:
        waiting.cancel()


def test_a_thousand_followers_on_one_process_while_intake_keeps_serving(
    servers: Servers, start_workers: StartWorkers, projector: Projector, tmp_path: Path
) -> None:
    followers, requests, capacity = 1000, 100, 50
    # All of them from one address: more than the connections one address may hold by default.
    env = {"RATE_LIMIT_REGISTRAR": "off", "HTTP_CONNECTIONS_PER_ADDRESS": str(followers + 20)}
    with more_open_files(), serving_api(servers, tmp_path, **env) as base:
        start_workers()

        async def scenario() -> list[str]:
            limits = httpx.Limits(max_connections=followers + 10)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
                await new_course(http, 1, capacity, LATER)
                ids = [await enroll(http, s, 1) for s in range(1, requests + 1)]
                opened = asyncio.Semaphore(0)
                # Followers arrive fifty at a time, as a crowd does over a second or two; all thousand at one instant
                # on a loaded two-core machine outwait the connection pool and are (rightly) answered 503.
                arriving = asyncio.Semaphore(50)

                async def follow(request_id: str) -> str:
                    async with AsyncExitStack() as held:
                        async with arriving:
                            stream = await held.enter_async_context(
                                sse(http, f"/api/v1/enrollments/{request_id}/events")
                            )
                            first = await stream.next(timeout=60)
                        assert (first.type, first.data["status"]) == ("status", "pending")
                        opened.release()
                        return (await stream.next(timeout=60)).type

                streams = [asyncio.create_task(follow(ids[n % requests])) for n in range(followers)]
                try:
                    await _all_opened(opened, followers, streams, timeout=120)
                    # Every stream is open: intake still answers at once.
                    async with asyncio.timeout(5):
                        await enroll(http, requests + 1, 1)
                    await open_now(http, 1)
                    return await asyncio.wait_for(asyncio.gather(*streams), 60)
                finally:
                    for task in streams:
                        task.cancel()
                    await asyncio.gather(*streams, return_exceptions=True)

        outcomes = asyncio.run(scenario())
    per_follower = followers // requests
    assert outcomes.count("granted") == capacity * per_follower
    assert outcomes.count("waitlisted") == (requests - capacity) * per_follower


def test_sigterm_ends_open_streams_and_the_process_exits_promptly(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    port = services.free_port()
    env = os.environ | {"DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url, "SERVER_PORT": str(port)}
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "courseflow", "api"], env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: _healthy(base) or proc.poll() is not None, timeout=30, what="the API to start")

        async def scenario() -> float:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                await new_course(http, 1, 1, LATER)
                mine = await enroll(http, 1, 1)
                async with (
                    sse(http, f"/api/v1/enrollments/{mine}/events") as request,
                    sse(http, "/api/v1/courses/1/events") as course,
                    connect(ws_url(base, f"request_id={mine}"), proxy=None, open_timeout=10) as ws,
                ):
                    await request.next(), await course.next(), await frame(ws)
                    asked = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    for stream in (request, course):
                        assert (await stream.next(timeout=5)).data["reason"] == "shutdown"
                        with pytest.raises(EOFError):
                            await stream.next(timeout=5)
                    assert (await frame(ws, timeout=5))["reason"] == "shutdown"
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 5)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
                    return asked

        asked = asyncio.run(scenario())
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - asked < 5, "the server waited on its streams"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_feed_reconnects_and_misses_nothing_when_its_database_connection_drops(
    api_server: str, servers: Servers, start_workers: StartWorkers, projector: Projector
) -> None:
    start_workers()
    listening = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s",
        (APPLICATION_NAME, "%events%"),
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
            await new_course(http, 1, 1, LATER)
            mine = await enroll(http, 1, 1)
            async with sse(http, f"/api/v1/enrollments/{mine}/events") as stream:
                await stream.next()
                with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
                    before = {pid for (pid,) in admin.execute(*listening)}
                    assert before, "no live feed is listening"
                    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (list(before),))
                    # Decided while the feed is down or reconnecting: it catches up from its last position.
                    await open_now(http, 1)
                    assert (await stream.until("granted")).data["request_id"] == mine
                    wait_until(lambda: {pid for (pid,) in admin.execute(*listening)} - before, what="a new listener")

    asyncio.run(scenario())
