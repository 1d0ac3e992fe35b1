"""Redis key names: each partition's keys in one cluster slot, partitions spread over the slots."""

from __future__ import annotations

from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys


def test_each_partitions_keys_share_one_cluster_slot_and_partitions_spread() -> None:
    from redis.crc import key_slot

    slots = set()
    for course_id in range(1, DEFAULT_PARTITIONS + 1):
        k = Keys(partitions=DEFAULT_PARTITIONS).of_course(course_id)
        keys = [k.courses, k.requests, k.priority_set(course_id), k.pending_index]
        keys += [k.priorities, k.priority_versions, k.accepted, k.dead_letters]
        (slot,) = {key_slot(key.encode()) for key in keys}  # every script and MULTI stays in one slot
        slots.add(slot)
    assert len(slots) == DEFAULT_PARTITIONS


def test_a_callers_rate_limit_counters_and_idempotency_keys_share_one_slot_and_callers_spread() -> None:
    from redis.crc import key_slot

    slots = set()
    for n in range(20):
        caller = Keys().caller(f"student:{n}")
        keys = [caller.rate_limit("student-writes:20/2s"), caller.rate_limit("student-writes:100/60s")]
        keys += [caller.idempotency(str(n), "k"), caller.idempotency(f"service:s:{n}", "other")]
        (slot,) = {key_slot(key.encode()) for key in keys}  # one call takes the limits and claims the key
        slots.add(slot)
    assert len(slots) > 10


def test_callers_whose_names_hold_braces_and_colons_never_share_a_key() -> None:
    """A name may end the hash tag early; the caller's length keeps every key name its own."""
    one, other = Keys().caller("service:a}:idem:1:a:k"), Keys().caller("service:a")
    assert one.rate_limit("service:1/1s") != other.idempotency("a", "k}:ratelimit:service:1/1s")
    assert one.tag != other.tag
