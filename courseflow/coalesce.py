"""Concurrent script calls share Redis round trips: one pipeline carries all that arrived meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT


class CoalescedScript:
    """Calls of one Lua script, each still atomic on its own, sent in batches.

    While one pipeline is in flight the next calls queue up; when it returns they all go in the
    next one. A lone call costs one round trip as before; a crowd costs one per batch.
    """

    def __init__(self, client: aioredis.Redis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._waiting: list[tuple[Sequence[KeyT], Sequence[EncodableT], asyncio.Future[Any]]] = []
        self._draining = False

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    replies = await self._send(batch)
                except Exception as exc:  # the connection failed: every call in the batch fails with it
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._draining = False

    async def _send(self, batch: list[tuple[Sequence[KeyT], Sequence[EncodableT], asyncio.Future[Any]]]) -> list[Any]:
        replies = await self._pipeline(batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # A restarted Redis has an empty script cache and those calls did not run: load, send them again.
            await self._client.script_load(self._script)
            for i, reply in zip(missing, await self._pipeline([batch[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(
        self, batch: list[tuple[Sequence[KeyT], Sequence[EncodableT], asyncio.Future[Any]]]
    ) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
