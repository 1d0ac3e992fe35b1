"""The wheel as built: installed into a fresh virtual environment, it migrates an empty database."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import Servers

ROOT = Path(__file__).resolve().parents[2]
# What the image's build stage copies to build the wheel from (Dockerfile), and nothing else.
BUILT_FROM = ("pyproject.toml", "README.md", "courseflow", "projections", "sql")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILT_FROM:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (found,) = dist.glob("courseflow-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel; its dependencies are the project's own, made visible by a
    path file (no download), while the project's editable `courseflow` and its local servers stay out of sight."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path entry: the editable installs' own path files in there are not processed, so they stay out.
    Path(site, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run(venv: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Outside the checkout, with nothing of the environment that could point back into it.
    plain = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv.parent), **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=venv.parent, env=plain)


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    """A new database with nothing in it, owned by the schema owner's role; the application's URL for it."""
    owner = conninfo_to_dict(servers.owner_database_url)["user"]
    with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS courseflow_from_wheel")
        admin.execute(f'CREATE DATABASE courseflow_from_wheel OWNER "{owner}"')
    yield servers.database_url.rsplit("/", 1)[0] + "/courseflow_from_wheel"
    with psycopg.connect(servers.admin_database_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS courseflow_from_wheel (FORCE)")


def test_the_wheel_ships_the_migrations_and_no_local_servers(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    migrations = sorted(p.name for p in (ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
    assert migrations
    assert sorted(n.removeprefix("courseflow/sql/") for n in names if n.endswith(".sql")) == migrations
    assert [n for n in names if n.startswith(("courseflow_local/", "devtools/"))] == []
    # The local servers' code starts PostgreSQL and Redis from their programs: none of it is in the runtime.
    starters = [
        n
        for n in names
        if n.endswith(".py") and any(p in zipfile.Path(wheel, n).read_text() for p in ("initdb", "pg_ctl"))
    ]
    assert starters == []


def test_the_installed_wheel_is_what_runs(installed: Path) -> None:
    shown = run(
        installed,
        str(installed / "bin" / "python"),
        "-c",
        "import importlib.util, courseflow, projections;"
        " print(courseflow.__file__); print(projections.__file__); print(importlib.util.find_spec('courseflow_local'))",
    )
    assert shown.returncode == 0, shown.stderr
    courseflow_file, projections_file, local = shown.stdout.splitlines()
    assert Path(courseflow_file).is_relative_to(installed)
    assert Path(projections_file).is_relative_to(installed)
    assert local == "None"


def test_the_installed_wheel_migrates_an_empty_database(installed: Path, empty_database: str, servers: Servers) -> None:
    # What a production install sets: the servers' URLs (the schema owner's for migrate), and nothing that says
    # where the migrations are.
    owner_url = servers.owner_database_url.rsplit("/", 1)[0] + "/courseflow_from_wheel"
    env = {"DATABASE_URL": empty_database, "MIGRATION_DATABASE_URL": owner_url, "REDIS_URL": servers.redis_url}
    migrated = run(installed, str(installed / "bin" / "courseflow"), "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    applied = [line.removeprefix("applied ") for line in migrated.stdout.splitlines()]
    assert applied == sorted(p.stem for p in (ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
    with psycopg.connect(empty_database) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"schema_migrations", "events", "courses", "course_seats", "queue_partitions"} <= tables
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(applied),)
        # The application was granted its part: appending, not rewriting (unless it is the owner itself).
        conn.execute("INSERT INTO events (stream, stream_version, type, data) VALUES ('course-1', 1, 'X', '{}')")
        if owner_url != empty_database:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM events")
