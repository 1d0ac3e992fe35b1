"""Concurrent Redis calls share round trips: one pipeline carries all that arrived meanwhile.

While one pipeline is in flight the next calls queue up; when it returns they all go in the next
one. A lone call costs one round trip; a crowd costs one per batch (one per master on a cluster,
where redis-py's cluster pipeline routes each command by its keys), and the per-command work of
the client (connection checkout, parsing) is paid once per batch. A command that fails fails
only its own caller.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Generic, TypeVar

import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.typing import EncodableT, KeyT

from courseflow.platform import redis_adapter, redis_clients
from courseflow.platform.redis_clients import AsyncRedis

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
    with a WAIT on every connection it wrote to. The command goes through `execute_command`, which redis-py's
    cluster pipeline routes by its keys."""

    def __init__(self, client: AsyncRedis, replicas: Replicas = NO_REPLICAS) -> None:
        super().__init__()
        self._client = client
        self._replicas = replicas
        self._masters: dict[str, aioredis.Redis] = {}

    async def __call__(self, route: KeyT, command: tuple[EncodableT, ...]) -> Any:
        return await self._submit((route, command))

    async def _send(self, calls: list[RoutedCall]) -> list[Any]:
        if self._replicas.count == 0:
            return await self._pipelined(self._client, calls)
        if isinstance(self._client, AsyncRedisCluster):
            return await self._replicated_on_cluster(self._client, calls)
        return await self._replicated(self._client, calls)

    async def _pipelined(self, client: AsyncRedis, calls: list[RoutedCall], *tail: EncodableT) -> list[Any]:
        """One round trip (one per master on a cluster) for the batch, plus `tail`, one command after it."""
        async with client.pipeline(transaction=False) as pipe:
            for _, command in calls:
                pipe.execute_command(*command)
            if tail:
                pipe.execute_command(*tail)
            return await pipe.execute(raise_on_error=False)

    async def _replicated(self, client: aioredis.Redis, calls: list[RoutedCall]) -> list[Any]:
        """WAIT counts the replicas that have what its own connection wrote: one pipeline keeps the calls and
        their WAIT on one connection."""
        *replies, confirmed = await self._pipelined(
            client, calls, "WAIT", self._replicas.count, self._replicas.timeout_ms
        )
        if not isinstance(confirmed, Exception) and int(confirmed) >= self._replicas.count:
            return replies
        short = NotReplicated(f"fewer than {self._replicas.count} replicas confirmed the write in time")
        return [reply if isinstance(reply, Exception) else short for reply in replies]

    async def _replicated_on_cluster(self, cluster: AsyncRedisCluster, calls: list[RoutedCall]) -> list[Any]:
        """On a cluster, each call's batch goes to a plain client of the master of its slot, without the cluster
        client's retries and redirections, which would send the WAIT elsewhere. A call that meets a moved slot
        or a dead master is NotReplicated (503: the client retries with its idempotency key) and the slot map
        is read again."""
        await cluster.initialize()
        replies: list[Any] = [NotReplicated("no master serves the slot")] * len(calls)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, (key, _) in enumerate(calls):
            node = cluster.get_node_from_key(key.decode() if isinstance(key, bytes) else str(key))
            if node is not None:
                by_node.setdefault(node.name, (node, []))[1].append(i)

        async def on_node(host: str, port: int, indexes: list[int]) -> None:
            try:
                got = await self._replicated(self._master(cluster, host, port), [calls[i] for i in indexes])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                got = [NotReplicated(f"the master at {host}:{port} is unreachable: {exc}")] * len(indexes)
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = NotReplicated(str(reply)) if isinstance(reply, _MOVED) else reply

        await asyncio.gather(*(on_node(node.host, node.port, indexes) for node, indexes in by_node.values()))
        if any(isinstance(reply, NotReplicated) for reply in replies):
            await redis_adapter.reread_slot_map(cluster)  # a failover may have moved slots
        return replies

    def _master(self, cluster: AsyncRedisCluster, host: str, port: int) -> aioredis.Redis:
        name = f"{host}:{port}"
        if name not in self._masters:
            self._masters[name] = redis_clients.connect_master(cluster, host, port)
        return self._masters[name]

    async def aclose(self) -> None:
        for master in self._masters.values():
            await redis_clients.aclose(master)
        self._masters.clear()


# What a cluster master answers for a slot it does not serve (any more, or not yet).
_MOVED = (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
