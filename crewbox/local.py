"""Embedded mode's workers: ``n`` local ``crewbox worker`` processes per persona, supervised.

Each process serves its persona's queue under tasks/ exactly as a cluster worker serves its
Redis queue; its log goes to ``<log_dir>/<persona>.log``. A process that dies is started
again within SUPERVISE_INTERVAL_S (the task it held is dispatched again by the orchestrator
once its heartbeat is stale). Workers run in their own session, so a Ctrl-C in the terminal
reaches only the CLI, which decides what it means; each worker exits by itself when the CLI
process is gone (``--parent-pid``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

STOP_WAIT_S = 10.0
"""How long workers get to exit after SIGTERM before they are killed."""

SUPERVISE_INTERVAL_S = 0.5
"""How often the supervisor looks for dead workers."""

log = logging.getLogger("crewbox.local")


class LocalWorkers:
    """Starts ``per_persona`` worker processes per persona on enter, restarts any that dies,
    stops them all on exit (a context manager). ``restarts`` counts restarts so far."""

    def __init__(
        self,
        personas: Iterable[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        per_persona: int = 1,
    ) -> None:
        self.slots = [(p, i) for p in sorted(set(personas)) for i in range(per_persona)]
        self.per_persona = per_persona
        self.log_dir = log_dir
        self.env = env
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="workers")

    def __enter__(self) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for slot in self.slots:
            self.processes[slot] = self._start(slot[0])
        self._supervisor.start()
        return self

    def _start(self, persona: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "crewbox", "worker", "--persona", persona]
        cmd += ["--parent-pid", str(os.getpid())]
        share = {"CREWBOX_RATE_LIMIT_SHARE": str(self.per_persona)}  # its rate limits split
        env = {**os.environ, **(self.env or {}), **share}
        with open(self.log_dir / f"{persona}.log", "ab") as out:
            return subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            with self._lock:
                for slot, proc in list(self.processes.items()):
                    if proc.poll() is not None and not self._stopping.is_set():
                        log.warning(
                            "worker %s (pid %d) exited with %s; starting another",
                            slot[0],
                            proc.pid,
                            proc.returncode,
                        )
                        self.processes[slot] = self._start(slot[0])
                        self.restarts += 1

    def pids(self, persona: str) -> list[int]:
        """The pids of ``persona``'s current worker processes."""
        return [p.pid for (name, _), p in self.processes.items() if name == persona]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        with self._lock:
            procs = list(self.processes.values())
        for proc in procs:
            proc.terminate()
        if exc_type is KeyboardInterrupt:
            return  # exit at once: each worker stops its task and exits by itself
        for proc in procs:
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
