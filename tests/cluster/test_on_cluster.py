"""The integration suite's crowd, fairness and idempotency tests, unchanged, on the local Redis Cluster: its
fixtures (tests/cluster/conftest.py) point the API, the workers and the test's own client at the cluster."""

from tests.integration.test_crowd import (
    test_crowd_arriving_while_workers_run_is_decided_exactly_once,
    test_crowd_pending_together_is_decided_in_strict_priority_then_arrival_order,
)
from tests.integration.test_enrollment import (
    test_capacity_not_exceeded,
    test_decided_replay_answers_the_outcome,
    test_idempotency_protection,
    test_priority_affects_order,
    test_waitlist_when_full,
)
from tests.integration.test_partitions import test_requests_go_to_their_courses_partition_and_are_found_by_id
from tests.integration.test_pending_bound import (
    app,
    bounded,
    test_the_51st_pending_request_is_refused_until_one_is_decided,
)
from tests.integration.test_reads import (
    secure,
    test_courses_come_a_page_at_a_time_with_each_ones_figures,
    test_registrars_read_the_dead_letters_newest_first_garbage_included,
)
from tests.integration.test_redis_memory import test_the_redis_memory_gauge_is_on_metrics

__all__ = [
    "app",
    "bounded",
    "secure",
    "test_capacity_not_exceeded",
    "test_courses_come_a_page_at_a_time_with_each_ones_figures",
    "test_crowd_arriving_while_workers_run_is_decided_exactly_once",
    "test_crowd_pending_together_is_decided_in_strict_priority_then_arrival_order",
    "test_decided_replay_answers_the_outcome",
    "test_idempotency_protection",
    "test_priority_affects_order",
    "test_registrars_read_the_dead_letters_newest_first_garbage_included",
    "test_requests_go_to_their_courses_partition_and_are_found_by_id",
    "test_the_51st_pending_request_is_refused_until_one_is_decided",
    "test_the_redis_memory_gauge_is_on_metrics",
    "test_waitlist_when_full",
]
