"""Every Prometheus series CourseFlow exports, defined once: the API, the workers and the projector record into them.

Names follow Prometheus conventions: a `courseflow_` prefix, the unit in the name, `_total` for
counters, `_seconds` for durations. Labels are bounded: route templates (never raw paths), status
classes, outcomes and reasons from fixed lists. Per-course series exist only for the busiest
courses (`METRICS_TOP_COURSES`), so thousands of courses never become thousands of series.

When several processes share one scrape (the API's processes, and the workers and projector that
`courseflow run` starts), `PROMETHEUS_MULTIPROC_DIR` names a directory where each process writes its
values and `/metrics` adds them up (prometheus-client's multiprocess mode). Each gauge says how its
processes' values combine.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a millisecond to a minute: a flash crowd's waits span all of it.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

# --- the API --------------------------------------------------------------------------------------------
HTTP_REQUEST_DURATION = Histogram(
    "courseflow_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status class (2xx, 4xx, …)",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS_ACCEPTED = Counter("courseflow_requests_accepted_total", "Enrollment requests queued (202)")
REQUESTS_REPLAYED = Counter(
    "courseflow_requests_replayed_total", "Enrollment requests answered from an earlier one with the same key"
)
REFUSAL_REASONS = (
    "invalid",
    "forbidden",
    "unknown_course",
    "idempotency_conflict",
    "rate_limited",
    "pending_limit",
    "unavailable",
)
REQUESTS_REFUSED = Counter(
    "courseflow_requests_refused_total", "Enrollment requests refused before queueing, by reason", ["reason"]
)
RATE_LIMITED = Counter("courseflow_rate_limited_total", "Requests answered 429, by the caller's role", ["role"])
AUTH_FAILURES = Counter("courseflow_auth_failures_total", "Requests refused 401 for a missing or invalid token")

# --- the workers ----------------------------------------------------------------------------------------
OUTCOMES = ("granted", "waitlisted", "rejected")
DECISIONS = Counter("courseflow_decisions_total", "Requests decided, by outcome", ["outcome"])
ACCEPT_TO_DECISION = Histogram(
    "courseflow_accept_to_decision_seconds",
    "From a request's 202 (its stream id's time) to the COMMIT of its decision",
    buckets=_LATENCY_BUCKETS,
)
DECISION_BATCH_SIZE = Histogram(
    "courseflow_decision_batch_size", "Requests decided in one transaction", buckets=_BATCH_BUCKETS
)
DECISION_TRANSACTION = Histogram(
    "courseflow_decision_transaction_seconds",
    "One decision transaction, from BEGIN to COMMIT",
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("courseflow_dead_letters_total", "Stream entries set aside undecided")
WORKERS_ALIVE = Gauge("courseflow_workers_alive", "Worker processes running", multiprocess_mode="livesum")

# --- the projector --------------------------------------------------------------------------------------
PROJECTION_LAG = Histogram(
    "courseflow_projection_lag_seconds",
    "From an event's commit to its projection into the read models",
    buckets=_LATENCY_BUCKETS,
)
PROJECTED_EVENTS = Counter("courseflow_projected_events_total", "Events applied to the read models")

# Queue depth, pending entries, consumer lag and the busiest courses' seats are read from Redis and
# PostgreSQL when /metrics is scraped (courseflow/http/scrape.py), never kept in process memory.

# Every label value exists from the start at zero, so rate() sees the first event and a panel never says "No data".
for _reason in REFUSAL_REASONS:
    REQUESTS_REFUSED.labels(_reason)
for _outcome in OUTCOMES:
    DECISIONS.labels(_outcome)
for _role in ("student", "registrar", "service", "anonymous"):
    RATE_LIMITED.labels(_role)
