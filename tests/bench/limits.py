"""What the servers themselves can do at each row's work: the ceiling no design on this machine passes.

Intake ends in a Redis write per request: `redis-benchmark` XADD from as many clients as wrk has connections,
one command at a time and pipelined (the API coalesces concurrent calls into pipelines). Decisions end in
PostgreSQL transactions: pgbench with many naive decisions per transaction (`pgbench.py`), on one course.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Mapping

import msgspec

from tests.bench import pgbench
from tests.bench.procs import BenchError
from tests.bench.report import Limit, Row
from tests.bench.stack import Stack

PIPELINE = 16
PER_TRANSACTION = 100
# A scratch stream, bounded so that millions of entries do not fill memory; approximate trimming costs nothing.
_KEY = "bench-limit:xadd"
_USER = "bench-limit"
# About the size of an accepted request's stream entry.
_ENTRY = (
    '{"request_id":"00000000-0000-4000-8000-000000000000","course_id":12,"student_id":100012345,'
    '"priority":0,"idempotency_key":"intake-1-12345","requested_at":"2026-01-01T00:00:00.000000+00:00"}'
)


class ServerLimits(msgspec.Struct, frozen=True):
    clients: int
    # XADD per second, one command per round trip and PIPELINE per round trip.
    xadd: float
    xadd_pipelined: float
    pgbench_clients: int
    # Decisions per second of pgbench with PER_TRANSACTION naive decisions a transaction, by number of courses.
    batched: dict[int, float]


def xadd_rate(stack: Stack, clients: int, requests: int, pipeline: int) -> float:
    """XADD per second from `clients` connections of redis-benchmark to the bench's own Redis.

    It logs in as a user made for it alone, allowed XADD on its scratch key and nothing else, and removed
    afterwards: redis-benchmark takes the password on its command line, where `ps` shows it.
    """
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise BenchError("redis-benchmark not found; install it: apt-get install -y redis-tools")
    password = secrets.token_hex(24)
    stack.redis.acl_setuser(
        _USER, enabled=True, passwords=[f"+{password}"], keys=[_KEY], commands=["+xadd"], reset=True
    )
    port = str(stack.redis.connection_pool.connection_kwargs["port"])
    argv = [binary, "-h", "127.0.0.1", "-p", port, "--user", _USER, "-a", password, "-c", str(clients)]
    argv += ["-n", str(requests), "-P", str(pipeline), "--csv", "XADD", _KEY, "MAXLEN", "~", "100000", "*"]
    argv += ["request", _ENTRY]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    finally:
        stack.redis.acl_deluser(_USER)
        stack.redis.delete(_KEY)
    # --csv: a header, then "command","rps" and 6 latencies; the command is not escaped (the entry has quotes
    # and commas), so the line is split from the right. Errors (a refused login) come on stdout too.
    lines = done.stdout.splitlines()
    header = lines[0].split(",") if lines else []
    if done.returncode != 0 or len(lines) < 2 or header[:2] != ['"test"', '"rps"']:
        raise BenchError(f"redis-benchmark failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    return float(lines[1].rsplit(",", len(header) - 1)[1].strip('"'))


def measure(
    stack: Stack, clients: int, xadd_requests: int, pgbench_clients: int, courses: list[int], seconds: int
) -> ServerLimits:
    unpipelined = xadd_rate(stack, clients, xadd_requests, 1)
    pipelined = xadd_rate(stack, clients, xadd_requests * PIPELINE // 2, PIPELINE)
    batched = {
        n: PER_TRANSACTION
        * pgbench.naive_tps(stack.database_url, stack.data_dir, n, pgbench_clients, seconds, PER_TRANSACTION)
        for n in courses
    }
    return ServerLimits(clients, unpipelined, pipelined, pgbench_clients, batched)


def intake(limits: ServerLimits, value: float) -> Limit:
    """Intake's ceiling: Redis taking pipelined writes, as the API sends them."""
    return Limit.of_rate(value, limits.xadd_pipelined, f"XADD -c {limits.clients} -P {PIPELINE}")


def decisions(limits: ServerLimits, courses: int, value: float) -> Limit:
    return Limit.of_rate(value, limits.batched[courses], f"pgbench {PER_TRANSACTION}/txn, {_courses(courses)}")


def _courses(n: int) -> str:
    return "hot course" if n == 1 else f"{n} courses"


def rows(limits: ServerLimits, naive: Mapping[int, float]) -> list[Row]:
    """The limits as rows of their own: Redis XADD, and pgbench batched against pgbench one decision a commit."""
    found = [
        Row(
            name=f"server limit: Redis XADD, {limits.clients} clients",
            value=limits.xadd,
            unit="writes/s",
            reference=None,
            reference_name="—",
            note=f"redis-benchmark -c {limits.clients}, one command per round trip; appendfsync always, as served",
            details=msgspec.structs.asdict(limits),
        ),
        Row(
            name=f"server limit: Redis XADD, {limits.clients} clients, pipelined {PIPELINE}",
            value=limits.xadd_pipelined,
            unit="writes/s",
            reference=limits.xadd,
            reference_name="XADD, no pipelining",
            note="the intake rows' server limit: the API sends Redis its concurrent calls in pipelines",
        ),
    ]
    for courses, rate in limits.batched.items():
        found.append(
            Row(
                name=f"server limit: pgbench, {PER_TRANSACTION} naive decisions/txn, {_courses(courses)}",
                value=rate,
                unit="decisions/s",
                reference=naive[courses],
                reference_name=f"pgbench naive, 1 decision/txn, {_courses(courses)}",
                note=(
                    f"pgbench -c {limits.pgbench_clients} -M prepared: the naive lock-update-insert {PER_TRANSACTION}"
                    f" times on one course (of {courses}, at random), then COMMIT, sent as one pipeline;"
                    " the decision rows' server limit"
                ),
            )
        )
    return found
