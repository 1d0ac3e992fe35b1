"""The local Redis: its config file with the admin and application users, started, stopped and asked."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from courseflow.platform.config import LocalSettings
from courseflow_local import credentials
from courseflow_local.credentials import APP_USER, REDIS_ADMIN_USER, Credentials
from courseflow_local.processes import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServicesError,
    alive,
    check_port_free,
    read_int,
    run,
    tail,
    wait_until,
)
from courseflow_local.unprivileged import as_user, give, server_dir, server_user

# For polls that have their own deadline: redis-py would otherwise retry a refused connection for seconds.
NO_RETRY = Retry(NoBackoff(), 0)
# Everything but administration and commands that can wipe or stall the whole server (FLUSHDB, KEYS...); INFO
# (read-only) for /metrics' memory gauge. FUNCTION LOAD stays (the application reloads a library a restarted Redis
# lost), but not wiping the functions or the script cache.
APP_RIGHTS = "~* &* +@all -@admin -@dangerous +info -function|flush -function|delete -function|restore -script|flush"
MAXMEMORY = LocalSettings().redis_maxmemory


def running_port(data_dir: Path) -> int | None:
    pid, port = read_int(data_dir / "redis" / "redis.pid"), read_int(data_dir / "redis.port")
    return port if pid is not None and alive(pid, "redis-server") else None


def up(data_dir: Path, binary: str, port: int, saved: Credentials, maxmemory: str = MAXMEMORY) -> int:
    running = running_port(data_dir)
    if running is not None:
        log = data_dir / "redis" / "redis.log"
        wait_until(lambda: answers(running, saved), START_TIMEOUT_S, "Redis to answer", log)
        with admin(running, saved) as client:  # one started before the bound, or with another size
            client.config_set("maxmemory", maxmemory)
            client.config_set("maxmemory-policy", "noeviction")
            client.execute_command("ACL", "SETUSER", APP_USER, *APP_RIGHTS.split())
        return running
    check_port_free(port, "Redis")
    user = server_user()
    workdir = server_dir(data_dir, user, "redis")
    (data_dir / "redis.port").write_text(f"{port}\n")
    start(binary, workdir, port, server_config(workdir, port, saved, maxmemory), saved, user)
    return port


def start(binary: str, workdir: Path, port: int, config: list[str], saved: Credentials, user: str | None) -> None:
    """Start one redis-server with `config` in `workdir` (its data, log and pidfile) and wait until it answers.

    Started by root, it runs as `user` (see courseflow_local.unprivileged), who then owns `workdir`."""
    log, pidfile, conf = workdir / "redis.log", workdir / "redis.pid", workdir / "redis.conf"
    workdir.mkdir(mode=0o700, exist_ok=True)
    workdir.chmod(0o700)  # the AOF holds every request: for this user's eyes only
    pidfile.unlink(missing_ok=True)
    # Passwords go in a 0600 file: on the command line every local user would see them in `ps`.
    credentials.write_private(conf, "".join(f"{line}\n" for line in config).encode())
    give(workdir, user)
    run(as_user(user, [binary, str(conf)]), "redis-server", log)

    def ready() -> bool:
        # The pidfile appears once Redis listens; a dead pid after that is a fatal error such as a bad AOF.
        pid = read_int(pidfile)
        if pid is not None and not alive(pid, "redis-server"):
            raise ServicesError(f"redis-server exited during startup{tail(log)}")
        return answers(port, saved)

    wait_until(ready, START_TIMEOUT_S, f"Redis on port {port} to answer", log)


def server_config(workdir: Path, port: int, saved: Credentials, maxmemory: str = MAXMEMORY) -> list[str]:
    """What every local Redis runs with, standalone or a cluster node: loopback, durable, bounded, two users."""
    return [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        "daemonize yes",
        f"dir {_quoted(workdir)}",
        f"pidfile {_quoted(workdir / 'redis.pid')}",
        f"logfile {_quoted(workdir / 'redis.log')}",
        # appendfsync always: an accepted request (202) must survive kill -9 of Redis.
        "appendonly yes",
        "appendfsync always",
        # Each request adds ~2 KB to the AOF: with the default 64mb, 5,000 req/s would set off a rewrite every few
        # seconds, and each fsync of an accepted request waits behind the rewrite's disk writes meanwhile. A rewrite
        # comes after 1 GB of growth instead (~500,000 requests); fsyncs stay on during it, so a 202 stays durable.
        "auto-aof-rewrite-min-size 1gb",
        "no-appendfsync-on-rewrite no",
        'save ""',
        # Full is refused, never evicted: a write past the bound fails (intake answers 503), and no accepted request,
        # idempotency key or pending index entry is dropped to make room.
        f"maxmemory {maxmemory}",
        "maxmemory-policy noeviction",
        f"user {REDIS_ADMIN_USER} reset on >{saved.redis_admin_password} ~* &* +@all",
        f"user {APP_USER} reset on >{saved.redis_app_password} {APP_RIGHTS}",
    ]


def _quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def admin(port: int, saved: Credentials) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=REDIS_ADMIN_USER,
        password=saved.redis_admin_password,
        socket_timeout=10,
        socket_connect_timeout=2,
        retry=NO_RETRY,
    )


def answers(port: int, saved: Credentials | None) -> bool:
    """True once Redis answers the admin; a refused password is an error, not a reason to wait."""
    try:
        with redis.Redis(
            host="127.0.0.1",
            port=port,
            username=REDIS_ADMIN_USER if saved else None,
            password=saved.redis_admin_password if saved else None,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=NO_RETRY,
        ) as client:
            return bool(client.ping())
    except redis.AuthenticationError:
        raise ServicesError(f"Redis on 127.0.0.1:{port} refuses the admin password of this data dir") from None
    except redis.RedisError:
        return False


def down(data_dir: Path) -> None:
    found = read_int(data_dir / "redis" / "redis.pid")
    stop([found] if found is not None else [])


def stop(pids: list[int]) -> None:
    """SIGTERM each server (Redis fsyncs its AOF and exits on it), then wait until all have exited."""
    running = [pid for pid in pids if alive(pid, "redis-server")]
    for pid in running:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not any(alive(pid, "redis-server") for pid in running), STOP_TIMEOUT_S, "Redis to stop", None)
