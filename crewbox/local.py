"""Embedded mode's workers: one local ``crewbox worker`` process per persona.

Each process serves its persona's queue under tasks/ exactly as a cluster worker serves its
Redis queue; its log goes to ``<log_dir>/<persona>.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

STOP_WAIT_S = 10.0
"""How long a worker gets to exit after SIGTERM before it is killed."""


class LocalWorkers:
    """Starts worker processes on enter, stops them on exit (a context manager)."""

    def __init__(
        self, personas: Iterable[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.personas = sorted(set(personas))
        self.log_dir = log_dir
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for persona in self.personas:
            self.processes[persona] = self._start(persona)
        return self

    def _start(self, persona: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "crewbox", "worker", "--persona", persona]
        env = {**os.environ, **(self.env or {})}
        with open(self.log_dir / f"{persona}.log", "ab") as log:
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.processes.values():
            proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
