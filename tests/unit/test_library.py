"""The typed wrappers of the Redis functions, without servers: named fields in, keys and arguments out."""

from __future__ import annotations

import re

from courseflow.platform import functions, library
from courseflow.platform.library import (
    AdmitEnrollment,
    Claim,
    ClaimIdempotencyKey,
    Limit,
    PendingBound,
    PendingFull,
    PendingThrough,
    QueueRequest,
    Refusal,
    ReleaseIdempotencyKey,
    TakeRateLimit,
)


def _wrappers() -> dict[str, type[functions.Function[object]]]:
    found = [getattr(library, name) for name in dir(library)]
    wrappers = [cls for cls in found if isinstance(cls, type) and issubclass(cls, functions.Function)]
    return {cls.name: cls for cls in wrappers if cls is not functions.Function}


def test_the_lua_library_registers_exactly_the_functions_that_have_a_wrapper() -> None:
    code = functions.code()
    assert code.startswith(f"#!lua name={functions.LIBRARY}\n")
    registered = set(re.findall(r"redis\.register_function(?:\('|\{function_name = ')(\w+)'", code))
    assert registered == set(_wrappers())
    read_only = set(re.findall(r"function_name = '(\w+)'.*flags = \{'no-writes'\}", code))
    assert read_only == {name for name, cls in _wrappers().items() if cls.read_only}


def test_a_call_names_its_keys_and_arguments_in_the_functions_order() -> None:
    call = QueueRequest(
        courses="c",
        queued_marker="m",
        requests="r",
        priority_set="z",
        pending_index="p",
        granted_priorities="g",
        accepted_counter="a",
        request_id="id",
        before_priority=b"{...,",
        after_priority=b",...}",
        priority=None,
        course_id=12,
        marker_ttl_s=0,
        student_id=7,
        entry_fields=[(b"traceparent", b"00-x")],
    )
    keys = ("c", "m", "r", "z", "p", "g", "a")
    args = ("id", b"{...,", b",...}", "", 12, 0, 7, b"traceparent", b"00-x")
    assert call.command() == ("FCALL", "queue_request", 7, *keys, *args)


def test_read_only_functions_go_by_fcall_ro() -> None:
    assert PendingThrough("z", 10, [b"m1"]).command() == ("FCALL_RO", "pending_through", 1, "z", 10, b"m1")


def test_a_rate_limit_takes_each_limits_counter_and_reads_back_which_refused() -> None:
    call = TakeRateLimit([Limit("k1", 20, 2000), Limit("k2", 100, 60000)])
    assert call.command() == ("FCALL", "take_rate_limit", 2, "k1", "k2", 20, 2000, 100, 60000)
    assert call.reply([0]) is None
    assert call.reply([2, 1500]) == Refusal(index=1, retry_after_ms=1500)


def test_an_admission_takes_the_limits_then_claims_the_key_and_reads_back_either_answer() -> None:
    call = AdmitEnrollment([Limit("k1", 20, 2000), Limit("k2", 100, 60000)], ClaimIdempotencyKey("i", "id", "1:", 0))
    assert call.command() == ("FCALL", "admit_enrollment", 3, "k1", "k2", "i", 2, 20, 2000, 100, 60000, "id", "1:", 0)
    assert call.reply([b"limited", 2, 1500]) == Refusal(index=1, retry_after_ms=1500)
    assert call.reply([b"claimed"]) == Claim(True, "id", "1:")
    assert call.reply([b"known", b"other", b"2:"]) == Claim(False, "other", "2:")


def test_a_students_admission_also_names_their_pending_set_and_its_bound() -> None:
    call = AdmitEnrollment([Limit("k1", 20, 2000)], ClaimIdempotencyKey("i", "id", "1:", 0, PendingBound("p", 50)))
    assert call.command() == ("FCALL", "admit_enrollment", 3, "k1", "i", "p", 1, 20, 2000, "id", "1:", 0, 50)
    assert call.reply([b"full", 50]) == PendingFull(50)
    assert ReleaseIdempotencyKey("i", "id", "p").command() == ("FCALL", "release_idempotency_key", 2, "i", "p", "id")
