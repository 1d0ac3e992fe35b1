"""What the Dockerfile and compose.yaml must say, as lists of problems (empty: nothing wrong)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml
from courseflow_local.credentials import APP_USER, OWNER_USER
from courseflow_local.redis_server import APP_RIGHTS

from tests import containers
from tests.containers import CommandError, DockerIgnore, courseflow_command, healthcheck, words

BASE_IMAGE = "python:3.11-slim"
SERVER_IMAGES = {"postgres": "postgres:15", "redis": "redis:7"}
# Each application service and the `courseflow` command it must run.
APP_SERVICES = {"migrate": "migrate", "api": "api", "worker": "worker", "projector": "projector"}
# What the postgres image reads (its documentation); the redis image reads no variable of its own.
POSTGRES_IMAGE_VARIABLES = {
    "POSTGRES_PASSWORD",
    "POSTGRES_USER",
    "POSTGRES_DB",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
}
# Set in the image for Python itself, not for CourseFlow.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
REQUIRED = re.compile(r"\$\{\w+:\?[^}]*\}")
# Must never reach the build context: history, environments, server data with its passwords, tests, caches.
STAYS_OUT = [
    ".git/config",
    ".env",
    ".venv/bin/python",
    ".courseflow/credentials.json",
    "tests/conftest.py",
    "courseflow/__pycache__/cli.cpython-311.pyc",
    ".pytest_cache/README.md",
    "build/lib/courseflow/cli.py",
]


def dockerfile_problems(dockerfile: str, dockerignore: str) -> list[str]:
    found = containers.instructions(dockerfile)
    final = max(i.stage for i in found)
    last = [i for i in found if i.stage == final]
    known = RUNTIME_VARIABLES | containers.app_variables()
    problems: list[str] = []
    stages: set[str] = set()
    for i in found:
        if i.keyword == "FROM":
            image, *alias = i.arguments.split()
            if image != BASE_IMAGE and image not in stages:
                problems.append(f"FROM {image}: every stage starts from {BASE_IMAGE}")
            stages.update(alias[1:])
        if i.keyword == "ADD" and any(re.match(r"(https?|git)://|git@", word) for word in i.arguments.split()):
            problems.append(f"ADD {i.arguments}: a remote download, unpinned and unverified")
        if i.keyword in ("ENV", "ARG"):
            for name in _declared(i.arguments):
                if SECRET_NAME.search(name):
                    problems.append(f"{i.keyword} {name}: bakes a secret into the image")
                if i.keyword == "ENV" and i.stage == final and name not in known:
                    problems.append(f"ENV {name}: CourseFlow reads no such variable")
    if final == 0 or not any(i.keyword == "COPY" and "from" in containers.flags(i.arguments)[0] for i in last):
        problems.append("the final stage takes nothing from a build stage: build tools and caches would ship")
    users = [i.arguments for i in last if i.keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root: USER names no unprivileged user")
    checks = [healthcheck(i.arguments) for i in last if i.keyword == "HEALTHCHECK"]
    if not checks or checks[-1] is None:
        problems.append("no HEALTHCHECK")
    entrypoints = [words(i.arguments) for i in last if i.keyword == "ENTRYPOINT"]
    if entrypoints[-1:] != [["courseflow"]]:
        problems.append(f"ENTRYPOINT {entrypoints[-1:]}: the image's entrypoint is `courseflow`")
    for command in [words(i.arguments) for i in last if i.keyword == "CMD"][-1:]:
        problems += _command_problems("CMD", command)
    problems += _migrations_problems(found)
    return problems + _context_problems(found, DockerIgnore(dockerignore))


def _declared(arguments: str) -> list[str]:
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0] and len(tokens) == 2:
        return tokens[:1]  # the legacy `ENV NAME value` form
    return [token.partition("=")[0] for token in tokens]


def _migrations_problems(found: list[containers.Instruction]) -> list[str]:
    """The wheel carries the migrations: `sql/` must be in place where it is built, before it is built."""
    built = [i for i in found if i.keyword == "RUN" and "pip wheel" in i.arguments]
    if not built:
        return ["no stage builds the wheel (`pip wheel`)"]
    copied = [
        i
        for i in found
        if i.keyword == "COPY"
        and i.stage == built[0].stage
        and found.index(i) < found.index(built[0])
        and containers.flags(i.arguments)[1].split()[0] == "sql"
    ]
    if not copied:
        return ["the wheel is built without sql/: `courseflow migrate` would find no migrations"]
    return []


def _context_problems(found: list[containers.Instruction], ignore: DockerIgnore) -> list[str]:
    problems = [f"{path} would enter the build context" for path in STAYS_OUT if not ignore.excludes(path)]
    for i in found:
        copy_flags, rest = containers.flags(i.arguments)
        if i.keyword not in ("COPY", "ADD") or "from" in copy_flags:
            continue
        for source in rest.split()[:-1]:
            files = list(containers.context_files(source))
            if not files:
                problems.append(f"{i.keyword} {source}: no such file in the build context")
            problems += [
                f"{i.keyword} {source}: {f} is left out of the build context" for f in files if ignore.excludes(f)
            ]
    return problems


def _command_problems(where: str, command: list[str]) -> list[str]:
    try:
        courseflow_command(command)
    except CommandError as exc:
        return [f"{where}: `courseflow {shlex.join(command)}` is refused: {exc}"]
    return []


def compose_problems(text: str) -> list[str]:
    compose = yaml.safe_load(text)
    services: dict[str, Any] = compose.get("services") or {}
    problems: list[str] = []
    expected = set(SERVER_IMAGES) | set(APP_SERVICES)
    if set(services) != expected:
        problems.append(f"services {sorted(services)}, expected {sorted(expected)}")
    for name, image in SERVER_IMAGES.items():
        if name in services and services[name].get("image") != image:
            problems.append(f"{name}: image {services[name].get('image')}, expected {image}")
        if name in services and not _health_test(services[name]):
            problems.append(f"{name}: no health check")
    app = [services[n] for n in APP_SERVICES if n in services]
    images = {(repr(s.get("build")), s.get("image")) for s in app}
    if len(images) != 1 or not all(s.get("build") and s.get("image") for s in app):
        problems.append(f"the application's services do not build and run one image: {sorted(images)}")
    for name, command in APP_SERVICES.items():
        if name in services:
            problems += _app_problems(name, command, services[name])
    for name, service in services.items():
        if "container_name" in service:
            problems.append(f"{name}: container_name keeps it to one container (--scale fails)")
    for key in ("ports", "hostname"):
        if key in services.get("worker", {}):
            problems.append(f"worker: {key} is the same for every replica (--scale fails)")
    problems += _redis_problems(services.get("redis", {}))
    return problems + _secret_problems(compose) + _variable_problems(compose)


def _app_problems(name: str, role: str, service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    argv = shlex.split(command) if isinstance(command, str) else command
    problems = _command_problems(name, argv)
    if not problems and (runs := courseflow_command(argv).command) != role:
        problems.append(f"{name}: runs `courseflow {runs}`, not `courseflow {role}`")
    if role == "api" and not _health_test(service):
        problems.append("api: no health check")
    if role != "api" and not (service.get("healthcheck") or {}).get("disable"):
        problems.append(f"{name}: keeps the image's HTTP health check, but serves no HTTP")
    env = _environment(service)
    needs = {"migrate": "service_completed_successfully"} if role != "migrate" else {}
    for variable, value in env.items():
        # Only migrate holds the schema owner's URL; everything else connects as the application.
        expected = OWNER_USER if variable == "MIGRATION_DATABASE_URL" and role == "migrate" else APP_USER
        for server in SERVER_IMAGES:
            if re.search(rf"@{server}:\d+/", value):
                needs[server] = "service_healthy"
                if (user := re.match(r"\w+://([^:@/]*)", value)) and user[1] != expected:
                    problems.append(f"{name}: connects as {user[1]!r}, not as {expected!r} ({variable})")
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {n: {"condition": "service_started"} for n in depends}
    for other, condition in needs.items():
        if (depends.get(other) or {}).get("condition") != condition:
            problems.append(f"{name}: must wait for {other} ({condition})")
    if role == "api":
        port = env.get("SERVER_PORT", "8000")
        published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports") or []]
        if published != [port]:
            problems.append(f"api: publishes container ports {published}, but listens on {port}")
    return problems


def _redis_problems(redis: dict[str, Any]) -> list[str]:
    script = " ".join(words(redis["command"]) if isinstance(redis.get("command"), str) else redis.get("command") or [])
    needed = ("--appendonly yes", "--appendfsync always", "--maxmemory ", "--maxmemory-policy noeviction")
    problems = [f"redis: {o.strip()} missing" for o in needed if o not in script]
    started = [line for line in script.splitlines() if "redis-server" in line]
    arguments = [word for word in shlex.split(started[0]) if not word.startswith("<<")] if started else []
    if arguments[-1:] != ["-"]:
        problems.append("redis: '-' (the users' config on stdin) is not redis-server's last argument")
    if not re.search(r"^\s*user default off\s*$", script, re.M):
        problems.append("redis: the default user is not off")
    rights = re.findall(rf"^\s*user {APP_USER} on >\S+ (.*)$", script, re.M)
    if rights != [APP_RIGHTS]:
        problems.append(f"redis: {APP_USER}'s rights {rights} differ from `courseflow services`' {APP_RIGHTS!r}")
    return problems


def _secret_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for interpolation in containers.interpolations("\n".join(containers.strings(compose))):
        if SECRET_NAME.search(interpolation.name) and interpolation.operator != ":?":
            problems.append(f"${{{interpolation.name}}} must be required (`:?`), with no default")
    for name, service in (compose.get("services") or {}).items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and not REQUIRED.fullmatch(value):
                problems.append(f"{name}: {key} is written in the file, not taken from the environment")
            if (url := re.match(r"\w+://[^:@/]*:(.*)@", value)) and not REQUIRED.fullmatch(url[1]):
                problems.append(f"{name}: {key} has a password written in the file")
    for config in (compose.get("configs") or {}).values():
        if re.search(r"PASSWORD\s+'", config.get("content", "")):
            problems.append("a config sets a password written in the file")
        if "CREATE ROLE" in config.get("content", "") and "NOSUPERUSER" not in config["content"]:
            problems.append("the application's PostgreSQL role may be a superuser")
    return problems


def _variable_problems(compose: dict[str, Any]) -> list[str]:
    services: dict[str, Any] = compose.get("services") or {}
    app = containers.app_variables()
    problems, passed = [], set()
    for name, service in services.items():
        env = _environment(service)
        if name in APP_SERVICES:
            problems += [f"{name}: CourseFlow reads no variable {key}" for key in env if key not in app]
            continue
        configs = [(compose.get("configs") or {}).get(c["source"], {}) for c in service.get("configs") or []]
        script = "\n".join(containers.strings([service.get("command"), service.get("healthcheck"), configs]))
        known = containers.read_in_container(script) | (POSTGRES_IMAGE_VARIABLES if name == "postgres" else set())
        problems += [f"{name}: neither the image nor its command reads {key}" for key in env if key not in known]
        passed |= set(env) & known
    for interpolation in containers.interpolations("\n".join(containers.strings(compose))):
        if interpolation.name not in app | POSTGRES_IMAGE_VARIABLES | passed:
            problems.append(f"${{{interpolation.name}}}: read by neither CourseFlow nor a server")
    return problems


def _health_test(service: dict[str, Any]) -> list[str] | str | None:
    check = service.get("healthcheck") or {}
    return None if check.get("disable") else check.get("test")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}
