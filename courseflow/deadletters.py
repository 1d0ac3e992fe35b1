"""`courseflow dlq`: look at, retry or drop the entries set aside as undecidable."""

from __future__ import annotations

from typing import cast

import msgspec
import redis

from courseflow import queue
from courseflow.config import Settings
from courseflow.queue import Keys


def command(settings: Settings, action: str, entry_ids: list[str]) -> int:
    keys = Keys(settings.stream_prefix)
    with redis.Redis.from_url(settings.redis_url) as client:
        if action == "list":
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.dead_letters))
            for raw_id, fields in entries:
                reason = fields.get(b"reason", b"").decode()
                request = fields.get(queue.REQUEST_FIELD, b"").decode(errors="replace")
                print(f"{raw_id.decode()}  reason={reason}  request={request}")
            print(f"{len(entries)} dead letter(s)")
            return 0
        if not entry_ids:
            print(f"courseflow dlq {action}: name the ENTRY_ID(s) shown by `courseflow dlq list`")
            return 2
        failed = 0
        for entry_id in entry_ids:
            if action == "drop":
                dropped = int(cast(int, client.xdel(keys.dead_letters, entry_id)))
                print(f"{entry_id}: {'dropped' if dropped else 'no such dead letter'}")
                failed += not dropped
                continue
            try:
                print(f"{entry_id}: queued again as {queue.retry_dead_letter(client, keys, entry_id)}")
            except LookupError as exc:
                print(f"{entry_id}: {exc}")
                failed += 1
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                print(f"{entry_id}: cannot be retried, it holds no valid request ({exc})")
                failed += 1
        return 1 if failed else 0
