"""What the intake decides without Redis: the ids it gives requests."""

from __future__ import annotations

import uuid

from courseflow.intake.accept import new_request_id


def test_request_ids_are_random_version_4_uuids() -> None:
    drawn = [new_request_id() for _ in range(2000)]
    assert len(set(drawn)) == len(drawn)
    for text in drawn:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert {text[19] for text in drawn} == set("89ab")  # every variant nibble occurs: the bits are random
