"""The Redis side of the pipeline: key names, the request stream and each course's priority set.

Every key shares one hash tag, so the intake script and the worker's MULTI run unchanged on Redis Cluster.
A priority-set member is `<zero-padded stream id>|<request json>` with score `-priority`: ZRANGE then
yields priority (higher first), then arrival, and carries everything a decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import msgspec
import redis
from redis.typing import EncodableT, FieldT

from courseflow import events
from courseflow.domain import Pending, StreamId

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


class Keys(msgspec.Struct, frozen=True):
    prefix: str = "courseflow"

    @property
    def requests(self) -> str:
        return f"{{{self.prefix}}}:requests"

    @property
    def dead_letters(self) -> str:
        return f"{{{self.prefix}}}:dead-letters"

    @property
    def courses(self) -> str:
        return f"{{{self.prefix}}}:courses"

    @property
    def pending_index(self) -> str:
        """request id -> priority-set member, for status look-ups while pending."""
        return f"{{{self.prefix}}}:pending"

    @property
    def priorities(self) -> str:
        """student id -> the priority a registrar granted (absent = 0); read by the intake script."""
        return f"{{{self.prefix}}}:priorities"

    @property
    def priority_versions(self) -> str:
        """student id -> version of the grant in `priorities`, so an older one never overwrites a newer one."""
        return f"{{{self.prefix}}}:priority-versions"

    @property
    def accepted(self) -> str:
        """How many requests intake ever queued: `courseflow check` accounts for each, whatever keys expired."""
        return f"{{{self.prefix}}}:accepted"

    @property
    def replica_horizon(self) -> str:
        """The newest PostgreSQL WAL position the API has written or shown: replica reads wait for it."""
        return f"{{{self.prefix}}}:replica-horizon"

    def priority_set(self, course_id: int) -> str:
        return f"{{{self.prefix}}}:course:{course_id}:pending"

    def idempotency(self, owner: str, key: str) -> str:
        """`owner` scopes the key to its caller (see intake.key_owner)."""
        return f"{{{self.prefix}}}:idem:{owner}:{key}"


def member(arrival: StreamId, payload: bytes) -> bytes:
    """The priority-set member for a request; must match the intake script's construction."""
    return f"{arrival.ms:015d}-{arrival.seq:010d}|".encode() + payload


def parse_member(raw: bytes) -> Pending:
    head, _, payload = raw.partition(b"|")
    return Pending(events.decode_request(payload), StreamId.parse(head))


def ensure_group(client: redis.Redis, keys: Keys) -> None:
    """Create the consumer group from the start of the stream; a no-op when it exists."""
    try:
        client.xgroup_create(keys.requests, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def register_courses(client: redis.Redis, keys: Keys, course_ids: Sequence[int]) -> None:
    """Let intake accept requests for these courses (PostgreSQL has them)."""
    if course_ids:
        client.sadd(keys.courses, *course_ids)


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


def grant_priorities(client: redis.Redis, keys: Keys, granted: Sequence[tuple[int, int, int]]) -> None:
    """Make these (student, priority, version) grants from PostgreSQL the ones intake applies, unless newer ones are."""
    script = client.register_script(_GRANT)
    for start in range(0, len(granted), 1000):
        args = [value for grant in granted[start : start + 1000] for value in grant]
        script(keys=[keys.priorities, keys.priority_versions], args=args)


# The best-ranked members of a course's priority set, down to the worst-ranked of the given ones
# that is still there, but no more than ARGV[1]. Reply: {1 if that cut was reached, members...}.
# One script, so a request that arrives meanwhile cannot shift the cut.
_PREFIX = """
local limit = tonumber(ARGV[1])
local worst = -1
for i = 2, #ARGV do
  local rank = redis.call('ZRANK', KEYS[1], ARGV[i])
  if rank and rank > worst then worst = rank end
end
if worst < 0 then return {1} end
local members = redis.call('ZRANGE', KEYS[1], 0, math.min(worst, limit - 1))
table.insert(members, 1, worst < limit and 1 or 0)
return members
"""


def pending_through(
    client: redis.Redis, keys: Keys, batches: dict[int, Sequence[bytes]], limit: int
) -> dict[int, tuple[list[bytes], bool]]:
    """Per course, everything pending that ranks at or ahead of the course's batch, best first, at most `limit`.

    Deciding this whole prefix, not just the batch this worker read, keeps the order strict when
    several workers hold interleaved batches of the same course. Returns, per course, the members
    and whether they reach the last of the batch (if not, decide them and ask again). One round
    trip for all the courses.
    """
    prefix = client.register_script(_PREFIX)  # EVALSHA, loading the script if Redis lost it
    with client.pipeline(transaction=False) as pipe:
        for course_id, batch in batches.items():
            prefix(keys=[keys.priority_set(course_id)], args=[limit, *batch], client=pipe)
        replies = cast(list[list[Any]], pipe.execute())
    return {cid: (cast(list[bytes], r[1:]), r[0] == 1) for cid, r in zip(batches, replies, strict=True)}


def top(client: redis.Redis, keys: Keys, course_id: int, count: int) -> list[bytes]:
    """The `count` best-ranked pending requests of a course."""
    return cast(list[bytes], client.zrange(keys.priority_set(course_id), 0, count - 1))


def settle(
    client: redis.Redis,
    keys: Keys,
    settled: dict[int, list[bytes]],
    request_ids: Sequence[str],
    entry_ids: Sequence[bytes | str],
) -> None:
    """After COMMIT: drop decided members from the priority sets and the pending index, acknowledge the entries."""
    with client.pipeline(transaction=True) as pipe:
        for course_id, members in settled.items():
            if members:
                pipe.zrem(keys.priority_set(course_id), *members)
        if request_ids:
            pipe.hdel(keys.pending_index, *request_ids)
        if entry_ids:
            pipe.xack(keys.requests, GROUP, *entry_ids)
        pipe.execute()


def dead_letter(
    client: redis.Redis,
    keys: Keys,
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    reason: str,
    pending: tuple[int, bytes, str] | None = None,
) -> None:
    """Move an entry aside with the reason, so it never blocks the ones behind it.

    `pending` is (course id, priority-set member, request id) of a decodable request, which leaves
    the queue too.
    """
    entry = {**cast(dict[FieldT, EncodableT], fields), b"entry_id": entry_id, b"reason": reason}
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


def trim(client: redis.Redis, keys: Keys) -> int:
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


def retry_dead_letter(client: redis.Redis, keys: Keys, entry_id: str) -> str:
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
