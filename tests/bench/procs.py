"""Child processes of the benchmark: started with a log, waited on with deadlines, measured from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# The repository root: children run from here so `tests.bench.bare` is importable.
ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    pass


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll `condition` until it holds; returns the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (uvicorn's worker processes are children of its supervisor)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields restart after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/PID/status, such as VmHWM (peak resident set) or VmRSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Child:
    """One benchmark subprocess in its own session, so Ctrl-C reaches only the benchmark, which stops it."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        # Peak RSS per process of this child's tree, read just before it is stopped.
        self.peak_kb: dict[int, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with status {self.proc.returncode}{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:] if self.log.exists() else []
        return f"\n--- end of {self.log} ---\n" + "\n".join(text)

    def read_peaks(self) -> dict[int, int]:
        """VmHWM of the process and all its descendants; kept as the running maximum per pid."""
        for pid in [self.pid, *descendants(self.pid)]:
            hwm = status_kb(pid, "VmHWM")
            if hwm is not None:
                self.peak_kb[pid] = max(hwm, self.peak_kb.get(pid, 0))
        return self.peak_kb

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        if self.alive():
            self.read_peaks()
            self.proc.send_signal(signal.SIGTERM)
            self.resume()  # a paused child acts on SIGTERM only once continued

    def wait_stopped(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        # Our own session: whatever the child left behind (or the child itself, if stuck) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
