"""Redis key names: each partition's keys in one cluster slot, partitions spread over the slots."""

from __future__ import annotations

from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys


def test_each_partitions_keys_share_one_cluster_slot_and_partitions_spread() -> None:
    from redis.crc import key_slot

    slots = set()
    for course_id in range(1, DEFAULT_PARTITIONS + 1):
        k = Keys(partitions=DEFAULT_PARTITIONS).of_course(course_id)
        keys = [k.courses, k.idempotency("7", "k"), k.requests, k.priority_set(course_id), k.pending_index]
        keys += [k.priorities, k.priority_versions, k.accepted, k.dead_letters]
        (slot,) = {key_slot(key.encode()) for key in keys}  # every script and MULTI stays in one slot
        slots.add(slot)
    assert len(slots) == DEFAULT_PARTITIONS
