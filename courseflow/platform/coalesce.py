"""Concurrent Redis calls share round trips: one pipeline carries all that arrived meanwhile.

While one pipeline is in flight the next calls queue up; when it returns they all go in the next
one. A lone call costs one round trip as before; a crowd costs one per batch, and the per-command
work of the client (connection checkout, packing, parsing) is paid once per batch.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any, Generic, TypeVar, cast

import hiredis
import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import Connection
from redis.typing import EncodableT, KeyT

Call = TypeVar("Call")


class _Batches(Generic[Call]):
    """Queues calls and sends each batch with `_send`; every call gets its own reply or exception."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Call, asyncio.Future[Any]]] = []
        self._draining = False

    async def _submit(self, call: Call) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        if not self._draining:
            self._draining = True
            # A fresh context: the drain serves every waiting request, not the one whose call started it (its
            # log fields and trace span must not stick to the others').
            asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    replies = await self._send([call for call, _ in batch])
                except Exception as exc:  # the connection failed: every call in the batch fails with it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._draining = False

    async def _send(self, calls: list[Call]) -> list[Any]:
        raise NotImplementedError


def packed(command: tuple[EncodableT, ...]) -> bytes:
    """One command in the Redis protocol, packed by hiredis (redis[hiredis]): a fifth of redis-py's cost."""
    return hiredis.pack_command(command)  # type: ignore[arg-type,no-any-return]


