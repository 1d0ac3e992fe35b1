"""What each `courseflow` command does: the local servers, the processes it runs, and the one-shot commands."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType

import msgspec
import psycopg

from courseflow.domain import MAX_ID
from courseflow.eventstore import migrations, partition_count, store
from courseflow.eventstore.eventlog import START, EventLog
from courseflow.platform import heap, logs, tracing
from courseflow.platform.config import Settings
from courseflow.platform.supervisor import Supervisor
from projections.projector import Projector

log = logging.getLogger("courseflow")
# Descriptors an API process holds besides its clients' connections: pools, listening socket, logs, imports.
_OWN_DESCRIPTORS = 512


def _installed_local_servers() -> ModuleType | None:
    """The local servers' package: development tooling of its own (devtools/), absent from a production install."""
    try:
        import courseflow_local
    except ModuleNotFoundError:
        return None
    return courseflow_local


def _local_servers() -> ModuleType:
    local = _installed_local_servers()
    if local is None:
        raise SystemExit(
            "courseflow: local servers need the development tooling (pip install -e devtools);"
            " in production set DATABASE_URL and REDIS_URL"
        )
    return local


def with_local_passwords(settings: Settings) -> Settings:
    """Where no URL is given, the local servers': with the passwords they were made with, for this process and the
    API, workers and projector it starts (they read their settings from the environment)."""
    local = None if settings.local.external_servers else _installed_local_servers()
    if local is None:
        return settings  # `courseflow run` and `services` say what is missing; other commands fail to connect
    completed: Settings = local.with_saved_passwords(settings)
    if completed is not settings:
        os.environ.setdefault("DATABASE_URL", completed.postgres.url)
        os.environ.setdefault("REDIS_URL", completed.redis.url)
    return completed


def local_server_errors() -> tuple[type[Exception], ...]:
    local = _installed_local_servers()
    return () if local is None else (local.ServicesError,)


def services(settings: Settings, action: str, data_dir: Path, redis_cluster: bool, replica: bool) -> int:
    services = _local_servers()
    if action == "up":
        replica_port = settings.local.postgres_replica_port if replica else None
        local = settings.local
        servers = services.up(data_dir, local.postgres_port, local.redis_port, replica_port, local.redis_maxmemory)
        # The application's credentials, ready for `eval`; the admin's are only in the file.
        print(f"export DATABASE_URL={servers.database_url}")
        print(f"export REDIS_URL={servers.redis_url}")
        # For `courseflow migrate` and `rebuild`: the tables are the owner's.
        print(f"export MIGRATION_DATABASE_URL={servers.owner_database_url}")
        if servers.replica_database_url is not None:
            print(f"export DATABASE_REPLICA_URL={servers.replica_database_url}")
        if redis_cluster:
            cluster = services.up_cluster(data_dir, settings.local.redis_cluster_port)
            # Addresses only: the cluster's users and passwords are the standalone Redis's.
            print(f"export REDIS_CLUSTER_NODES={cluster.nodes_setting}")
        print(f"passwords (application and admin) are kept in {servers.credentials_file}", file=sys.stderr)
    elif action == "down":
        services.down(data_dir)
    else:
        for name, state in services.status(data_dir).items():
            print(f"{name}: {state}")
    return 0


def token(settings: Settings, student: int | None, registrar: bool, sub: str | None, ttl: int) -> int:
    # Imported here: the signing stack (PyJWT, cryptography) costs every worker ~8 MB of resident memory.
    from courseflow.http import auth, claims, payloads

    if not settings.auth.jwt_secret and not settings.auth.jwt_public_key_file:
        print("courseflow token: authentication is off; set AUTH_JWT_SECRET to sign tokens", file=sys.stderr)
        return 2
    if student is not None and not payloads.is_id(str(student)):
        print(f"courseflow token: --student must be a student id from 1 to {MAX_ID}", file=sys.stderr)
        return 2
    fault = None if sub is None else claims.subject_fault(sub)
    if fault is not None:
        print(f"courseflow token: --sub {fault}", file=sys.stderr)
        return 2
    role: auth.Role = "student" if student is not None else "registrar" if registrar else "service"
    longest = auth.longest_lifetime(settings, role)
    if not 1 <= ttl <= longest:
        # The API refuses a token meant to live longer: better not to print one.
        print(f"courseflow token: --ttl must be between 1 and {longest} seconds for a {role}", file=sys.stderr)
        return 2
    print(auth.issue(settings, role, str(student) if student is not None else sub or role, ttl))
    return 0


def api(settings: Settings) -> int:
    import uvicorn

    from courseflow.http import door

    _refuse_another_partition_count(settings)
    _allow_descriptors(settings.http.max_connections)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn shuts down gracefully, then re-raises the signal to whatever handler came before it:
        # this one, so a requested stop ends with status 0.
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        "courseflow.http.app:create_served_app",
        factory=True,
        # uvicorn's own protocol behind the door's limits: head sizes, read and idle timeouts, connections.
        http=door.PROTOCOL,
        timeout_keep_alive=settings.http.keep_alive_s,
        host=settings.http.host,
        port=settings.http.port,
        workers=settings.http.processes if settings.http.processes > 1 else None,
        # uvicorn's loggers (access log included) propagate to our root handler; LOG_LEVEL sets their level.
        log_config=logs.uvicorn_config(settings),
        access_log=settings.http.access_log,
        # X-Forwarded-For is anyone's to write: trusted only when FORWARDED_ALLOW_IPS names the proxy.
        proxy_headers="FORWARDED_ALLOW_IPS" in os.environ,
        # A WebSocket message over this is refused from its frame's header (1009); the adapter bounds the rest.
        ws="courseflow.http.uvicorn_adapter:BoundedWebSocket",
        ws_max_size=settings.limits.ws_message_bytes,
    )
    return 0


