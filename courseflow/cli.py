"""The `courseflow` command: one entry point, a subcommand per part of the system (carried out in commands)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import psycopg
import redis
from redis.exceptions import RedisClusterException

from courseflow import commands
from courseflow.decisions import deadletters
from courseflow.eventstore import migrations
from courseflow.eventstore.migrations import SchemaOwnedByAnother
from courseflow.eventstore.partition_count import PartitionCountMismatch
from courseflow.platform import logs
from courseflow.platform.config import Settings
from projections import PROJECTIONS
from projections.rebuild import rebuild as rebuild_read_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="courseflow", description="Course enrollment for flash crowds.")
    subcommands = parser.add_subparsers(dest="command", required=True)

    svc = subcommands.add_parser("services", help="start, stop or inspect the local PostgreSQL and Redis")
    svc.add_argument("action", choices=["up", "down", "status"])
    svc.add_argument("--data-dir", type=Path, help="where server data lives (default: .courseflow)")
    svc.add_argument(
        "--redis-cluster",
        action="store_true",
        help="up: also start a local Redis Cluster of 3 masters and 3 replicas (for REDIS_CLUSTER_NODES)",
    )
    svc.add_argument(
        "--replica",
        action="store_true",
        help="up: also a streaming read replica of PostgreSQL (port COURSEFLOW_POSTGRES_REPLICA_PORT, default 55433)",
    )

    subcommands.add_parser("migrate", help="apply the SQL migrations not yet applied")
    subcommands.add_parser("api", help="serve the HTTP API")
    worker = subcommands.add_parser("worker", help="decide requests of the partitions this worker leases")
    worker.add_argument("--name", help="consumer name; reuse it across restarts to recover its own entries")
    worker.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="run N workers under one supervisor, named NAME-1 .. NAME-N (NAME defaults to the host name)",
    )
    worker.add_argument("--metrics-port", type=int, metavar="N", help=_METRICS_PORT_HELP)

    projector = subcommands.add_parser("projector", help="keep the read models current from the event log")
    projector.add_argument("--metrics-port", type=int, metavar="N", help=_METRICS_PORT_HELP)
    rebuild = subcommands.add_parser(
        "rebuild", help="rebuild read models from the start of the event log while serving, then switch"
    )
    rebuild.add_argument(
        "--projection", action="append", choices=sorted(PROJECTIONS), help="only this one (repeatable)"
    )
    hist = subcommands.add_parser("history", help="print the event history of a course or a student")
    who = hist.add_mutually_exclusive_group(required=True)
    who.add_argument("--course", type=int, metavar="N")
    who.add_argument("--student", type=int, metavar="N")

    token = subcommands.add_parser("token", help="print a bearer token signed with the configured key")
    role = token.add_mutually_exclusive_group(required=True)
    role.add_argument("--student", type=int, metavar="N", help="a student token for student N")
    role.add_argument("--registrar", action="store_true", help="a registrar token")
    role.add_argument("--service", action="store_true", help="a token for a trusted integration")
    token.add_argument("--sub", help="the subject of a registrar or service token (default: the role's name)")
    token.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (default: 3600)")

    subcommands.add_parser("check", help="verify the invariants on this deployment; exit 1 if one fails")
    dlq = subcommands.add_parser("dlq", help="list, retry or drop dead-lettered stream entries")
    dlq.add_argument("action", choices=["list", "retry", "drop"])
    dlq.add_argument("entry_ids", nargs="*", metavar="ENTRY_ID", help="dead-letter entry ids (retry, drop)")

    run = subcommands.add_parser("run", help="servers, migrations, demo course, API, workers, projector, until Ctrl-C")
    run.add_argument("--no-demo", action="store_true", help="do not create the demo course")
    run.add_argument("--workers", type=int, help="number of workers (default: WORKERS or 2)")

    args = parser.parse_args(argv)
    settings = commands.with_local_passwords(Settings.from_env())
    # Before anything logs: one renderer for our records and every library's (see courseflow.platform.logs).
    logs.configure(settings)
    try:
        match args.command:
            case "services":
                return commands.services(
                    settings, args.action, args.data_dir or settings.local.data_dir, args.redis_cluster, args.replica
                )
            case "migrate":
                pg = settings.postgres
                for name in migrations.migrate(
                    pg.owner_url, partitions=settings.queue.partitions, application_url=pg.url
                ):
                    print(f"applied {name}")
                return 0
            case "api":
                return commands.api(settings)
            case "worker" if args.processes > 1:
                return commands.workers(settings, args.name or socket.gethostname(), args.processes, args.metrics_port)
            case "worker":
                commands.serve_metrics(settings, args.metrics_port)
                return commands.worker(settings, args.name or f"{socket.gethostname()}-{os.getpid()}")
            case "projector":
                commands.serve_metrics(settings, args.metrics_port)
                return commands.projector(settings)
            case "rebuild":
                # Rebuilt tables replace the live ones: the schema owner's work.
                rebuilt = rebuild_read_models(settings.postgres.owner_url, args.projection)
                print(f"rebuilt up to position {rebuilt.position}")
                return 0
            case "history":
                return commands.history(settings, args.course, args.student)
            case "token":
                return commands.token(settings, args.student, args.registrar, args.sub, args.ttl)
            case "check":
                from courseflow import check

                findings = check.run(settings)
                print(check.report(findings))
                return 0 if all(f.ok for f in findings) else 1
            case "dlq":
                return deadletters.command(settings, args.action, args.entry_ids)
            case "run":
                return commands.run(settings, demo=not args.no_demo, workers=args.workers or settings.worker.count)
    except _ERRORS + commands.local_server_errors() as exc:
        print(f"courseflow {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


# What a command reports in one line instead of a traceback: a server it cannot reach or start.
_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    PartitionCountMismatch,
    SchemaOwnedByAnother,
    redis.RedisError,
    RedisClusterException,
)


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {raw!r}")
    return int(raw)


_METRICS_PORT_HELP = "serve this process's Prometheus series on this port (at METRICS_HOST, default 127.0.0.1)"