class Line:
    """One connection of a plain client's pool, held by one coalescer, whose batches go one at a time: checking
    a connection out of the pool for each batch, and redis-py's pipeline, cost more than the batch's commands.

    A connection the server closed while idle is opened again before use, as the pool does for those it hands
    out, and a batch that meets a close not seen yet is sent once more on a new connection: had the server run
    it already, idempotency keys make the second run a replay (a rate-limit hit in it counts twice)."""

    def __init__(self, client: aioredis.Redis | None, owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client
        self._connection: Connection | None = None

    async def exchange(self, commands: bytes, count: int) -> list[Any]:
        """Send packed commands, read their `count` replies; a reply that is an error is returned, not raised."""
        assert self._client is not None, "a cluster client has no single connection"
        pool = self._client.connection_pool
        connection = self._connection
        if connection is None:
            connection = self._connection = cast(Connection, await pool.get_connection())  # type: ignore[no-untyped-call]
            return await _exchange(connection, commands, count)
        # As the pool checks a connection it hands out: one the server closed meanwhile is opened again.
        await pool.ensure_connection(connection)
        try:
            return await _exchange(connection, commands, count)
        except redis.ConnectionError:
            # Closed before this batch, though the close was not seen yet: once more, on a new connection.
            return await _exchange(connection, commands, count)

    async def aclose(self) -> None:
        if self._client is None:
            return
        if self._connection is not None:
            await self._client.connection_pool.release(self._connection)
            self._connection = None
        if self._owns_client:
            await self._client.aclose()


async def _exchange(connection: Connection, commands: bytes, count: int) -> list[Any]:
    try:
        await connection.send_packed_command(commands, check_health=False)
        replies: list[Any] = []
        # One time limit for the batch's replies, not one per reply (which costs more than reading it).
        async with asyncio.timeout(connection.socket_timeout):
            for _ in range(count):
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except redis.ResponseError as exc:
                    replies.append(exc)
        return replies
    except TimeoutError:
        await connection.disconnect()
        raise redis.TimeoutError(f"no reply from Redis within {connection.socket_timeout} s") from None
    except BaseException:
        # Replies left unread would answer the next batch's commands; the next send connects again.
        await connection.disconnect()
        raise


# A command, and the key that routes it on a cluster.
RoutedCall = tuple[KeyT, tuple[EncodableT, ...]]


class Replicas(msgspec.Struct, frozen=True):
    """How many replicas must have a call's writes before its caller hears back (Redis WAIT), and for how long
    to wait for them."""

    count: int = 0
    timeout_ms: int = 1000


NO_REPLICAS = Replicas()


class NotReplicated(redis.RedisError):
    """The writes were made on the master, but fewer replicas than required confirmed them in time."""


class CoalescedCalls(_Batches[RoutedCall]):
    """Commands (function calls), each still atomic on its own, sent in batches; with `replicas`, each batch ends
    with a WAIT on every connection it wrote to."""

    def __init__(self, client: aioredis.Redis | AsyncRedisCluster, replicas: Replicas = NO_REPLICAS):
        super().__init__()
        self._client = client
        self._replicas = replicas
        # A single Redis's batches go over one connection of the client's pool, held by these calls.
        self._line = Line(client if isinstance(client, aioredis.Redis) else None)
        self._masters: dict[str, Line] = {}

    async def __call__(self, route: KeyT, command: tuple[EncodableT, ...]) -> Any:
        return await self._submit((route, command))

    async def _send(self, calls: list[RoutedCall]) -> list[Any]:
        if self._replicas.count == 0:
            if isinstance(self._client, AsyncRedisCluster):
                async with self._client.pipeline(transaction=False) as pipe:
                    for _, command in calls:
                        pipe.execute_command(*command)
                    return await pipe.execute(raise_on_error=False)
            return await self._line.exchange(self._packed(calls), len(calls))
        return await self._replicated(calls)

    def _packed(self, calls: list[RoutedCall]) -> bytes:
        return b"".join([packed(command) for _, command in calls])

    async def _replicated(self, calls: list[RoutedCall]) -> list[Any]:
        """WAIT counts the replicas that have what its own connection wrote, so calls and their WAIT share a
        connection: the client's on a single Redis; on a cluster, a plain one to the master of each call's slot,
        without the cluster client's retries and redirections, which would send the WAIT elsewhere. A call that
        meets a moved slot or a dead master is NotReplicated (503: the client retries with its idempotency
        key) and the slot map is read again."""
        if not isinstance(self._client, AsyncRedisCluster):
            return await self._on_one_connection(self._line, calls)
        cluster = self._client
        await cluster.initialize()
        replies: list[Any] = [NotReplicated("no master serves the slot")] * len(calls)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, (key, _) in enumerate(calls):
            node = cluster.get_node_from_key(key.decode() if isinstance(key, bytes) else str(key))
            if node is not None:
                by_node.setdefault(node.name, (node, []))[1].append(i)

        async def on_node(host: str, port: int, indexes: list[int]) -> None:
            try:
                got = await self._on_one_connection(self._master(host, port), [calls[i] for i in indexes])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                got = [NotReplicated(f"the master at {host}:{port} is unreachable: {exc}")] * len(indexes)
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = NotReplicated(str(reply)) if isinstance(reply, _MOVED) else reply

        await asyncio.gather(*(on_node(node.host, node.port, indexes) for node, indexes in by_node.values()))
        if any(isinstance(reply, NotReplicated) for reply in replies):
            await cluster.nodes_manager.initialize()  # a failover may have moved slots: read the map again
        return replies

    async def _on_one_connection(self, line: Line, calls: list[RoutedCall]) -> list[Any]:
        wait = packed((b"WAIT", self._replicas.count, self._replicas.timeout_ms))
        *replies, confirmed = await line.exchange(self._packed(calls) + wait, len(calls) + 1)
        if not isinstance(confirmed, Exception) and int(confirmed) >= self._replicas.count:
            return replies
        short = NotReplicated(f"fewer than {self._replicas.count} replicas confirmed the write in time")
        return [reply if isinstance(reply, Exception) else short for reply in replies]

    def _master(self, host: str, port: int) -> Line:
        """A line to one cluster master, with the cluster client's credentials, kept for reuse."""
        name = f"{host}:{port}"
        if name not in self._masters:
            assert isinstance(self._client, AsyncRedisCluster)
            kwargs = self._client.get_connection_kwargs()
            username, password = kwargs.get("username"), kwargs.get("password")
            master = aioredis.Redis(host=host, port=port, username=username, password=password)
            self._masters[name] = Line(master, owns_client=True)
        return self._masters[name]

    async def aclose(self) -> None:
        await self._line.aclose()
        for line in self._masters.values():
            await line.aclose()
        self._masters.clear()


# What a cluster master answers for a slot it does not serve (any more, or not yet).
_MOVED = (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)


CommandCall = tuple[tuple[Any, ...], dict[str, Any]]


class CoalescedClient(aioredis.Redis):
    """A client whose concurrent commands go out together, one pipeline per batch.

    For many small independent commands from concurrent requests, such as rate-limit hits. Not for
    blocking commands, transactions or pub/sub: use a plain client for those.
    """

    def __init__(self, connection_pool: aioredis.ConnectionPool) -> None:
        super().__init__(connection_pool=connection_pool)
        self._batches = _CommandBatches(self)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self._batches.submit((args, options))


class _CommandBatches(_Batches[CommandCall]):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__()
        self._client = client

    async def submit(self, call: CommandCall) -> Any:
        return await self._submit(call)

    async def _send(self, calls: list[CommandCall]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for args, options in calls:
                pipe.execute_command(*args, **options)
            return await pipe.execute(raise_on_error=False)