def _allow_descriptors(connections: int) -> None:
    """Raise this process's open-file limit to fit `connections` and its own (pools, logs), as far as the hard
    limit allows: past it, connections fail with EMFILE before the door can refuse them politely."""
    import resource

    wanted = connections + _OWN_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning(
                "open-file limit %d is below HTTP_MAX_CONNECTIONS=%d plus %d: lower it or raise the limit",
                raised,
                connections,
                _OWN_DESCRIPTORS,
            )


def worker(settings: Settings, name: str) -> int:
    from courseflow.decisions.worker import Worker

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish and commit the batch in hand, acknowledge it, then exit.
        signal.signal(sig, lambda *_: stop.set())
    tracing.configure("courseflow-worker")
    heap.freeze_start_up()
    log.info("worker %s starting", name)
    Worker(settings, name, stop).run()
    log.info("worker %s stopped", name)
    return 0


def workers(settings: Settings, name: str, processes: int, metrics_port: int | None) -> int:
    """N worker processes, restarted if one dies, stopped together: more cores for the partitions of one host."""
    _refuse_another_partition_count(settings)  # before N children each fail on it, again and again
    env = dict(os.environ)
    if metrics_port is not None:
        # One port for all of them: the children write their series to files that this process adds up.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_metrics_dir(settings, env))
        serve_metrics(settings, metrics_port, multiprocess_dir=env["PROMETHEUS_MULTIPROC_DIR"])
    supervisor = Supervisor(env)
    for n in range(1, processes + 1):
        supervisor.add(f"{name}-{n}", [sys.executable, "-m", "courseflow", "worker", "--name", f"{name}-{n}"])
    log.info("starting %d workers", processes)
    return supervisor.run()


def _refuse_another_partition_count(settings: Settings) -> None:
    """Raises PartitionCountMismatch up front; a database not reachable yet is left to the component's own retries."""
    try:
        with psycopg.connect(settings.postgres.url, autocommit=True, connect_timeout=5) as conn:
            partition_count.verify(conn, settings.queue.partitions)
    except psycopg.OperationalError:
        pass


def projector(settings: Settings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tracing.configure("courseflow-projector")
    log.info("projector starting")
    Projector(settings.postgres.url, stop=stop).run()
    log.info("projector stopped")
    return 0


def serve_metrics(settings: Settings, port: int | None, multiprocess_dir: str | None = None) -> None:
    """For a worker or projector scraped on its own host; under `courseflow run` the API's /metrics has them."""
    if port is not None:
        from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = REGISTRY
        if multiprocess_dir is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, multiprocess_dir)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=settings.metrics.host, registry=registry)
        log.info("Prometheus series on http://%s:%d/metrics", settings.metrics.host, port)


def _fresh_metrics_dir(settings: Settings, env: dict[str, str]) -> Path:
    """Where the children write their series for the API's /metrics to add up; emptied of an earlier run's."""
    path = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or settings.local.data_dir / "prometheus")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only prometheus-client's own files: the directory may be the operator's
        stale.unlink()
    return path.resolve()


def history(settings: Settings, course_id: int | None, student_id: int | None) -> int:
    stream = None if course_id is None else store.course_stream(course_id)
    after = START
    with psycopg.connect(settings.postgres.url, autocommit=True) as conn, conn.cursor() as cur:
        while page := EventLog(cur).read(after, 1000, stream=stream, student_id=student_id):
            for r in page:
                data = msgspec.json.encode(msgspec.to_builtins(r.event)).decode()
                print(f"{r.position:>8}  {r.recorded_at:%Y-%m-%d %H:%M:%S.%f}  {r.stream}#{r.stream_version}  {data}")
            after = page[-1].checkpoint
    return 0


def run(settings: Settings, demo: bool, workers: int) -> int:
    env = dict(os.environ)
    started_servers = False
    if not settings.local.external_servers:
        services = _local_servers()
        running = services.status(settings.local.data_dir)
        started_servers = not all(running[name].startswith("running") for name in ("postgres", "redis"))
        local = settings.local
        servers = services.up(local.data_dir, local.postgres_port, local.redis_port, None, local.redis_maxmemory)
        env |= {"DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
        # The owner's URL serves the migration only: the API, workers and projector never see it.
        settings = Settings.from_env(env | {"MIGRATION_DATABASE_URL": servers.owner_database_url})
    try:
        pg = settings.postgres
        migrations.migrate(pg.owner_url, partitions=settings.queue.partitions, application_url=pg.url)
        if demo:
            with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
                if store.create_course(conn, 1, "Demo course", 10, None, None):
                    log.info("created demo course 1 (capacity 10)")
        command = [sys.executable, "-m", "courseflow"]
        # The API's /metrics then shows the workers' and projector's series too (prometheus-client multiprocess).
        env["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_metrics_dir(settings, env))
        supervisor = Supervisor(env)
        supervisor.add("api", [*command, "api"])
        for n in range(1, workers + 1):
            supervisor.add(f"worker-{n}", [*command, "worker", "--name", f"worker-{n}"])
        supervisor.add("projector", [*command, "projector"])
        base = f"http://{settings.http.host}:{settings.http.port}"
        print(f"CourseFlow is serving on {base} (API reference: {base}/docs; Ctrl-C stops it)")
        return supervisor.run()
    finally:
        if started_servers:
            services = _local_servers()
            # Servers this command started stop with it; ones that were already up keep running.
            services.down(settings.local.data_dir, only=("postgres", "redis"))
