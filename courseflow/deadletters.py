"""`courseflow dlq`: look at, retry or drop the entries set aside as undecidable.

A dead letter's id names its partition: `<partition>:<stream entry id>`, as `courseflow dlq list` shows it.
"""

from __future__ import annotations

from typing import cast

import msgspec
import psycopg
import redis

from courseflow import partitions, queue, redis_clients
from courseflow.config import Settings
from courseflow.keys import Keys, PartitionKeys
from courseflow.redis_clients import SyncRedis


def command(settings: Settings, action: str, entry_ids: list[str]) -> int:
    keys = Keys(settings.stream_prefix, settings.partitions)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        partitions.verify(conn, keys.partitions)  # another count would look in the wrong streams
    with redis_clients.connect(settings) as client:
        if action == "list":
            count = 0
            for partition in keys.all():
                entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(partition.dead_letters))
                for raw_id, fields in entries:
                    reason = fields.get(b"reason", b"").decode()
                    request = fields.get(queue.REQUEST_FIELD, b"").decode(errors="replace")
                    print(f"{queue.qualified(partition.partition, raw_id)}  reason={reason}  request={request}")
                count += len(entries)
            print(f"{count} dead letter(s)")
            return 0
        if not entry_ids:
            print(f"courseflow dlq {action}: name the PARTITION:ENTRY_ID(s) shown by `courseflow dlq list`")
            return 2
        failed = 0
        for qualified in entry_ids:
            found = _parse(keys, qualified)
            if found is None:
                print(f"{qualified}: not a dead-letter id (PARTITION:ENTRY_ID, as `courseflow dlq list` shows)")
                failed += 1
                continue
            partition, entry_id = found
            try:
                failed += _act(client, action, qualified, partition, entry_id)
            except redis.ResponseError as exc:  # e.g. not a stream id at all
                print(f"{qualified}: {exc}")
                failed += 1
        return 1 if failed else 0


def _act(client: SyncRedis, action: str, qualified: str, partition: PartitionKeys, entry_id: str) -> int:
    """Drop or retry one dead letter; returns 1 when it failed."""
    if action == "drop":
        dropped = int(client.xdel(partition.dead_letters, entry_id))
        print(f"{qualified}: {'dropped' if dropped else 'no such dead letter'}")
        return 0 if dropped else 1
    try:
        print(f"{qualified}: queued again as {queue.retry_dead_letter(client, partition, entry_id)}")
    except LookupError as exc:
        print(f"{qualified}: {exc}")
        return 1
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"{qualified}: cannot be retried, it holds no valid request ({exc})")
        return 1
    return 0


def _parse(keys: Keys, qualified: str) -> tuple[PartitionKeys, str] | None:
    partition, _, entry_id = qualified.partition(":")
    if not partition.isdigit() or int(partition) >= keys.partitions or not entry_id:
        return None
    return keys.partition(int(partition)), entry_id
