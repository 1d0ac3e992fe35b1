"""Reading the Dockerfile, .dockerignore and compose.yaml as Docker would, and what CourseFlow itself accepts."""

from __future__ import annotations

import argparse
import ast
import functools
import io
import json
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import redirect_stderr
from pathlib import Path
from typing import NamedTuple, NoReturn
from unittest import mock

from courseflow import cli
from courseflow.platform.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("courseflow", "projections")


# --- Dockerfile ---------------------------------------------------------------------------------------------


class Instruction(NamedTuple):
    keyword: str  # upper case
    arguments: str
    stage: int  # the build stage: 0 for the first FROM


def instructions(dockerfile: str) -> list[Instruction]:
    """One entry per instruction: comments dropped, `\\` continuations joined (default escape character)."""
    found: list[Instruction] = []
    pending = ""
    stage = -1
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue  # comments and blank lines, also inside a continued instruction, are not part of it
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        found.append(Instruction(keyword.upper(), arguments.strip(), stage))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued instruction")
    return found


def flags(arguments: str) -> tuple[dict[str, str], str]:
    """The leading `--name=value` flags of an instruction, and the rest."""
    found: dict[str, str] = {}
    while match := re.match(r"--([\w-]+)(?:=(\S*))?\s+", arguments):
        found[match[1]] = match[2] or ""
        arguments = arguments[match.end() :]
    return found, arguments


def words(arguments: str) -> list[str]:
    """Exec form (a JSON array) as it is; shell form as the shell would run it."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list) and all(isinstance(word, str) for word in parsed)
        return parsed
    return ["/bin/sh", "-c", arguments]


def healthcheck(arguments: str) -> list[str] | None:
    """The command of a HEALTHCHECK instruction; None for HEALTHCHECK NONE."""
    _, rest = flags(arguments)
    kind, _, command = rest.partition(" ")
    return None if kind.upper() == "NONE" else words(command.strip())


class DockerIgnore:
    """`.dockerignore` rules: the last pattern matching a path or one of its parent directories decides."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            keep = pattern.startswith("!")
            pattern = posixpath.normpath(pattern.removeprefix("!").strip().lstrip("/"))
            self.rules.append((keep, re.compile(_glob(pattern))))

    def excludes(self, path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        excluded = False
        for keep, pattern in self.rules:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                excluded = not keep
        return excluded


def _glob(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def context_files(source: str) -> Iterator[str]:
    """Files of the build context under `source`, as paths relative to it; bytecode caches left out."""
    path = ROOT / source
    if path.is_file():
        yield source
    for file in sorted(path.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts:
            yield file.relative_to(ROOT).as_posix()


# --- compose.yaml -------------------------------------------------------------------------------------------


class Interpolation(NamedTuple):
    name: str
    operator: str  # "" for ${NAME} or $NAME; else ":?", "?", ":-", "-", ":+" or "+"
    argument: str


# `$$` is a literal `$` for the container (its shell or program reads the variable), not interpolated by compose.
_INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolations(text: str) -> list[Interpolation]:
    found = []
    for match in _INTERPOLATION.finditer(text):
        if match[0] != "$$":
            found.append(Interpolation(match[1] or match[4], match[2] or "", match[3] or ""))
    return found


def strings(node: object) -> Iterator[str]:
    """Every string value in a parsed YAML document: what compose interpolates (comments are not)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def read_in_container(text: str) -> set[str]:
    """Variables a container's own shell (`$$NAME` in compose) or psql (`\\getenv`) reads."""
    shell = re.findall(r"\$\$\{?(\w+)", text)
    psql = re.findall(r"\\getenv\s+\w+\s+(\w+)", text)
    return {*shell, *psql}


# --- what CourseFlow accepts --------------------------------------------------------------------------------


class CommandError(Exception):
    pass


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


def courseflow_command(argv: Sequence[str]) -> argparse.Namespace:
    """`argv` parsed by the very parser `courseflow` builds, stopped before the command runs."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(
        self: argparse.ArgumentParser, args: Sequence[str] | None = None, namespace: None = None
    ) -> NoReturn:
        raise _Parsed(parse(self, args, namespace))

    errors = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), redirect_stderr(errors):
        try:
            cli.main(list(argv))
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit:
            raise CommandError(errors.getvalue().strip().splitlines()[-1]) from None
    raise AssertionError("courseflow's main() ran a command without parsing its arguments")


class _Recording(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, given: dict[str, str]) -> None:
        self.given = given
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.given[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)


def settings_variables() -> set[str]:
    """Every variable Settings.from_env looks up (with no URLs given it also asks for REDIS_HOST and REDIS_PORT)."""
    env = _Recording({"COURSEFLOW_DATA_DIR": "/nonexistent/courseflow-data"})
    Settings.from_env(env)
    return env.asked


def environ_reads() -> set[str]:
    """Variables the code reads from os.environ directly (`os.environ.get("X")`, `os.environ["X"]`, `"X" in
    os.environ`, `os.getenv("X")`), the name written out or held in a module-level constant."""
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            constants = {
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for target in node.targets
                if isinstance(target, ast.Name) and isinstance(node.value.value, str)
            }
            for node in ast.walk(tree):
                key: ast.expr | None = None
                if isinstance(node, ast.Call) and node.args and _reads_environ(node.func):
                    key = node.args[0]
                elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                    key = node.slice
                elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
                    key = node.left if _is_environ(node.comparators[0]) else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.add(key.value)
                elif isinstance(key, ast.Name) and key.id in constants:
                    found.add(constants[key.id])
    return found


def _is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_os(node.value)


def _reads_environ(func: ast.expr) -> bool:
    if not isinstance(func, ast.Attribute):
        return False
    return (func.attr == "get" and _is_environ(func.value)) or (func.attr == "getenv" and _is_os(func.value))


def _is_os(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "os"


@functools.cache
def app_variables() -> frozenset[str]:
    """Every environment variable CourseFlow reads: its Settings, and the few read where they are used."""
    return frozenset(settings_variables() | environ_reads())
