"""The connection's side of the door: bounded request heads, read and idle timeouts, connections per address.

uvicorn's HTTP parser keeps a request head of any size and waits forever for it or for a body, and accepts
any number of connections. `Guarded` is the asyncio protocol uvicorn serves with (`http=` takes one by name):
it measures each read before handing it on to uvicorn's own protocol, answers and closes a connection that
breaks a limit, and counts the connections of each client address. Limits are `HttpSettings`' fields.

uvicorn also queues every pipelined request it has parsed and reads on while answering them: here a request
is handed on only once the one before it is answered, the rest held (a read's worth) with reading paused.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
from collections.abc import Sequence
from typing import Any, Final, cast

import msgspec
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from courseflow.http.framing import ConnectionRefusal, Framing, HeadLimits, Phase
from courseflow.http.problems import MEDIA_TYPE, SECURITY_HEADERS, TYPE_PREFIX, ProblemDetails
from courseflow.http.uvicorn_adapter import on_response_complete
from courseflow.platform.config import HttpSettings, Settings

# What uvicorn passes to `Guarded`, and the address of a connection over a Unix socket (no peer address).
PROTOCOL: Final = "courseflow.http.door:Guarded"
_LOCAL: Final = "local"
# A body that has taken longer than the body timeout must keep up this rate (as Apache's mod_reqtimeout's MinRate):
# a byte every few seconds holds a connection for ever under a pause limit alone.
_BODY_MIN_RATE: Final = 500
# How long a connection turned away at the caps may take to read its answer, and how many may at once (beyond,
# they are closed at once: an attacker opening connections without end must not hold descriptors this way).
_LINGER_S: Final = 1.0
_LINGERING_MAX: Final = 256
# Pipelined requests held behind one not yet answered: past this, the client is sending without reading.
_HELD_MAX: Final = 1024 * 1024
_SECURITY: Final = "".join(f"{name.lower()}: {value}\r\n" for name, value in SECURITY_HEADERS.items())


class Door:
    """One server process's connections: how many each address holds, and how many in all."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.limits = HeadLimits(settings.max_request_line, settings.max_header_bytes, settings.max_headers)
        self.by_address: dict[str, int] = {}
        self.total = 0
        # Connections turned away whose answer is still being read (see `Guarded._turn_away`).
        self.lingering = 0
        # Upgraded connections belong to uvicorn's WebSocket protocol from then on: counted until seen closed.
        self.tunnels: dict[asyncio.BaseTransport, str] = {}

    def admit(self, address: str) -> ConnectionRefusal | None:
        held = self.by_address.get(address, 0)
        if (held >= self.settings.connections_per_address or self.total >= self.settings.max_connections) and (
            self.tunnels
        ):
            self._forget_closed_tunnels()
            held = self.by_address.get(address, 0)
        if held >= self.settings.connections_per_address:
            return ConnectionRefusal(
                429,
                "too_many_connections",
                f"this address has {held} connections open, the most one address may hold; close one and retry",
            )
        if self.total >= self.settings.max_connections:
            return ConnectionRefusal(503, "too_many_connections", "the server has as many connections open as it takes")
        self.by_address[address] = held + 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        held = self.by_address.pop(address) - 1
        if held:
            self.by_address[address] = held
        self.total -= 1

    def _forget_closed_tunnels(self) -> None:
        for transport, address in list(self.tunnels.items()):
            if transport.is_closing():
                del self.tunnels[transport]
                self.release(address)


@functools.cache
def door() -> Door:
    """This process's door (uvicorn's worker processes each build their own from the environment)."""
    return Door(Settings.from_env().http)


