"""The Redis side of the pipeline: each partition's request stream and its courses' priority sets.

Key names are in courseflow.keys: each script and MULTI here touches one partition's keys, so it runs
unchanged on Redis Cluster. A priority-set member is `<zero-padded stream id>|<request json>` with score
`-priority`: ZRANGE then yields priority (higher first), then arrival, and carries everything a decision needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from courseflow import events
from courseflow.domain import Pending, StreamId
from courseflow.platform.keys import Keys, PartitionKeys
from courseflow.platform.redis_clients import SyncRedis, is_cluster

GROUP = "deciders"
REQUEST_FIELD = b"request"

# Appends a request to the stream, its priority set and the pending index; the member is built
# exactly as member() builds it. Shared by every script that queues a request. `extra`: more entry
# fields as a flat {name, value, ...} list (the trace context), or nil.
ENQUEUE_LUA = """
local function enqueue(stream, zset, pending, request_id, payload, priority, extra)
  local id = redis.call('XADD', stream, '*', 'request', payload, unpack(extra or {}))
  local dash = string.find(id, '-', 1, true)
  local ms, seq = string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
  local member = string.rep('0', 15 - #ms) .. ms .. '-' .. string.rep('0', 10 - #seq) .. seq .. '|' .. payload
  redis.call('ZADD', zset, -tonumber(priority), member)
  redis.call('HSET', pending, request_id, member)
  return id, member
end
"""


def qualified(partition: int, entry_id: bytes | str) -> str:
    """A stream entry's id across partitions (each stream numbers its own): `<partition>:<entry id>`."""
    return f"{partition}:{entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"


def member(arrival: StreamId, payload: bytes) -> bytes:
    """The priority-set member for a request; must match the intake script's construction."""
    return f"{arrival.ms:015d}-{arrival.seq:010d}|".encode() + payload


def parse_member(raw: bytes) -> Pending:
    head, _, payload = raw.partition(b"|")
    return Pending(events.decode_request(payload), StreamId.parse(head))


ScriptCall = tuple[Sequence[str], Sequence[EncodableT]]


def run_script(client: SyncRedis, script: str, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run a Lua script once per (keys, args) call, all in one pipeline, each atomic on its own.

    EVALSHA through `execute_command`: redis-py's cluster pipeline refuses its script helpers, yet routes a
    plain EVALSHA by its keys. A Redis that lost its script cache (a restart, a replica promoted) gets the
    script loaded and the calls it refused sent again.
    """
    sha = hashlib.sha1(script.encode()).hexdigest()
    replies = _evalsha(client, sha, calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        client.script_load(script)
        for i, reply in zip(missing, _evalsha(client, sha, [calls[i] for i in missing]), strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _evalsha(client: SyncRedis, sha: str, calls: Sequence[ScriptCall]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)


def ensure_group(client: SyncRedis, keys: PartitionKeys) -> None:
    """Create a partition's consumer group from the start of its stream; a no-op when it exists."""
    try:
        client.xgroup_create(keys.requests, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def ensure_groups(client: SyncRedis, keys: Keys) -> None:
    for partition in keys.all():
        ensure_group(client, partition)


def register_courses(client: SyncRedis, keys: Keys, course_ids: Sequence[int]) -> None:
    """Let intake accept requests for these courses (PostgreSQL has them), each in its partition."""
    by_partition: dict[str, list[int]] = {}
    for course_id in course_ids:
        by_partition.setdefault(keys.of_course(course_id).courses, []).append(course_id)
    with client.pipeline(transaction=False) as pipe:
        for key, ids in by_partition.items():
            pipe.sadd(key, *ids)
        pipe.execute()


# A granted priority applies only if it is newer than the one intake has: a late or repeated sync never
# undoes a later grant. KEYS: priorities, their versions. ARGV: (student, priority, version) triples.
_GRANT = """
for i = 1, #ARGV, 3 do
  local known = tonumber(redis.call('HGET', KEYS[2], ARGV[i])) or 0
  if tonumber(ARGV[i + 2]) > known then
    if ARGV[i + 1] == '0' then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
"""


def grant_priorities(client: SyncRedis, keys: Keys, granted: Sequence[tuple[int, int, int]]) -> None:
    """Make these (student, priority, version) grants from PostgreSQL the ones intake applies, unless newer ones
    are: in every partition, as a student's requests may go to any."""
    for start in range(0, len(granted), 1000):
        args = [value for grant in granted[start : start + 1000] for value in grant]
        run_script(client, _GRANT, [([p.priorities, p.priority_versions], args) for p in keys.all()])


# The best-ranked members of a course's priority set, ARGV[1] of them (or all there are) once the worst-ranked
# of the given ones still there is among them. Reply: {1 if that one was reached, members...}. One script, so a
# request that arrives meanwhile cannot shift the cut.
_PREFIX = """
local limit = tonumber(ARGV[1])
local worst = -1
for i = 2, #ARGV do
  local rank = redis.call('ZRANK', KEYS[1], ARGV[i])
  if rank and rank > worst then worst = rank end
end
if worst < 0 then return {1} end
local members = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
table.insert(members, 1, worst < limit and 1 or 0)
return members
"""


def pending_through(
    client: SyncRedis, keys: Keys, batches: dict[int, Sequence[bytes]], limit: int
) -> dict[int, tuple[list[bytes], bool]]:
    """Per course, everything pending that ranks at or ahead of the course's batch, best first, at most `limit`
    in all (shared evenly by the courses, at least one each); with room to spare in a course's share, more of
    its best-ranked (fewer, fuller transactions under a backlog).

    Deciding this whole prefix, not just the batch this worker read, keeps the order strict when
    several workers hold interleaved batches of the same course. Returns, per course, the members
    and whether they reach the last of the batch (if not, decide them and ask again). One round
    trip for all the courses. A course with none of the batch pending any more gets nothing. The limit is
    for all of them, so what a round holds in memory does not grow with the number of courses in a batch,
    nor with their backlogs.
    """
    share = max(1, limit // max(1, len(batches)))
    calls: list[ScriptCall] = [
        ([keys.priority_set(course_id)], [share, *cast(Sequence[EncodableT], batch)])
        for course_id, batch in batches.items()
    ]
    replies = cast(list[list[Any]], run_script(client, _PREFIX, calls))
    return {cid: (cast(list[bytes], r[1:]), r[0] == 1) for cid, r in zip(batches, replies, strict=True)}


def top(client: SyncRedis, keys: Keys, course_id: int, count: int) -> list[bytes]:
    """The `count` best-ranked pending requests of a course."""
    return cast(list[bytes], client.zrange(keys.priority_set(course_id), 0, count - 1))


def settle(client: SyncRedis, keys: Keys, members: dict[int, list[bytes]], request_ids: dict[int, list[str]]) -> None:
    """After COMMIT: drop decided requests (per course) from the priority sets and the pending index.

    Atomically per partition, so a status look-up never finds a request in neither its priority set nor
    PostgreSQL: one MULTI for all on a single Redis, one per partition on a cluster (a MULTI stays in a slot).
    """
    by_partition: dict[int, list[int]] = {}
    for course_id in members.keys() | request_ids.keys():
        by_partition.setdefault(keys.of_course(course_id).partition, []).append(course_id)
    groups = [list(by_partition.items())] if not is_cluster(client) else [[item] for item in by_partition.items()]
    for group in groups:
        with client.pipeline(transaction=True) as pipe:
            for partition, course_ids in group:
                pk = keys.partition(partition)
                for course_id in course_ids:
                    if members.get(course_id):
                        pipe.zrem(pk.priority_set(course_id), *members[course_id])
                    if request_ids.get(course_id):
                        pipe.hdel(pk.pending_index, *request_ids[course_id])
            pipe.execute()


def acknowledge(client: SyncRedis, keys: Keys, entry_ids: dict[int, list[bytes]]) -> None:
    """After COMMIT: these entries of each partition are done with; one round trip per Redis server."""
    with client.pipeline(transaction=False) as pipe:
        for partition, ids in entry_ids.items():
            if ids:
                pipe.xack(keys.partition(partition).requests, GROUP, *ids)
        pipe.execute()


def dead_letter(
    client: SyncRedis,
    keys: PartitionKeys,
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    reason: str,
    pending: tuple[int, bytes, str] | None = None,
) -> None:
    """Move an entry aside with the reason, so it never blocks the ones behind it.

    `pending` is (course id, priority-set member, request id) of a decodable request, which leaves
    the queue too.
    """
    entry = {
        **cast(dict[FieldT, EncodableT], fields),
        b"entry_id": qualified(keys.partition, entry_id),
        b"reason": reason,
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(keys.dead_letters, entry)
        pipe.xack(keys.requests, GROUP, entry_id)
        if pending is not None:
            course_id, raw, request_id = pending
            pipe.zrem(keys.priority_set(course_id), raw)
            pipe.hdel(keys.pending_index, request_id)
        pipe.execute()


# Trim below the oldest entry still pending, or, with none pending, below the last one delivered:
# never an entry that is unacknowledged or not yet read. One script, so no delivery slips in between.
_TRIM = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local minid = nil
if pending[1] > 0 then
  minid = pending[2]
else
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] elseif group[i] == 'last-delivered-id' then last = group[i + 1] end
    end
    if name == ARGV[1] then minid = last end
  end
end
if minid == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""


def trim(client: SyncRedis, keys: PartitionKeys) -> int:
    """Drop stream entries that are decided and acknowledged; returns how many went."""
    return int(cast(int, client.register_script(_TRIM)(keys=[keys.requests], args=[GROUP])))


# Put a dead letter back at the end of the queue, as if it had just been accepted.
# KEYS: dead letters, request stream, course priority set, pending index.
# ARGV: dead-letter entry id, request json, priority, request id.
_RETRY = (
    ENQUEUE_LUA
    + """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return nil
end
local id = enqueue(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[2], ARGV[3])
return id
"""
)


def retry_dead_letter(client: SyncRedis, keys: PartitionKeys, entry_id: str) -> str:
    """Re-queue a dead letter's request at the back; returns its new stream id.

    Raises LookupError when there is no such dead letter, ValueError when it holds no decodable request.
    """
    found = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.dead_letters, entry_id, entry_id))
    if not found:
        raise LookupError(f"no dead letter {entry_id}")
    payload = found[0][1].get(REQUEST_FIELD, b"")
    request = events.decode_request(payload)  # raises for an undecodable entry: retrying cannot help it
    args: list[EncodableT] = [entry_id, payload, request.priority, request.request_id]
    keyset = [keys.dead_letters, keys.requests, keys.priority_set(request.course_id), keys.pending_index]
    new_id = client.register_script(_RETRY)(keys=keyset, args=args)
    if new_id is None:
        raise LookupError(f"no dead letter {entry_id}")
    return cast(bytes, new_id).decode()
