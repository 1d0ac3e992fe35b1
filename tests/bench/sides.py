"""The code a run measures: the working tree, or a commit checked out beside it for an A/B comparison."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from tests.bench.procs import ROOT, BenchError


class Side(msgspec.Struct, frozen=True):
    """One version of CourseFlow: the tree its processes import from, and the database its runs get."""

    label: str
    root: Path
    # None: the stack's own database and the installed package, as `make bench` runs.
    database: str | None = None

    def env(self) -> dict[str, str]:
        """What makes `python -m courseflow` load this tree: its own folder first on the import path (the
        venv's editable install points at the working tree), and its own migrations (older code reads
        COURSEFLOW_SQL_DIR; newer code finds them beside its package anyway)."""
        if self.database is None:
            return {}
        return {"PYTHONPATH": str(self.root), "COURSEFLOW_SQL_DIR": str(self.root / "sql")}


WORKING_TREE = Side("working tree", ROOT)
_PROBE = "import courseflow, projections; print(courseflow.__file__); print(projections.__file__)"


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def checkout(commit: str) -> Iterator[Side]:
    """`commit` checked out (detached) in a scratch dir, removed afterwards, also on failure."""
    sha = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    scratch = Path(tempfile.mkdtemp(prefix="courseflow-bench-base-"))
    tree = scratch / "tree"
    try:
        _git("worktree", "add", "--detach", str(tree), sha)
        yield Side(sha[:7], tree, database="courseflow_base")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def check_imports(side: Side, env: dict[str, str]) -> None:
    """Fails unless a process started as the stack starts this side's imports the side's own tree."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=side.root, capture_output=True, text=True, check=False
    )
    found = done.stdout.split()
    if done.returncode != 0 or len(found) != 2 or not all(Path(f).is_relative_to(side.root) for f in found):
        raise BenchError(f"{side.label}: courseflow does not load from {side.root}: {done.stdout}{done.stderr}")
