"""The A/B benchmark's machinery: a commit checked out beside the working tree runs its own code, and goes."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.bench import ab, sides
from tests.bench.procs import ROOT


def _worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout


def test_a_checked_out_commit_runs_its_own_code_and_is_removed_afterwards() -> None:
    with sides.checkout("HEAD") as base:
        assert (base.root / "courseflow" / "__init__.py").exists()
        assert str(base.root) in _worktrees()
        # Raises unless `courseflow` and `projections` load from the checkout, not the installed working tree.
        sides.check_imports(base, os.environ | base.env())
    assert not base.root.exists()
    assert str(base.root) not in _worktrees()


def test_the_checkout_goes_also_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError), sides.checkout("HEAD") as base:
        raise RuntimeError("a run failed")
    assert not base.root.exists()
    assert str(base.root) not in _worktrees()


def test_the_table_gives_each_side_its_median_and_spread_and_the_ratio_new_over_old() -> None:
    row = ab.Comparison(
        "intake, 1 API process",
        "req/s",
        base=[1000.0, 1100.0, 900.0],
        new=[1500.0, 1500.0, 1500.0],
        base_cpu_us=[300.0, 310.0, 290.0],
        new_cpu_us=[200.0, 190.0, 210.0],
    )
    text = ab.table([row], sides.Side("abc1234", ROOT, "base"), sides.WORKING_TREE)
    assert row.ratio == 1.5
    line = text.splitlines()[-1]
    assert "1,000" in line and "900 to 1,100 (±10%)" in line and "1,500 to 1,500 (±0%)" in line
    assert line.split()[-4:] == ["1.50", "300", "→", "200"]