@functools.cache
def response(refusal: ConnectionRefusal) -> bytes:
    """The whole HTTP/1.1 response to a refusal, closing the connection, its body problem details."""
    status = refusal.status
    phrase = http.HTTPStatus(status).phrase
    details = ProblemDetails(type=TYPE_PREFIX + refusal.code, title=phrase, status=status, detail=refusal.detail)
    body = msgspec.json.encode(details)
    retry = "retry-after: 1\r\n" if status in (429, 503) else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n"
        f"{retry}{_SECURITY}cache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class Guarded(asyncio.Protocol):
    """uvicorn's HTTP protocol behind the door's limits; the arguments are those uvicorn gives any protocol."""

    def __init__(self, *, _loop: asyncio.AbstractEventLoop | None = None, **uvicorn: Any) -> None:
        self._inner = AutoHTTPProtocol(_loop=_loop, **uvicorn)  # type: ignore[call-arg]
        self._door = door()
        self._loop = _loop or asyncio.get_running_loop()
        self._framing = Framing(self._door.limits)
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None  # set once admitted
        self._timer: asyncio.TimerHandle | None = None
        # The phase and head the timer runs for; None: a new connection's first wait.
        self._timed: tuple[Phase, int] | None = None
        self._last_read = self._body_started = 0.0
        self._body_bytes = 0
        # Requests handed on and not yet answered (one at most), and those held behind it, one entry each.
        self._owed = 0
        self._held: collections.deque[bytearray] = collections.deque()
        self._held_bytes = 0
        # Runs while the transport's write buffer stays full: a client that reads no answers is closed.
        self._stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else _LOCAL
        refusal = self._door.admit(address)
        if refusal is not None:
            self._turn_away(transport, refusal)
            return
        self._address = address
        self._inner.connection_made(transport)
        on_response_complete(self._inner, self._answered)
        # Nothing sent at all is a head that never completes.
        self._timer = self._loop.call_later(self._door.settings.header_timeout_s, self._expired)

    def data_received(self, data: bytes) -> None:
        framing = self._framing
        if self._address is None:
            if self._framing.phase is Phase.TUNNEL:
                self._deliver(data, ())
            return  # turned away: what it sends meanwhile is dropped
        refusal = framing.feed(data)
        if refusal is not None:
            self._refuse(refusal)
            return
        phase = framing.phase
        timed = (phase, framing.heads)
        if phase is Phase.IDLE and self._timer is None:
            self._timed = timed  # the usual read, a whole request: nothing to time until the next one starts
        elif self._timed is None and timed == (Phase.HEAD, 0):
            self._timed = timed  # the first head's clock has run since the connection opened
        elif timed != self._timed:
            self._clock(timed)
        if phase is Phase.BODY:
            self._last_read = self._loop.time()
            self._body_bytes += len(data)
        if phase is Phase.TUNNEL:
            assert self._transport is not None
            self._door.tunnels[self._transport] = self._address
            self._address = None  # released when seen closed: this protocol hears no more of it
        self._deliver(data, framing.starts)

    def _deliver(self, data: bytes, starts: Sequence[int]) -> None:
        """Hand `data` on up to the start of a request that would wait behind an unanswered one; hold the rest,
        a request an entry, and stop reading until it is handed on."""
        held, cut = self._held, 0
        if not held:
            cut = len(data)
            for start in starts:
                if self._owed:
                    cut = start
                    break
                self._owed = 1
            if cut:
                self._inner.data_received(data[:cut] if cut < len(data) else data)
            if cut == len(data):
                return
            held.append(bytearray())
        position = cut
        for start in starts:
            if start > position:
                held[-1] += data[position:start]
                held.append(bytearray())
                position = start
        held[-1] += data[position:]
        self._held_bytes += len(data) - cut
        transport = self._transport
        assert transport is not None
        if self._held_bytes > _HELD_MAX:
            transport.close()  # reading resumed by another hand, and the client sends on regardless
        elif transport.is_reading():
            transport.pause_reading()

    def _answered(self) -> None:
        """A response is complete: hand on the next request held, if any."""
        self._owed = 0
        transport = self._transport
        if not self._held or transport is None or transport.is_closing():
            return
        request = self._held.popleft()
        self._held_bytes -= len(request)
        self._owed = 1
        if not self._held:
            # Resumed before handing on, so that a pause uvicorn makes for the request's body stands.
            transport.resume_reading()
        self._inner.data_received(bytes(request))

    def eof_received(self) -> bool | None:
        if self._address is None and self._framing.phase is not Phase.TUNNEL:
            return None  # turned away, and the client has read it: close
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._stalled is None:
            self._stalled = self._loop.call_later(self._door.settings.body_timeout_s, self._unread)
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        self._inner.resume_writing()

    def _unread(self) -> None:
        """Nothing written for as long as a body may pause: the client reads no answers. Dropped, unflushed."""
        self._stalled = None
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        self._held.clear()  # requests never handed on: no one is left to answer
        if self._address is None and self._framing.phase is not Phase.TUNNEL:
            self._door.lingering -= 1
            return  # turned away: neither counted nor handed on
        if self._address is not None:
            self._door.release(self._address)
            self._address = None
        self._inner.connection_lost(exc)

    def _clock(self, timed: tuple[Phase, int]) -> None:
        """Start the wait the phase allows: a head's, a body's between reads, or none (uvicorn's keep-alive)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed = timed
        settings = self._door.settings
        if timed[0] is Phase.HEAD:
            self._timer = self._loop.call_later(settings.header_timeout_s, self._expired)
        elif timed[0] is Phase.BODY:
            self._body_started, self._body_bytes = self._loop.time(), 0
            self._timer = self._loop.call_later(settings.body_timeout_s, self._expired)

    def _expired(self) -> None:
        self._timer = None
        transport, settings = self._transport, self._door.settings
        assert transport is not None
        if self._timed is None:
            transport.close()  # nothing was asked: no answer is owed
        elif self._timed[0] is Phase.HEAD and self._held:
            # Not read because it waits behind an unanswered request: no fault of the client's (yet).
            self._timer = self._loop.call_later(settings.header_timeout_s, self._expired)
        elif self._timed[0] is Phase.HEAD:
            self._refuse(
                ConnectionRefusal(408, "request_timeout", f"the headers took longer than {settings.header_timeout_s} s")
            )
        else:
            now, allowed = self._loop.time(), settings.body_timeout_s
            if not transport.is_reading():
                # Not read because the application has not taken the body yet: no fault of the client's.
                self._body_started = self._last_read = now
                self._body_bytes = 0
            # No pause longer than the timeout, and past it at least _BODY_MIN_RATE bytes a second on average.
            due = min(self._last_read + allowed, self._body_started + allowed + self._body_bytes / _BODY_MIN_RATE)
            if now < due:
                self._timer = self._loop.call_later(due - now, self._expired)
                return
            detail = f"the body paused over {allowed} s or came slower than {_BODY_MIN_RATE} bytes a second"
            self._refuse(ConnectionRefusal(408, "request_timeout", detail))

    def _turn_away(self, transport: asyncio.Transport, refusal: ConnectionRefusal) -> None:
        """Answer a connection over the caps, and close it once the client has read that, or after a moment:
        closed at once, a request it sent meanwhile, unread, would reset the connection and lose the answer."""
        self._door.lingering += 1
        transport.write(response(refusal))
        if self._door.lingering > _LINGERING_MAX or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._timer = self._loop.call_later(_LINGER_S, transport.close)

    def _refuse(self, refusal: ConnectionRefusal) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(response(refusal))
            self._transport.close()
