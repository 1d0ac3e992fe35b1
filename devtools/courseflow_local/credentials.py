"""Passwords of the local servers: generated once per data dir, kept beside their data in a 0600 file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgspec

FILE_NAME = "credentials.json"
# The superuser of the local PostgreSQL cluster, and Redis's built-in user, which courseflow_local makes the admin.
POSTGRES_ADMIN_USER = "postgres"
REDIS_ADMIN_USER = "default"
# The role and Redis user the application connects as; also the name of its PostgreSQL database.
APP_USER = "courseflow"
# The role that owns that database and its tables: migrations connect as it, so the application may not alter them.
OWNER_USER = "courseflow_owner"
# The role a streaming replica of the local PostgreSQL connects as: replication only, no database rights.
REPLICATION_USER = "courseflow_replication"


class CredentialsError(RuntimeError):
    pass


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    postgres_admin_password: str
    postgres_app_password: str
    redis_admin_password: str
    redis_app_password: str
    # Absent from files saved before replicas existed: `load_or_create` adds it.
    postgres_replication_password: str | None = None
    # Absent from files saved before the schema had an owner of its own: `load_or_create` adds it.
    postgres_owner_password: str | None = None

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"  # keeps passwords out of logs and assertion messages

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            postgres_admin_password=secrets.token_urlsafe(24),
            postgres_app_password=secrets.token_urlsafe(24),
            redis_admin_password=secrets.token_urlsafe(24),
            redis_app_password=secrets.token_urlsafe(24),
            postgres_replication_password=secrets.token_urlsafe(24),
            postgres_owner_password=secrets.token_urlsafe(24),
        )


def path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def load(data_dir: Path) -> Credentials | None:
    """The saved credentials, or None when this data dir has none yet."""
    try:
        raw = path(data_dir).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path(data_dir)}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(raw, type=Credentials)
    except msgspec.DecodeError as exc:
        raise CredentialsError(f"{path(data_dir)} is not a valid credentials file: {exc}") from None


def load_or_create(data_dir: Path) -> Credentials:
    """The saved credentials, generated and saved first if there are none; callers serialise on the data dir."""
    found = load(data_dir)
    if found is not None and None not in (found.postgres_replication_password, found.postgres_owner_password):
        if path(data_dir).stat().st_mode & 0o077:
            path(data_dir).chmod(0o600)  # loosened by hand: only the owner may read passwords
        return found
    if found is None:
        created = Credentials.generate()
    else:  # saved by an older CourseFlow: keep every password, add the roles it did not have
        created = msgspec.structs.replace(
            found,
            postgres_replication_password=found.postgres_replication_password or secrets.token_urlsafe(24),
            postgres_owner_password=found.postgres_owner_password or secrets.token_urlsafe(24),
        )
    write_private(path(data_dir), msgspec.json.format(msgspec.json.encode(created), indent=2) + b"\n")
    return created


def write_private(target: Path, content: bytes) -> None:
    """Write a file only its owner may read: created 0600 before any byte is written, then renamed into place."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)  # left by a crash of a process that had this pid
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
