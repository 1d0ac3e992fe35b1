"""Live status over the wire: Server-Sent Events and WebSocket, and the same paths' JSON history.

With `Accept: text/event-stream` a request's or course's events path streams `live` messages (SSE
`Last-Event-ID` resumes); without it the path answers JSON history. `/api/v1/ws` sends the same
messages as JSON text frames (`after` resumes), and hears little: a client's messages are held to a size and a rate.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import anyio
import msgspec
from sse_starlette import EventSourceResponse
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from courseflow.domain import MAX_ID, Id
from courseflow.errors import DomainError
from courseflow.http import history
from courseflow.http.common import JSON, services
from courseflow.http.cooldown import flooded
from courseflow.http.gate import BEARER_SUBPROTOCOL, principal
from courseflow.http.operations import operation, path_params, plain_digits, query
from courseflow.http.payloads import After, CoursePath, Page, Params, RequestPath
from courseflow.http.problems import InvalidInput, Problem, Unavailable, from_domain
from courseflow.http.views import EventPage
from courseflow.platform.bucket import TokenBucket
from courseflow.platform.config import LimitsSettings
from projections import status
from projections.feed import Feed
from projections.live import OUTAGES, Following, open_course, open_request
from projections.messages import CourseMessage, Message, Reconnect, RequestMessage, StreamRefused

PING_S = 15
# A client that takes longer than this to accept one message is gone.
SEND_TIMEOUT_S = 30.0
_encoder = msgspec.json.Encoder()


def _feed(conn: HTTPConnection) -> Feed:
    found: Feed = conn.app.state.feed
    return found


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def _resume_after(request: Request) -> int | None:
    """Where a stream resumes: `Last-Event-ID` (an SSE client's reconnection), else `after` (which a browser's
    EventSource cannot put in a header); None: from the current status."""
    raw = request.headers.get("last-event-id", "").strip()
    if raw:
        position = int(plain_digits(raw, "Last-Event-ID", "header", status=400))
        if position > MAX_ID:
            raise InvalidInput("Last-Event-ID", f"must be a log position up to {MAX_ID}", 400, "header")
        return position
    return query(request, Page).after if "after" in request.query_params else None


class _Pushed(EventSourceResponse):
    """The SSE response of one subscription, which leaves the feed however the response ends (HEAD included)."""

    def __init__(self, following: Following) -> None:
        super().__init__(_sse(following.messages), ping=PING_S, send_timeout=SEND_TIMEOUT_S)
        self._sub = following.sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._sub.leave()


async def _sse(messages: AsyncIterator[Message]) -> AsyncIterator[bytes]:
    # One encoding per message, framed as is: msgspec's JSON has no raw line breaks to split into `data:` lines.
    async for message in messages:
        tag = str(type(message).__struct_config__.tag).encode()
        yield b"event: %s\r\nid: %d\r\ndata: %s\r\n\r\n" % (tag, message.id, _encoder.encode(message))


@operation(
    summary="A request's history, or its status live",
    tag="enrollments",
    description="JSON: the request's events, a page at a time. With `Accept: text/event-stream`: its status first, "
    "then a message per change as it commits and its queue place while pending; `Last-Event-ID` resumes. "
    "A student follows only their own requests; another's is 404.",
    path=RequestPath,
    query=Page,
    answers={200: EventPage},
    problems=(404,),
    streams=RequestMessage,
)
async def request_events(request: Request) -> Response:
    svc, caller = services(request), principal(request)
    request_id = str(path_params(request, RequestPath).request_id)
    if _wants_stream(request):
        return _Pushed(await open_request(svc, _feed(request), caller, request_id, _resume_after(request)))
    found = await status.owned(svc, caller, request_id)
    return JSON(await history.page(request, student_id=found.student_id, request_id=request_id))


@operation(
    summary="A course's event history, or its events live",
    tag="history",
    description="JSON: every event of the course in log order, a page at a time; other students' ids and request "
    "ids reach registrars only. With `Accept: text/event-stream` (registrars and services only): the course's "
    "counts, then each event as it commits and the counts as they change; `Last-Event-ID` resumes.",
    path=CoursePath,
    query=Page,
    answers={200: EventPage},
    problems=(403, 404),
    streams=CourseMessage,
)
async def course_events(request: Request) -> Response:
    if not _wants_stream(request):
        return await history.course_events(request)
    course_id = path_params(request, CoursePath).course_id
    caller = principal(request)
    caller.require("registrar", "service")
    following = await open_course(services(request), _feed(request), caller, course_id, _resume_after(request))
    return _Pushed(following)


class Follow(Params, frozen=True, kw_only=True):
    """What a WebSocket follows: one request or one course, from the start or after a position."""

    request_id: uuid.UUID | None = None
    course_id: Id | None = None
    after: After | None = None


async def follow(websocket: WebSocket) -> None:
    """`/api/v1/ws?request_id=…` or `?course_id=…` (`&after=…` resumes): the SSE messages as JSON text frames."""
    # A browser that offered the token as a subprotocol must hear it chosen, or it drops the socket.
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in offered else None)
    try:
        try:
            following = await _open(websocket)
        except DomainError as exc:
            raise from_domain(exc) from None
    except Problem as problem:
        refused = StreamRefused(
            status=problem.status_code, title=problem.title, detail=problem.detail, field=problem.field
        )
        reason = f"{problem.title}: {problem.detail}".encode()[:120].decode(errors="ignore")
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may be gone already
            await websocket.send_text(_encoder.encode(refused).decode())
            await websocket.close(1013 if problem.status_code >= 500 else 1008, reason)
        return
    try:
        await push(websocket, following.messages, Inbound(services(websocket).settings.limits))
    finally:
        following.sub.leave()


async def _open(websocket: WebSocket) -> Following:
    wanted = query(websocket, Follow)
    if (wanted.request_id is None) == (wanted.course_id is None):
        raise InvalidInput("request_id", "or course_id: give exactly one of them", location="query")
    svc, caller, feed = services(websocket), principal(websocket), _feed(websocket)
    try:
        if wanted.request_id is not None:
            return await open_request(svc, feed, caller, str(wanted.request_id), wanted.after)
        assert wanted.course_id is not None
        caller.require("registrar", "service")
        return await open_course(svc, feed, caller, wanted.course_id, wanted.after)
    except OUTAGES:
        raise Unavailable("a server live status needs is unreachable; retry shortly") from None


class Inbound:
    """What a client may send on a live socket: nothing it needs to, so small messages, a few a second.

    A refusal is a close code (1009: too big, 1008: too many) and its reason."""

    def __init__(self, limits: LimitsSettings) -> None:
        self.most_bytes = limits.ws_message_bytes
        self.rate = limits.ws_messages_per_s
        self._bucket = TokenBucket(limits.ws_messages_per_s, limits.ws_message_burst)

    def refusal(self, message: Mapping[str, object]) -> tuple[int, str] | None:
        data = message.get("bytes")
        text = message.get("text")
        size = len(data) if isinstance(data, bytes) else len(text.encode()) if isinstance(text, str) else 0
        if size > self.most_bytes:
            return 1009, f"message too big: at most {self.most_bytes} bytes"
        if not self._bucket.take():
            return 1008, f"too many messages: at most {self.rate:g} a second"
        return None


async def push(websocket: WebSocket, messages: AsyncGenerator[Message, None], inbound: Inbound) -> None:
    """Send `messages` until they end, the client goes or breaks `inbound`'s bounds; then close as each asks."""
    last: Message | None = None
    refused: tuple[int, str] | None = None
    async with contextlib.aclosing(messages), anyio.create_task_group() as group:

        async def until_gone() -> None:
            nonlocal refused
            # Read one message at a time, and none after a refusal: a flooding client is not read on.
            while refused is None:
                received = await websocket.receive()
                if received["type"] == "websocket.disconnect":
                    break
                refused = inbound.refusal(received)
                if refused is not None:
                    flooded(websocket.scope)  # before the close: a flooder reconnecting at once is refused
            group.cancel_scope.cancel()

        group.start_soon(until_gone)
        # A client too slow to take a message, or gone mid-send: its stream ends here, quietly.
        with contextlib.suppress(TimeoutError, WebSocketDisconnect):
            async for message in messages:
                with anyio.fail_after(SEND_TIMEOUT_S):
                    await websocket.send_text(_encoder.encode(message).decode())
                last = message
        group.cancel_scope.cancel()
    if refused is not None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may be gone already
            await websocket.close(*refused)
        return
    if isinstance(last, Reconnect) and websocket.application_state == WebSocketState.CONNECTED:
        # 1012: the server restarts; 1008: the token expired (policy); 1013: try again later (it fell behind, or
        # a server it needs is down).
        code = {"shutdown": 1012, "rewound": 1012, "expired": 1008}.get(last.reason, 1013)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close(code, f"reconnect after {last.id}")
