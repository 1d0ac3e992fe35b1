"""The application's PostgreSQL role reads and appends the event log and may not change it in any other way."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from courseflow.eventstore import migrations
from courseflow.platform.config import Settings
from tests.conftest import Servers
from tests.helpers import Conn

# What a compromised application might try on the log; each is the schema owner's alone.
FORBIDDEN = (
    "UPDATE events SET type = 'Other'",
    "DELETE FROM events",
    "TRUNCATE events",
    "ALTER TABLE events DISABLE TRIGGER events_append_only",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "DROP TRIGGER events_append_only ON events",
    "ALTER TABLE events ADD COLUMN forged text",
    "DROP TABLE events",
    "CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
    "CREATE TABLE intruder (x int)",
    "ALTER TABLE courses DROP CONSTRAINT courses_capacity_check",
    "DROP DATABASE courseflow",
)


@pytest.fixture
def owner_apart(settings: Settings) -> str:
    """The schema owner's role, when it is not the application's (servers given as one superuser URL share it)."""
    app = conninfo_to_dict(settings.postgres.url)["user"]
    owner = str(conninfo_to_dict(settings.postgres.owner_url)["user"])
    if app == owner:
        pytest.skip("these servers run the application as the schema's owner")
    return owner


def _append(db: Conn) -> None:
    db.execute(
        "INSERT INTO events (stream, stream_version, type, data) VALUES ('course-1', 1, 'CourseCreated', %s)",
        ('{"course_id": 1}',),
    )


def test_the_application_reads_and_appends_events(db: Conn) -> None:
    _append(db)
    assert db.execute("SELECT stream, type FROM events").fetchall() == [("course-1", "CourseCreated")]


@pytest.mark.usefixtures("owner_apart")
@pytest.mark.parametrize("statement", FORBIDDEN, ids=lambda s: " ".join(s.split()[:4]))
def test_the_application_may_not_change_the_log_or_the_schema(db: Conn, statement: str) -> None:
    _append(db)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(statement)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_the_application_owns_nothing(db: Conn, owner_apart: str) -> None:
    owned = db.execute(
        "SELECT relname FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND relnamespace = 'public'::regnamespace"
    ).fetchall()
    assert owned == []
    assert db.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    ).fetchone() == (owner_apart,)


@pytest.mark.usefixtures("owner_apart")
def test_migrate_refuses_tables_owned_by_another_role_and_says_what_to_run(
    servers: Servers, settings: Settings
) -> None:
    """A schema from before it had an owner: the application's role owns it, and only a superuser can hand it over."""
    app = conninfo_to_dict(settings.postgres.url)["user"]
    with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS courseflow_app_owned")
        admin.execute(f'CREATE DATABASE courseflow_app_owned OWNER "{app}"')
    try:
        app_url = settings.postgres.url.rsplit("/", 1)[0] + "/courseflow_app_owned"
        owner_url = settings.postgres.owner_url.rsplit("/", 1)[0] + "/courseflow_app_owned"
        assert migrations.migrate(app_url)  # as the older versions did
        with pytest.raises(migrations.SchemaOwnedByAnother, match="REASSIGN OWNED BY"):
            migrations.migrate(owner_url, application_url=app_url)
    finally:
        with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS courseflow_app_owned (FORCE)")
