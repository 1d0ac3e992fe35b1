"""Keeps the API and the workers running as child processes; stops them all on SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time

log = logging.getLogger("courseflow.supervisor")

# A child that dies more often than this within the window is broken, not unlucky.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_TIMEOUT_S = 30.0


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.commands: dict[str, list[str]] = {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.stop = threading.Event()

    def add(self, name: str, argv: list[str]) -> None:
        self.commands[name] = argv

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        for name in self.commands:
            self._start(name)
        status = 0
        while not self.stop.wait(0.5):
            for name, child in list(self.children.items()):
                if child.poll() is None:
                    continue
                log.warning("%s exited with status %s", name, child.returncode)
                self._reaped(child)
                recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    log.error("%s keeps failing; stopping everything", name)
                    status = 1
                    self.stop.set()
                    break
                self.restarts[name] = [*recent, time.monotonic()]
                self._start(name)
        self._stop_all()
        return status

    def _start(self, name: str) -> None:
        self.children[name] = subprocess.Popen(self.commands[name], env=self.env)
        log.info("started %s (pid %d)", name, self.children[name].pid)

    def _stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0fs; killing it", name, STOP_TIMEOUT_S)
                child.kill()
                child.wait()
            self._reaped(child)

    def _reaped(self, child: subprocess.Popen[bytes]) -> None:
        """A dead child's live gauges (workers alive) must stop counting in the shared metrics directory."""
        metrics_dir = self.env.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
