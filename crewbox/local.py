"""Embedded mode's workers: local ``crewbox worker`` processes started on demand, supervised.

A persona's workers start when the orchestrator first dispatches one of its tasks (its
``task_dispatched`` event, see :meth:`LocalWorkers.on_event`), never before planning and
never for personas the plan does not name. At most ``max_workers`` processes run
(CREWBOX_MAX_WORKERS, default :func:`default_max_workers`); a persona dispatched to while
they are all taken waits, announced on its queue as served (so its tasks are not failed as
workerless, see crewbox.queue.files.FileQueue.reserve), until a running persona is idle
(nothing pending or claimed on its queue): that one's workers are stopped and the waiting
persona's started. Each process serves one persona's queue under tasks/ exactly as a
cluster worker serves its Redis queue, with one folder watcher; its log goes to
``<log_dir>/<persona>.log``. A process that dies is started again within
SUPERVISE_INTERVAL_S, and the last line of its log says why it died. Workers run in their
own session, so a Ctrl-C in the terminal reaches only the CLI, which decides what it
means; each worker exits by itself when the CLI process is gone (``--parent-pid``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from crewbox.models import Event
from crewbox.queue.files import FileQueue

STOP_WAIT_S = 10.0
"""How long workers get to exit after SIGTERM before they are killed."""

SUPERVISE_INTERVAL_S = 0.5
"""How often the supervisor looks for dead workers and waiting personas."""

RECENT_DISPATCH_S = 2.0
"""A persona dispatched to this recently is not idle, whatever its queue shows (the
dispatch is logged just before its task is written)."""

QUICK_EXIT_S = 5.0
"""A worker that exits this soon after it started failed to start."""

START_TRIES = 3
"""A persona whose workers fail to start this many times in a row is given up (its tasks
then fail as workerless after CREWBOX_START_TIMEOUT_S, in the dead-letter queue)."""

log = logging.getLogger("crewbox.local")


def default_max_workers() -> int:
    """Worker processes embedded mode runs at once when CREWBOX_MAX_WORKERS is unset:
    twice the cores, at least 8 (idle workers cost ~0.6% of a core each, busy ones mostly
    wait on the LLM; issue 18 measured ~100 MB RSS per worker)."""
    return max(8, 2 * (os.cpu_count() or 1))


Slot = tuple[str, int]
"""A worker process's place: (persona, index among that persona's processes)."""


class LocalWorkers:
    """Worker processes on demand (see the module docstring); a context manager that
    stops them all on exit.

    ``personas``: started at once on enter (the rest on demand); ``per_persona``: processes
    per persona (their rate limits split among them); ``max_workers``: processes at most
    (None: :func:`default_max_workers`; never fewer than ``per_persona``); ``tasks_dir``:
    the files queue's folder, to see which personas are idle (None: CREWBOX_TASKS_DIR of
    ``env``, else ``tasks``).
    ``restarts`` counts restarts of dead processes; ``started`` every process started.
    """

    def __init__(
        self,
        personas: Iterable[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        per_persona: int = 1,
        max_workers: int | None = None,
        tasks_dir: Path | None = None,
    ) -> None:
        self.max_workers = max(max_workers or default_max_workers(), per_persona)
        self.per_persona = per_persona
        self.log_dir = log_dir
        self.env = env
        self.queue = FileQueue(tasks_dir or Path((env or {}).get("CREWBOX_TASKS_DIR", "tasks")))
        self.processes: dict[Slot, subprocess.Popen[bytes]] = {}
        self.waiting: list[str] = sorted(set(personas))
        self.restarts = 0
        self.started = 0
        self._dispatched_m: dict[str, float] = {}
        self._started_m: dict[int, float] = {}
        self._failed_starts: dict[str, int] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="workers")

    def __enter__(self) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._start_waiting()
        self._supervisor.start()
        return self

    # -- demand ------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """An orchestrator event: a ``task_dispatched`` starts its persona's workers when
        they do not run (or queues the persona when every process is taken)."""
        if event.kind != "task_dispatched" or not event.persona:
            return
        with self._lock:
            self._dispatched_m[event.persona] = time.monotonic()
            self._want(event.persona)
            self._start_waiting(evict=False)  # stopping idle workers is the supervisor's

    def _want(self, persona: str) -> None:
        """Queue ``persona`` for workers unless it has them or waits already."""
        if persona in self.running() or persona in self.waiting:
            return
        self.waiting.append(persona)
        self.queue.reserve(persona, os.getpid())

    def running(self) -> set[str]:
        """Personas with worker processes now."""
        return {persona for persona, _ in self.processes}

    def _start_waiting(self, evict: bool = True) -> None:
        """Start waiting personas while processes are free, stopping idle personas' workers
        to make room when ``evict`` (call with the lock held)."""
        while self.waiting and not self._stopping.is_set():
            full = len(self.processes) + self.per_persona > self.max_workers
            if full and not (evict and self._evict()):
                return
            persona = self.waiting.pop(0)
            for i in range(self.per_persona):
                self.processes[(persona, i)] = self._start(persona)
            self.queue.release(persona, os.getpid())

    def _evict(self) -> bool:
        """Stop the workers of one idle persona; False when none is idle."""
        now_m = time.monotonic()
        for persona in sorted(self.running()):
            recent = now_m - self._dispatched_m.get(persona, 0.0) < RECENT_DISPATCH_S
            if recent or self.queue.busy(persona):
                continue
            stopped = [self.processes.pop(s) for s in list(self.processes) if s[0] == persona]
            _stop_all(stopped)
            note = f"workers of {persona} stopped (idle) to make room for another persona"
            log.info(note)
            with open(self.log_dir / f"{persona}.log", "a", encoding="utf-8") as out:
                out.write(f"crewbox: {note}\n")
            if self.queue.busy(persona):  # a task came while they stopped
                self._want(persona)
            return True
        return False

    # -- processes ---------------------------------------------------------------------
    def _start(self, persona: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "crewbox", "worker", "--persona", persona]
        cmd += ["--parent-pid", str(os.getpid())]
        share = {"CREWBOX_RATE_LIMIT_SHARE": str(self.per_persona)}  # its rate limits split
        env = {**os.environ, **(self.env or {}), **share}
        self.started += 1
        with open(self.log_dir / f"{persona}.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._started_m[proc.pid] = time.monotonic()
        return proc

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            with self._lock:
                self._restart_dead()
                self._start_waiting()

    def _restart_dead(self) -> None:
        """Start again every dead worker; give a persona up after START_TRIES quick exits."""
        for slot, proc in list(self.processes.items()):
            if proc.poll() is None or self._stopping.is_set():
                continue
            persona = slot[0]
            why = last_line(self.log_dir / f"{persona}.log")
            quick = time.monotonic() - self._started_m.get(proc.pid, 0.0) < QUICK_EXIT_S
            self._failed_starts[persona] = self._failed_starts.get(persona, 0) + 1 if quick else 0
            if self._failed_starts[persona] >= START_TRIES:
                log.error(
                    "worker %s cannot start (exit %s, %d times): %s; not started again",
                    persona,
                    proc.returncode,
                    START_TRIES,
                    why,
                )
                del self.processes[slot]
                continue
            log.warning(
                "worker %s (pid %d) exited with %s: %s; starting another",
                persona,
                proc.pid,
                proc.returncode,
                why,
            )
            self.processes[slot] = self._start(persona)
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
            for persona in self.waiting:
                self.queue.release(persona, os.getpid())
        _stop_all(procs, wait=exc_type is not KeyboardInterrupt)


def _stop_all(procs: list[subprocess.Popen[bytes]], wait: bool = True) -> None:
    """SIGTERM each process, then (``wait``) wait STOP_WAIT_S for each before killing it.
    Without ``wait`` (a second Ctrl-C) each worker stops its task and exits by itself."""
    for proc in procs:
        proc.terminate()
    if not wait:
        return
    for proc in procs:
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(path: Path, tail_bytes: int = 4096) -> str:
    """The last non-empty line of a log file (at most its last ``tail_bytes``), or
    "no output" when it has none or cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1].strip()[:300] if lines else "no output"
