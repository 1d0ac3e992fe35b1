"""`--doors`: intake through each way of bounding slow and heavy clients that was weighed, alternately in one run.

Run as `python -m tests.bench.doors` with the API's environment and BENCH_DOOR set, it serves CourseFlow's app:

- `uvicorn`: uvicorn with httptools, nothing bounded (the API before its door);
- `door`: `courseflow api` as shipped (uvicorn's protocol behind `courseflow.http.door`);
- `h11`: uvicorn's own settings only: the h11 parser with its head-size bound, keep-alive 5 s, a concurrency limit;
- `granian`: granian (if installed: pip install granian) with its header-read timeout and buffer bound;
- `haproxy`: haproxy (apt) in front of plain uvicorn, with the door's limits as haproxy rules.

Only `door` meets every limit (see the README's HTTP_* settings); the others are here for their cost.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from courseflow.platform import logs
from courseflow.platform.config import Settings
from tests.bench import wrk
from tests.bench.procs import BenchError
from tests.bench.stack import Stack
from tests.bench.throughput import INTAKE_COURSES, WRK_CONNECTIONS, WRK_THREADS

VARIANTS = ("uvicorn", "door", "h11", "granian", "haproxy")
APP = "courseflow.http.app:create_served_app"
# The message Stack waits for in a server's log (uvicorn's); printed by this module for servers that log otherwise.
STARTED = "Application startup complete."

HAPROXY = """global
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 5s
    option http-keep-alive
    http-reuse always
frontend door
    bind 127.0.0.1:{port}
    maxconn 4096
    stick-table type ip size 100k store conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc0_conn_cur gt 256 }}
    # haproxy 2.6 answers 400 where the door answers 414 and 431 (its deny_status takes neither).
    http-request deny deny_status 400 if {{ url_len gt 8192 }} || {{ req.hdr_cnt gt 100 }}
    default_backend api
backend api
    server api 127.0.0.1:{upstream}
"""


def _uvicorn(settings: Settings, port: int, **options: object) -> None:
    import uvicorn

    # As `courseflow api` calls it, but for the protocol and its options.
    proxy_headers = "FORWARDED_ALLOW_IPS" in os.environ
    log_config = logs.uvicorn_config(settings)
    config: dict[str, Any] = {"log_config": log_config, "proxy_headers": proxy_headers, **options}
    uvicorn.run(APP, factory=True, host="127.0.0.1", port=port, **config)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _beside(argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
    """Run `argv` until this process is told to stop; say STARTED once it listens on `port`."""
    child = subprocess.Popen(argv, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    deadline = time.monotonic() + 60
    while not _listening(port):
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{argv[0]} did not start")
        time.sleep(0.05)
    print(STARTED, flush=True)
    child.wait()


def serve(variant: str) -> None:
    settings = Settings.from_env()
    port = settings.http.port
    if variant == "door":
        from courseflow import commands

        commands.api(settings)
    elif variant == "uvicorn":
        _uvicorn(settings, port, http="httptools", access_log=False)
    elif variant == "h11":
        head = settings.http.max_request_line + settings.http.max_header_bytes
        options = {"h11_max_incomplete_event_size": head, "limit_concurrency": settings.http.max_connections}
        _uvicorn(settings, port, http="h11", access_log=False, timeout_keep_alive=5, **options)
    elif variant == "granian":
        binary = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
        argv = [binary, "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--loop", "uvloop", "--http", "1", "--http1-header-read-timeout", "10000"]
        argv += ["--http1-buffer-size", "24576", "--no-access-log", APP]
        _beside(argv, port)
    elif variant == "haproxy":
        upstream = _free_port()
        config = Path(tempfile.mkdtemp(prefix="courseflow-door-")) / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=port, upstream=upstream))
        api = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.doors", "uvicorn"], env=os.environ | {"SERVER_PORT": str(upstream)}
        )
        try:
            while not _listening(upstream):
                if api.poll() is not None:
                    raise SystemExit("uvicorn behind haproxy did not start")
                time.sleep(0.05)
            _beside([shutil.which("haproxy") or "haproxy", "-db", "-f", str(config)], port)
        finally:
            api.terminate()
            api.wait()
    else:
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")


def available(variant: str) -> bool:
    if variant == "granian":
        return shutil.which("granian") is not None or Path(sys.executable).with_name("granian").exists()
    if variant == "haproxy":
        return shutil.which("haproxy") is not None
    return True


class DoorRun(msgspec.Struct, frozen=True):
    run: wrk.WrkRun
    # CPU of the serving processes (API, and proxy where there is one) per request answered.
    cpu_us: float


def intake(stack: Stack, variant: str, seconds: float, warmup_s: float) -> DoorRun:
    """POST /enroll with unique bodies through `variant`, on a fresh database and Redis, no worker running."""
    stack.reset()
    with stack.http_server("api", "tests.bench.doors", 1, BENCH_DOOR=variant) as api:
        api.create_courses(INTAKE_COURSES)
        courses = list(INTAKE_COURSES)
        if warmup_s > 0:
            wrk.enroll(api.url, courses, f"{variant}-warmup", warmup_s, WRK_THREADS, WRK_CONNECTIONS)
        with stack.cpu_window() as usage:
            run = wrk.enroll(api.url, courses, variant, seconds, WRK_THREADS, WRK_CONNECTIONS)
    return DoorRun(run, usage.get("api", 0.0) * run.seconds / run.requests * 1e6)


def compare(
    stack: Stack, variants: list[str], seconds: float, warmup_s: float, rounds: int, say: Callable[[str], None]
) -> dict[str, list[DoorRun]]:
    """Each available variant once per round, in the same order each round (A B C … A B C …)."""
    variants = [v for v in variants if available(v)]
    runs: dict[str, list[DoorRun]] = {v: [] for v in variants}
    for round_no in range(1, rounds + 1):
        for variant in variants:
            say(f"round {round_no}/{rounds}: intake through {variant}")
            try:
                runs[variant].append(intake(stack, variant, seconds, warmup_s))
            except BenchError as exc:
                say(f"  {variant} failed: {exc}")
                continue
            done = runs[variant][-1]
            say(f"  {done.run.rps:,.0f} req/s, {done.cpu_us:,.0f} us of server CPU a request")
    return runs


def table(runs: dict[str, list[DoorRun]]) -> str:
    def rps(variant: str) -> float:
        return statistics.median(r.run.rps for r in runs[variant])

    def cpu(variant: str) -> float:
        return statistics.median(r.cpu_us for r in runs[variant])

    base = "uvicorn" if runs.get("uvicorn") else None
    header = "variant   median req/s  vs uvicorn  runs (req/s)                    p99 ms  CPU us/req  vs uvicorn"
    lines = [header]
    for variant, done in runs.items():
        if not done:
            lines.append(f"{variant:<9} failed")
            continue
        each = ", ".join(f"{r.run.rps:,.0f}" for r in done)
        p99 = statistics.median(r.run.p99_us for r in done) / 1000
        speed = f"{rps(variant) / rps(base):.2f}" if base else "-"
        cost = f"{cpu(variant) / cpu(base):.2f}" if base else "-"
        figures = f"{rps(variant):>12,.0f}  {speed:>10}  {each:<30} {p99:>7.1f}  {cpu(variant):>10,.0f}  {cost:>10}"
        lines.append(f"{variant:<9} {figures}")
    return "\n".join(lines)


def main() -> None:
    serve(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_DOOR", "door"))


if __name__ == "__main__":
    main()
