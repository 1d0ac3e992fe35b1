"""The `courseflow` command: one entry point, a subcommand per part of the system."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import psycopg

from courseflow import services, store
from courseflow.config import Settings
from courseflow.supervisor import Supervisor

log = logging.getLogger("courseflow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="courseflow", description="Course enrollment for flash crowds.")
    commands = parser.add_subparsers(dest="command", required=True)

    svc = commands.add_parser("services", help="start, stop or inspect the local PostgreSQL and Redis")
    svc.add_argument("action", choices=["up", "down", "status"])
    svc.add_argument("--data-dir", type=Path, help="where server data lives (default: .courseflow)")

    commands.add_parser("migrate", help="apply the SQL migrations not yet applied")
    commands.add_parser("api", help="serve the HTTP API")
    worker = commands.add_parser("worker", help="decide requests as one consumer of the group")
    worker.add_argument("--name", help="consumer name; reuse it across restarts to recover its own entries")

    run = commands.add_parser("run", help="servers, migrations, demo course, API and workers, until Ctrl-C")
    run.add_argument("--no-demo", action="store_true", help="do not create the demo course")
    run.add_argument("--workers", type=int, help="number of workers (default: WORKERS or 2)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    try:
        match args.command:
            case "services":
                return _services(settings, args.action, args.data_dir or settings.data_dir)
            case "migrate":
                for name in store.migrate(settings.database_url):
                    print(f"applied {name}")
                return 0
            case "api":
                return _api(settings)
            case "worker":
                return _worker(settings, args.name or f"{socket.gethostname()}-{os.getpid()}")
            case "run":
                return _run(settings, demo=not args.no_demo, workers=args.workers or settings.workers)
    except (services.ServicesError, psycopg.OperationalError) as exc:
        print(f"courseflow {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _services(settings: Settings, action: str, data_dir: Path) -> int:
    if action == "up":
        servers = services.up(data_dir, settings.postgres_port, settings.redis_port)
        print(f"export DATABASE_URL={servers.database_url}")
        print(f"export REDIS_URL={servers.redis_url}")
    elif action == "down":
        services.down(data_dir)
    else:
        for name, state in services.status(data_dir).items():
            print(f"{name}: {state}")
    return 0


def _api(settings: Settings) -> int:
    import uvicorn

    uvicorn.run(
        "courseflow.api:create_app",
        factory=True,
        host=settings.server_host,
        port=settings.server_port,
        workers=settings.api_processes if settings.api_processes > 1 else None,
        access_log=False,
        log_level="info",
    )
    return 0


def _worker(settings: Settings, name: str) -> int:
    from courseflow.worker import Worker

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish and commit the batch in hand, acknowledge it, then exit.
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker %s starting", name)
    Worker(settings, name, stop).run()
    log.info("worker %s stopped", name)
    return 0


def _run(settings: Settings, demo: bool, workers: int) -> int:
    env = dict(os.environ)
    if not settings.external_servers:
        servers = services.up(settings.data_dir, settings.postgres_port, settings.redis_port)
        env |= {"DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
        settings = Settings.from_env(env)
    store.migrate(settings.database_url)
    if demo:
        asyncio.run(_demo_course(settings.database_url))
    command = [sys.executable, "-m", "courseflow"]
    supervisor = Supervisor(env)
    supervisor.add("api", [*command, "api"])
    for n in range(1, workers + 1):
        supervisor.add(f"worker-{n}", [*command, "worker", "--name", f"worker-{n}"])
    print(
        f"CourseFlow is serving on http://{settings.server_host}:{settings.server_port} (Ctrl-C stops it)", flush=True
    )
    return supervisor.run()


async def _demo_course(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if await store.create_course(conn, 1, "Demo course", 10):
            log.info("created demo course 1 (capacity 10)")
