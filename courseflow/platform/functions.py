"""Running the Redis functions of lua/courseflow.lua: one library, one sync and one async runner.

The library is loaded (`FUNCTION LOAD REPLACE`) on every master: at start (`ensure_loaded`), and again,
by the runners' one retry, when Redis answers that a function does not exist (a restarted Redis that kept
no functions). A call is an instance of a `Function` (courseflow.platform.library), which alone knows its
keys and arguments; the runners only send `FCALL`/`FCALL_RO` and decode the reply with it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import Any, ClassVar, Generic, TypeVar

import redis
from redis.typing import EncodableT, KeyT

from courseflow.platform.coalesce import NO_REPLICAS, CoalescedCalls, Replicas
from courseflow.platform.redis_clients import AsyncRedis, SyncRedis

LIBRARY = "courseflow"
R = TypeVar("R", covariant=True)


@cache
def code() -> str:
    """The library's source, shipped as package data."""
    return files("courseflow.platform").joinpath("lua", "courseflow.lua").read_text(encoding="utf-8")


class Function(Generic[R]):
    """One call of a library function: subclasses are frozen records of named fields, and are the one place
    that turns them into keys and arguments (`keys`, `args`) and the reply into a value (`reply`)."""

    name: ClassVar[str]
    # Declared `no-writes` in the library: sent with FCALL_RO, which a replica may serve too.
    read_only: ClassVar[bool] = False

    def keys(self) -> Sequence[KeyT]:
        raise NotImplementedError

    def args(self) -> Sequence[EncodableT]:
        raise NotImplementedError

    def reply(self, raw: Any) -> R:
        raise NotImplementedError

    def command(self) -> tuple[EncodableT, ...]:
        keys = self.keys()
        return ("FCALL_RO" if self.read_only else "FCALL", self.name, len(keys), *keys, *self.args())


def is_missing(reply: object) -> bool:
    """Whether Redis refused a call because the function (the whole library) is not loaded there."""
    return isinstance(reply, redis.ResponseError) and "function not found" in str(reply).lower()


_loaded: weakref.WeakSet[SyncRedis] = weakref.WeakSet()


def ensure_loaded(client: SyncRedis) -> None:
    """This version's library, loaded once per client at start: it replaces the one a previous deployment left."""
    if client not in _loaded:
        try:
            load(client)
        except redis.exceptions.OutOfMemoryError:
            # A full Redis refuses FUNCTION LOAD even of the library it has: a worker must still start and decide.
            if not _current(client):
                raise
        _loaded.add(client)


def _current(client: SyncRedis) -> bool:
    """True if the server (every node of a cluster) has this version's library."""
    listed: Any = client.function_list(library=LIBRARY, withcode=True)
    replies = listed.values() if isinstance(listed, dict) else [listed]
    wanted = code().encode()
    return all(
        any(_field(library, "library_code") in (wanted, wanted.decode()) for library in reply) for reply in replies
    )


def _field(library: Any, name: str) -> Any:
    if isinstance(library, dict):
        return library.get(name, library.get(name.encode()))
    pairs = list(library)  # RESP2: a flat [name, value, ...] list
    for key, value in zip(pairs[::2], pairs[1::2], strict=False):
        if key in (name, name.encode()):
            return value
    return None


def load(client: SyncRedis) -> None:
    """Load (or replace) the library on the server, or on every master of a cluster (where redis-py's cluster
    clients send FUNCTION LOAD)."""
    client.function_load(code(), replace=True)


async def aload(client: AsyncRedis) -> None:
    await client.function_load(code(), replace=True)


class Functions:
    """The sync runner: one call, or many in one pipeline (each still atomic on its own)."""

    def __init__(self, client: SyncRedis) -> None:
        self._client = client

    def __call__(self, call: Function[R]) -> R:
        return self.each([call])[0]

    def each(self, calls: Sequence[Function[R]]) -> list[R]:
        replies = self._send(calls)
        missing = [i for i, reply in enumerate(replies) if is_missing(reply)]
        if missing:
            # The only retry: load the library, then send once more just the calls that did not run.
            load(self._client)
            for i, reply in zip(missing, self._send([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [call.reply(reply) for call, reply in zip(calls, replies, strict=True)]

    def _send(self, calls: Sequence[Function[Any]]) -> list[Any]:
        with self._client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.execute_command(*call.command())
            return pipe.execute(raise_on_error=False)


class AsyncFunctions:
    """The async runner: concurrent calls share round trips (courseflow.platform.coalesce); with `replicas`,
    each batch ends with a WAIT, so a caller hears back only once replicas have the call's writes."""

    def __init__(self, client: AsyncRedis, replicas: Replicas = NO_REPLICAS) -> None:
        self._client = client
        self._calls = CoalescedCalls(client, replicas)
        self._loaded = 0
        self._loading = asyncio.Lock()

    async def __call__(self, call: Function[R]) -> R:
        command, route = call.command(), call.keys()[0]
        loaded = self._loaded
        try:
            raw = await self._calls(route, command)
        except redis.ResponseError as exc:
            if not is_missing(exc):
                raise
            await self._reload(loaded)
            raw = await self._calls(route, command)  # once: a second refusal is an error like any other
        return call.reply(raw)

    async def _reload(self, seen: int) -> None:
        """Load the library once for all the calls that found it missing at the same time."""
        async with self._loading:
            if self._loaded == seen:
                await aload(self._client)
                self._loaded += 1

    async def aclose(self) -> None:
        await self._calls.aclose()
