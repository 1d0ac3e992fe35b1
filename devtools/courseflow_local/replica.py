"""The local read replica: a hot standby of the local PostgreSQL, copied by `pg_basebackup -R`, streaming from it.

It keeps its own cluster beside the primary's (same server user, same fallback home) and a replication
slot on the primary, so a replica that was stopped for a while catches up instead of being cut off.
"""

from __future__ import annotations

from pathlib import Path

from courseflow_local import postgres
from courseflow_local.credentials import REPLICATION_USER, Credentials
from courseflow_local.processes import START_TIMEOUT_S, ServicesError, check_port_free, run, wait_until
from courseflow_local.unprivileged import as_user, server_dir, server_user

NAME = "postgres-replica"
SLOT = "courseflow_replica"
# Reads only, and no query cancelled because the primary vacuumed rows it still sees (the primary keeps them).
_OPTIONS = "-c hot_standby=on -c hot_standby_feedback=on"


def running_port(data_dir: Path) -> int | None:
    return postgres.running_port(data_dir, NAME)


def exists(data_dir: Path) -> bool:
    return (data_dir / NAME / "PG_VERSION").exists()


def up(data_dir: Path, bindir: Path, port: int, primary_port: int, saved: Credentials) -> int:
    """Start the replica, copying the primary first if there is none yet. A running one keeps its port."""
    user = server_user()
    pgdata = server_dir(data_dir, user, NAME)
    log = pgdata.parent / f"{NAME}.log"
    running = running_port(data_dir)
    if running is None:
        check_port_free(port, "the PostgreSQL replica")
        if not (pgdata / "PG_VERSION").exists():
            _copy_primary(bindir, pgdata, user, primary_port, saved, log)
        postgres.start(bindir, pgdata, user, port, log, _OPTIONS)
        running = port
    wait_until(lambda: postgres.answers(running, saved), START_TIMEOUT_S, "the PostgreSQL replica to answer", log)
    return running


def _copy_primary(
    bindir: Path, pgdata: Path, user: str | None, primary_port: int, saved: Credentials, log: Path
) -> None:
    """pg_basebackup -R: the copy, its standby.signal, and primary_conninfo with the replication role's password.

    That password lands in the replica's postgresql.auto.conf, inside its 0700 data directory."""
    assert saved.postgres_replication_password is not None
    with postgres.admin_connection(primary_port, saved) as conn:
        # Left by a replica whose data dir was deleted: its WAL would be kept for nobody.
        conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s and not active",
            (SLOT,),
        )
        if conn.execute("select 1 from pg_replication_slots where slot_name = %s", (SLOT,)).fetchone():
            raise ServicesError(f"replication slot {SLOT} on 127.0.0.1:{primary_port} is in use by another replica")
    backup = [str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port), "-U", REPLICATION_USER]
    backup += ["-D", str(pgdata), "-R", "-X", "stream", "-c", "fast", "-C", "-S", SLOT, "-w"]
    run(as_user(user, backup), "pg_basebackup", log, env={"PGPASSWORD": saved.postgres_replication_password})


def down(data_dir: Path) -> None:
    postgres.down(data_dir, NAME)
