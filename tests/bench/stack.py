"""The system under test: local servers in a scratch dir, and the API, the bare ceiling and workers as processes."""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import courseflow_local as services
import msgspec
import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from redis.cluster import ClusterNode, RedisCluster

from courseflow.decisions import partitions
from courseflow.eventstore import migrations
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.bench import cpu
from tests.bench.procs import ROOT, BenchError, Child, status_kb, wait_until
from tests.bench.report import RESULTS
from tests.bench.sides import WORKING_TREE, Side

START_TIMEOUT_S = 60.0


class Server:
    """An HTTP server child (uvicorn, one or more processes behind one port)."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # A registrar's token, when the server runs with authentication on.
        self.bearer: str | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        return self._send("GET", path, None)

    def post(self, path: str, body: object) -> tuple[int, bytes]:
        return self._send("POST", path, body)

    def patch(self, path: str, body: object) -> tuple[int, bytes]:
        return self._send("PATCH", path, body)

    def _send(self, method: str, path: str, body: object) -> tuple[int, bytes]:
        # http.client, not urllib: no proxy settings from the environment can redirect a loopback call.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"}
            headers |= {} if self.bearer is None else {"Authorization": f"Bearer {self.bearer}"}
            conn.request(method, path, None if body is None else msgspec.json.encode(body), headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_courses(self, capacities: Mapping[int, int], **fields: object) -> None:
        for course_id, capacity in capacities.items():
            body = {"course_id": course_id, "capacity": capacity, "title": f"bench {course_id}", **fields}
            status, answer = self.post("/api/v1/courses", body)
            if status != 201:
                raise BenchError(f"creating course {course_id}: {status} {answer!r}")


def _keep_logs(data_dir: Path) -> Path:
    """Copy the servers' and children's logs out of the scratch dir before it is removed."""
    kept = RESULTS / f"failed-{time.strftime('%Y%m%dT%H%M%S')}"
    kept.mkdir(parents=True, exist_ok=True)
    for log in data_dir.rglob("*.log"):
        with suppress(OSError):
            shutil.copy(log, kept / log.name)
    return kept


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Stack:
    def __init__(self, data_dir: Path, local: services.LocalServers) -> None:
        self.data_dir = data_dir
        self.database_url = local.database_url
        self._own_database_url = local.database_url
        # Whose code the API, workers and projector run, on which database (see `use`).
        self.side = WORKING_TREE
        self.redis_url = local.redis_url
        # Recreating the database and flushing Redis between runs are the admin's to do, not the application's.
        self.admin_database_url = local.admin_database_url
        configured = Settings.from_env()
        self.keys = Keys(configured.queue.prefix, configured.queue.partitions)
        self.db = psycopg.connect(self.database_url, autocommit=True)
        self.redis = redis.Redis.from_url(local.admin_redis_url)
        # Largest VmHWM (kB) of any single process, per role: "api", "bare", "worker".
        self.peak_kb: dict[str, int] = {}
        self.live: dict[str, list[Child]] = {}
        self._started = 0
        # The local Redis Cluster, started for the first row that runs on it.
        self.cluster: services.LocalCluster | None = None

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[Stack]:
        """Fresh PostgreSQL and Redis on free ports in a scratch dir, migrated; all removed afterwards."""
        # /var/tmp and 0755: PostgreSQL runs as the postgres user when we are root and must reach the dir.
        data_dir = Path(tempfile.mkdtemp(prefix="courseflow-bench-", dir="/var/tmp"))
        data_dir.chmod(0o755)
        try:
            local = services.up(data_dir, services.free_port(), services.free_port())
            migrations.migrate(local.owner_database_url, application_url=local.database_url)
            stack = cls(data_dir, local)
            try:
                yield stack
            finally:
                stack.db.close()
                stack.redis.close()
        except BaseException:
            print(f"logs of the failed run kept in {_keep_logs(data_dir)}", file=sys.stderr)
            raise
        finally:
            services.down(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        # Development mode unless a row turns authentication on; its crowds come from one address: no limit.
        base = {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}
        base |= {"RATE_LIMIT_REGISTRAR": "off", "RATE_LIMIT_ANONYMOUS": "off"}
        return os.environ | base | self.side.env() | extra

    def use(self, side: Side) -> None:
        """Run `side`'s code from now on, on a database of its own: the next `reset` creates it and migrates it
        with that code. Only while no API or worker runs. Redis is shared: `reset` empties it too.
        """
        self.side = side
        if side.database is None:
            self.database_url = self._own_database_url
        else:
            parts = urlsplit(self._own_database_url)
            self.database_url = urlunsplit(parts._replace(path=f"/{side.database}"))

    def _migrate(self) -> None:
        """`courseflow migrate` of the side's own code: each version brings its own migrations."""
        argv = [sys.executable, "-m", "courseflow", "migrate"]
        done = subprocess.run(argv, env=self.env(), cwd=self.side.root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"{self.side.label}: courseflow migrate failed:\n{done.stdout}{done.stderr}")

    def cluster_env(self) -> dict[str, str]:
        """What makes a process use the local Redis Cluster (started on first use): its nodes, and the
        application's user, the same as the single Redis's."""
        if self.cluster is None:
            self.cluster = services.up_cluster(self.data_dir, services.free_cluster_port())
        credentials = urlsplit(self.redis_url).netloc.rpartition("@")[0]
        host, port = self.cluster.nodes[0]
        return {
            "REDIS_CLUSTER_NODES": self.cluster.nodes_setting,
            "REDIS_URL": f"redis://{credentials}@{host}:{port}/0",
        }

    def _spawn(self, role: str, argv: list[str], env: Mapping[str, str], name: str, cwd: Path) -> Child:
        self._started += 1
        child = Child(name, argv, env, self.data_dir / f"{self._started:02d}-{name}.log", cwd)
        self.live.setdefault(role, []).append(child)
        return child

    def _retire(self, roles: Mapping[str, list[Child]]) -> None:
        """Record each child's peak RSS, then stop them together (a worker first finishes its batch)."""
        for role, children in roles.items():
            for child in children:
                self.live[role].remove(child)
                self.peak_kb[role] = max(self.peak_kb.get(role, 0), *child.read_peaks().values(), 0)
        everyone = [child for children in roles.values() for child in children]
        for child in everyone:
            child.terminate()
        for child in everyone:
            child.wait_stopped()

    @contextmanager
    def http_server(self, role: str, module: str, processes: int, **extra: str) -> Iterator[Server]:
        """`python -m <module>` serving on a free port with `processes` uvicorn processes."""
        port = services.free_port()
        env = self.env(SERVER_HOST="127.0.0.1", SERVER_PORT=str(port), API_PROCESSES=str(processes), **extra)
        argv = [sys.executable, "-m", module, *(["api"] if module == "courseflow" else [])]
        # The side's own tree as working directory: Python puts it first on the import path.
        child = self._spawn(role, argv, env, role, self.side.root if module == "courseflow" else ROOT)
        try:
            # uvicorn logs this once per serving process (all are up, not just the first), but a single
            # process binds its port only afterwards: it must accept a connection too.
            def ready() -> bool:
                child.check_alive()
                started = child.log.read_text(errors="replace").count("Application startup complete.")
                return started >= processes and _listening(port)

            wait_until(ready, START_TIMEOUT_S, f"{role} to start")
            yield Server(child, port)
            child.check_alive()
        finally:
            self._retire({role: [child]})

    def api(self, processes: int = 1, **env: str) -> AbstractContextManager[Server]:
        return self.http_server("api", "courseflow", processes, **env)

    def bare(self, processes: int = 1) -> AbstractContextManager[Server]:
        return self.http_server("bare", "tests.bench.bare", processes)

    @contextmanager
    def workers(self, count: int, **extra: str) -> Iterator[list[Child]]:
        """`count` workers of the decision group and the projector beside them, as a deployment runs them:
        a decision counts once users can see it. Spawned at once; yields the workers without waiting for them."""
        argv = [sys.executable, "-m", "courseflow", "worker", "--name"]
        names = [f"bench-worker-{self._started + n + 1}" for n in range(count)]
        # BLOCK_MS only bounds an idle read (new entries end it at once); a short one makes SIGTERM quick.
        # Leases that outlast the pause while the backlog is filled (see throughput.decisions): a worker stopped
        # that long is dead to the others, who would take its partitions over in the measured run.
        env = self.env(BLOCK_MS="100", LEASE_MS="600000", CLAIM_IDLE_MS="1200000", **extra)
        root = self.side.root
        children = [self._spawn("worker", [*argv, name], env, name, root) for name in names]
        projector = self._spawn("projector", [sys.executable, "-m", "courseflow", "projector"], env, "projector", root)
        try:
            yield children
            for child in [*children, projector]:
                child.check_alive()
        finally:
            self._retire({"worker": children, "projector": [projector]})

    def wait_workers_ready(self, children: list[Child]) -> None:
        """The workers are ready once they hold every partition, each its even share."""
        share = self.keys.partitions / len(children)

        def ready() -> bool:
            for child in children:
                child.check_alive()
            held = Counter(partitions.owners(self.db).values())
            return all(int(share) <= held[child.name] <= math.ceil(share) for child in children) and held[None] == 0

        wait_until(ready, START_TIMEOUT_S, "workers to join the group")

    def reset(self) -> None:
        """A new, migrated database and an empty Redis, so no run inherits the tables or the backlog of another.

        Recreating beats truncating: it keeps whatever rows migrations seed, whatever tables they add.
        Only while no API or worker runs: they would hold connections and cached state.
        """
        self.db.close()
        app = conninfo_to_dict(self.database_url)
        name, owner = sql.Identifier(str(app["dbname"])), sql.Identifier(str(app["user"]))
        with psycopg.connect(self.admin_database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, owner))
        self._migrate()
        self.db = psycopg.connect(self.database_url, autocommit=True)
        self.redis.flushdb()
        if self.cluster is not None:
            with RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.cluster.nodes],  # type: ignore[no-untyped-call]
                username=self.cluster.admin_username,
                password=self.cluster.admin_password,
            ) as admin:
                admin.flushall(target_nodes=RedisCluster.PRIMARIES)
        # Start each run from flushed WAL and a compact AOF, so that a checkpoint or an AOF rewrite due to
        # the previous run's writes does not land in this one's measurement.
        with psycopg.connect(self.admin_database_url, autocommit=True) as admin:
            admin.execute("CHECKPOINT")
        self.redis.bgrewriteaof()

        def rewritten() -> bool:
            info = self.redis.info("persistence")
            return not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])

        wait_until(rewritten, START_TIMEOUT_S, "Redis to rewrite its AOF")

    def decided(self) -> int:
        row = self.db.execute("SELECT count(*) FROM enrollment_requests").fetchone()
        return int(row[0]) if row else 0

    def accepted(self) -> int:
        """Requests accepted so far: each 202 appended one stream entry. Counted by `entries-added`, not XLEN,
        because workers trim acknowledged entries from the stream."""
        added = 0
        for partition in self.keys.all():
            with contextlib.suppress(redis.ResponseError):  # no stream yet
                added += int(self.redis.xinfo_stream(partition.requests)["entries-added"])
        return added

    def wait_decided(self, timeout: float, count: int | None = None) -> None:
        """Until `count` requests (default: every accepted one) are decided; fails at once if a child died."""

        def done() -> bool:
            for children in self.live.values():
                for child in children:
                    child.check_alive()
            return self.decided() >= (self.accepted() if count is None else count)

        try:
            wait_until(done, timeout, "the requests to be decided", 0.01)
        except BenchError as exc:
            raise BenchError(f"{exc}: {self.decided():,} decided of {count or self.accepted():,}") from None

    def rss_kb(self, children: list[Child]) -> list[int]:
        return [kb for c in children if (kb := status_kb(c.pid, "VmRSS")) is not None]

    def _server_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        # Where services.up keeps them: Redis's pidfile, and the first line of PostgreSQL's postmaster.pid.
        for role, path in (("redis", "redis/redis.pid"), ("postgres", "postgres/postmaster.pid")):
            with suppress(OSError, ValueError, IndexError):
                pids[role] = [int((self.data_dir / path).read_text().split()[0])]
        if self.cluster is not None:
            pids["redis"] = pids.get("redis", []) + [p for p in map(self.cluster.pid, self.cluster.ports) if p]
        return pids

    @contextmanager
    def cpu_window(self) -> Iterator[dict[str, float]]:
        """Yields a dict filled, when the block ends, with the cores each role kept busy during it."""
        roles = self._server_pids() | {role: [c.pid for c in kids] for role, kids in self.live.items() if kids}
        usage: dict[str, float] = {}
        before, start = cpu.snapshot(roles), time.monotonic()
        yield usage
        roles |= {role: [c.pid for c in kids] for role, kids in self.live.items() if kids}
        usage.update(cpu.cores(before, cpu.snapshot(roles), time.monotonic() - start))
