"""What the application's PostgreSQL role may do to each table; the schema's owner grants exactly this at migrate.

The owner (the role `courseflow migrate` connects as) owns every table. The application appends to and reads the
event log but may not change it: UPDATE, DELETE, TRUNCATE, ALTER and DISABLE TRIGGER stay the owner's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from psycopg import sql

from courseflow.eventstore.store import Conn

_READ = ("SELECT",)
_APPEND = ("SELECT", "INSERT")
_KEEP = ("SELECT", "INSERT", "UPDATE")
_CHURN = ("SELECT", "INSERT", "UPDATE", "DELETE")

# Every table the migrations create (tests/unit/test_privileges.py holds the two together).
APPLICATION: Final[Mapping[str, tuple[str, ...]]] = {
    "events": _APPEND,
    "schema_migrations": _READ,  # /ready compares it with the shipped files
    "queue_partitions": _READ,  # recorded by migrate
    # The write model: decisions update seats, statuses and backlogs in place.
    "courses": _KEEP,
    "enrollment_requests": _KEEP,
    "student_priorities": _KEEP,
    # Read models and their checkpoints (a waitlist place is deleted once left or promoted).
    "projection_checkpoints": ("SELECT", "UPDATE"),
    "course_seats": _KEEP,
    "enrollments": _KEEP,
    "enrollment_counters": _KEEP,
    "waitlist_entries": _CHURN,
    # Workers and their partition leases come and go.
    "partition_leases": _KEEP,
    "workers": _CHURN,
}


def grant(conn: Conn, role: str) -> None:
    """Give `role` exactly its privileges on the tables that exist, and the sequences of those it inserts into."""
    existing = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    for table, privileges in APPLICATION.items():
        if table not in existing:
            continue  # a database migrated only part of the way
        names = {"table": sql.Identifier(table), "role": sql.Identifier(role)}
        conn.execute(sql.SQL("REVOKE ALL ON {table} FROM {role}").format(**names))
        conn.execute(
            sql.SQL("GRANT {} ON {table} TO {role}").format(sql.SQL(", ").join(map(sql.SQL, privileges)), **names)
        )
    inserted = [table for table, privileges in APPLICATION.items() if "INSERT" in privileges]
    sequences = conn.execute(
        "SELECT s.relname FROM pg_class s"
        " JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE s.relkind = 'S' AND t.relnamespace = current_schema()::regnamespace AND t.relname = ANY(%s)",
        (inserted,),
    ).fetchall()
    for (sequence,) in sequences:
        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(sequence), sql.Identifier(role)))


def copy_grants(conn: Conn, source: str, target: str) -> None:
    """Grant on `target` what every role other than its owner holds on `source` (a rebuilt table replacing it)."""
    held = conn.execute(
        "SELECT r.rolname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a, pg_roles r"
        " WHERE c.oid = %s::regclass AND r.oid = a.grantee AND a.grantee <> c.relowner",
        (source,),
    ).fetchall()
    for grantee, privilege in held:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), sql.Identifier(target), sql.Identifier(grantee))
        )
