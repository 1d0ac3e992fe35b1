"""The naive reference: one lock-update-insert transaction per decision, measured with pgbench; and the same
statements 100 to a transaction, the decision rows' server limit (`limits.py`).

It runs on the same PostgreSQL (same fsync and synchronous_commit) on scratch tables, so the ratio
shows what batching many decisions per transaction buys over deciding one request at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.bench.procs import BenchError

PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")

# One decision, the naive way: lock the course, take a seat, append the event.
DECISION = """\
SELECT capacity, seats_taken FROM bench_courses WHERE course_id = :course FOR UPDATE;
UPDATE bench_courses SET seats_taken = seats_taken + 1 WHERE course_id = :course;
INSERT INTO bench_events (stream, type, data)
    VALUES ('course-' || :course, 'EnrollmentGranted', '{"course_id": 1, "student_id": 1, "priority": 0}');
"""


def script(per_transaction: int) -> str:
    """`per_transaction` naive decisions on one course, then COMMIT: 1 is the naive design, one round trip a
    statement. More is what batching alone (the same statements, one commit) gets out of the same PostgreSQL,
    sent as one pipeline: otherwise pgbench's own round trips, not the server, would set the pace."""
    transaction = f"BEGIN;\n{DECISION * per_transaction}COMMIT;\n"
    if per_transaction > 1:
        transaction = f"\\startpipeline\n{transaction}\\endpipeline\n"
    return f"\\set course random(1, :courses)\n{transaction}"


def _binary() -> Path:
    found = PGBENCH if PGBENCH.exists() else next(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), None)
    if found is None:
        raise BenchError("pgbench not found; install it: apt-get install -y postgresql-contrib")
    return found


def naive_tps(
    database_url: str, workdir: Path, courses: int, clients: int, seconds: int, per_transaction: int = 1
) -> float:
    """Transactions per second of `per_transaction` naive decisions over `courses` course rows (1 = one hot
    course); decisions per second are that times `per_transaction`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_courses, bench_events")
        conn.execute("CREATE TABLE bench_courses (course_id int PRIMARY KEY, capacity int NOT NULL, seats_taken int)")
        conn.execute(
            "CREATE TABLE bench_events (position bigserial PRIMARY KEY, stream text NOT NULL, type text NOT NULL,"
            " data jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute("INSERT INTO bench_courses SELECT g, 1000000000, 0 FROM generate_series(1, %s) g", (courses,))
        conn.execute("VACUUM ANALYZE bench_courses")
    path = workdir / f"naive-decisions-{per_transaction}.sql"
    path.write_text(script(per_transaction))
    # -n: no vacuum of pgbench's own tables, which do not exist; a conninfo string is accepted as the database name.
    argv = [str(_binary()), "-n", "-f", str(path), "-D", f"courses={courses}", "-c", str(clients)]
    argv += ["-M", "prepared"] if per_transaction > 1 else []  # a pipeline needs the extended protocol
    # The password goes in the environment: on the command line it would show in `ps`.
    params = conninfo_to_dict(database_url)
    password = params.pop("password", None)
    argv += ["-j", str(min(clients, 2)), "-T", str(seconds), make_conninfo("", **params)]
    env = os.environ | ({"PGPASSWORD": str(password)} if password is not None else {})
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_courses, bench_events")
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if done.returncode != 0 or found is None:
        raise BenchError(f"pgbench failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return float(found.group(1))
