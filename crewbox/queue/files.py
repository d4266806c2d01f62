"""The ``files`` TaskQueue backend: a folder per persona under tasks/, for embedded runs.

Layout::

    tasks/<persona>/pending/<rank>-<enqueued_ns>-<run_id>-<task_id>-a<attempt>.json
    tasks/<persona>/claimed/<worker_id>/<same name>      while a worker runs it
    tasks/_runs/<run_id>/<ns>-<kind>.json                results and events for the orchestrator
    tasks/_heartbeats/<run_id>/<task_id>:<attempt>       mtime: the attempt's last heartbeat
    tasks/_tmp/                                          files being written
    tasks/<persona>/workers/<worker_id>                  while that worker serves

Every file appears by rename from ``_tmp/`` (never half-written). A worker claims a task by
renaming it into its own ``claimed/`` folder: the rename succeeds for exactly one worker, and
so does a withdrawal (a rename back to ``_tmp/``). While it runs the task, the worker touches
the attempt's heartbeat file every HEARTBEAT_INTERVAL_S. A task claimed by a worker process
that no longer runs on this host goes back to ``pending/`` when the next worker of that
persona starts, unless it has a heartbeat: then the orchestrator has seen it start and
dispatches a new attempt itself once the heartbeat is stale.
Workers and the orchestrator wake on watchfiles notifications, not polling loops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

from pydantic import BaseModel

from crewbox.errors import QueueError
from crewbox.models import PRIORITY_RANK, Event, Result, Task
from crewbox.procs import is_dead_local
from crewbox.queue.base import (
    Inbound,
    Message,
    TaskHandler,
    crashed_result,
    heartbeat,
    parse_message,
    worker_event,
)
from crewbox.queue.watch import DirWatcher

RUNS_DIR = "_runs"
HEARTBEATS_DIR = "_heartbeats"
TMP_DIR = "_tmp"
WORKERS_DIR = "workers"


class FileQueue:
    """TaskQueue over a folder (``tasks/`` by default); safe across processes on one host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._watchers: dict[str, DirWatcher] = {}
        (root / TMP_DIR).mkdir(parents=True, exist_ok=True)

    # -- orchestrator side -------------------------------------------------------------
    def enqueue(self, task: Task) -> None:
        """Write ``task`` into ``<persona>/pending/`` (see the module docstring)."""
        rank = PRIORITY_RANK[task.spec.priority]
        name = f"{rank}-{time.time_ns()}{_suffix(task)}"
        self._publish(self.root / task.persona / "pending" / name, task)

    def withdraw(self, tasks: list[Task]) -> list[str]:
        """Rename each task's pending file away (then delete it) unless a worker took it."""
        withdrawn: list[str] = []
        for task in tasks:
            for path in self._pending(task.persona).glob(f"*{_suffix(task)}"):
                gone = self.root / TMP_DIR / f"{uuid.uuid4().hex}.withdrawn"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, gone)
                    gone.unlink()
                    withdrawn.append(task.attempt_key)
        return withdrawn

    def waiting(self, tasks: list[Task]) -> set[str]:
        """Attempts whose file is in ``pending/`` or in a worker's ``claimed/`` folder."""
        found: set[str] = set()
        for task in tasks:
            folder = self.root / task.persona
            pattern = f"*{_suffix(task)}"
            if any(folder.glob(f"pending/{pattern}")) or any(folder.glob(f"claimed/*/{pattern}")):
                found.add(task.attempt_key)
        return found

    def live_workers(self, persona: str) -> int:
        """Workers registered under ``<persona>/workers/`` whose process is not known dead
        (a worker of another host counts as alive: its processes cannot be seen)."""
        folder = self.root / persona / WORKERS_DIR
        with contextlib.suppress(FileNotFoundError):
            return sum(1 for p in folder.iterdir() if not _is_dead_local_worker(p.name))
        return 0

    def registered_workers(self, persona: str) -> int:
        """Workers registered under ``<persona>/workers/``, dead or alive."""
        with contextlib.suppress(FileNotFoundError):
            return sum(1 for _ in (self.root / persona / WORKERS_DIR).iterdir())
        return 0

    def busy(self, persona: str) -> bool:
        """True while ``persona`` has a task pending or claimed by a worker."""
        folder = self.root / persona
        return any(folder.glob("pending/*.json")) or any(folder.glob("claimed/*/*.json"))

    def reserve(self, persona: str, pid: int) -> None:
        """Count process ``pid`` of this host as a worker of ``persona`` (live_workers) until
        :meth:`release`: embedded mode promises one that waits for a free process."""
        path = self.root / persona / WORKERS_DIR / f"{socket.gethostname()}-{pid}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def release(self, persona: str, pid: int) -> None:
        """Withdraw :meth:`reserve`'s promise."""
        (self.root / persona / WORKERS_DIR / f"{socket.gethostname()}-{pid}").unlink(
            missing_ok=True
        )

    def heartbeats(self, run_id: str, personas: Collection[str]) -> dict[str, float]:
        """Attempt key → mtime of its heartbeat file (Unix time, s); one folder serves
        every persona (``personas`` is the protocol's, for backends that split them)."""
        folder = self.root / HEARTBEATS_DIR / run_id
        beats: dict[str, float] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    beats[entry.name] = entry.stat().st_mtime
        return beats

    def close_run(self, run_id: str, personas: Collection[str]) -> None:
        """Stop watching the run's inbox; remove it and its heartbeats."""
        watcher = self._watchers.pop(run_id, None)
        if watcher is not None:
            watcher.close()
        shutil.rmtree(self.root / RUNS_DIR / run_id, ignore_errors=True)
        shutil.rmtree(self.root / HEARTBEATS_DIR / run_id, ignore_errors=True)

    def receive(self, run_id: str, timeout_s: float) -> list[Inbound]:
        """Results and events of ``run_id``, waiting up to ``timeout_s`` for the first; each
        parsed on its own (a bad one is a RejectedMessage, never an error)."""
        folder = self.root / RUNS_DIR / run_id
        deadline = time.monotonic() + timeout_s
        watcher = self._watchers.get(run_id) or self._watchers.setdefault(
            run_id, DirWatcher(folder)
        )
        while True:
            messages = self._drain(folder)
            if messages or time.monotonic() >= deadline:
                return messages
            watcher.wait()

    def _drain(self, folder: Path) -> list[Inbound]:
        messages: list[Inbound] = []
        for path in sorted(folder.glob("*.json")):
            try:
                raw = path.read_bytes()
            except OSError as exc:  # e.g. a folder named *.json: no message, drop it
                raw = f"unreadable: {exc.strerror}".encode()
            messages.append(parse_message(raw))
            _remove(path)
        return messages

    # -- worker side -------------------------------------------------------------------
    def serve(
        self,
        persona: str,
        handler: TaskHandler,
        *,
        worker_id: str,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Run ``handler`` on ``persona``'s tasks one at a time until ``stop`` (or empty, burst)."""
        self.recover_orphans(persona)
        watcher = DirWatcher(self._pending(persona), stop)
        with self._registered(persona, worker_id):
            while not (stop and stop.is_set()):
                claimed = self._claim_next(persona, worker_id)
                if claimed is not None:
                    self._run_claimed(claimed, handler, worker_id)
                elif burst or not watcher.wait():
                    return

    @contextlib.contextmanager
    def _registered(self, persona: str, worker_id: str) -> Iterator[None]:
        """``<persona>/workers/<worker_id>`` exists while the worker serves (live_workers)."""
        path = self.root / persona / WORKERS_DIR / worker_id.replace(":", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def _claim_next(self, persona: str, worker_id: str) -> Path | None:
        claimed_dir = self._claimed(persona, worker_id)
        for path in sorted(self._pending(persona).glob("*.json")):
            target = claimed_dir / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another worker took it first
            return target
        return None

    def _run_claimed(self, claimed: Path, handler: TaskHandler, worker_id: str) -> None:
        task = Task.model_validate_json(claimed.read_bytes())
        with heartbeat(lambda: self._beat(task)):
            try:
                result = handler(task, self._emitter(task))
            except Exception as exc:  # the handler must not kill the worker; report instead
                result = crashed_result(task, worker_id, exc)
            if result is not None:
                self._publish_message(task.run_id, result)
        claimed.unlink(missing_ok=True)

    def _heartbeat_file(self, task: Task) -> Path:
        return self.root / HEARTBEATS_DIR / task.run_id / task.attempt_key

    def _beat(self, task: Task) -> None:
        path = self._heartbeat_file(task)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def _emitter(self, task: Task) -> Emitter:
        return Emitter(self, task)

    def recover_orphans(self, persona: str) -> list[Path]:
        """Put back tasks claimed by dead worker processes of this host that never started
        (no heartbeat); drop those that did (their orchestrator re-dispatches them).

        Returns the paths put back in ``pending/``.
        """
        recovered: list[Path] = []
        for folder in (self.root / persona / "claimed").glob("*"):
            if not _is_dead_local_worker(folder.name):
                continue
            for path in folder.glob("*.json"):
                target = self._pending(persona) / path.name
                with contextlib.suppress(FileNotFoundError, ValueError):
                    if self._heartbeat_file(Task.model_validate_json(path.read_bytes())).exists():
                        path.unlink()
                        continue
                    os.rename(path, target)
                    recovered.append(target)
            with contextlib.suppress(OSError):
                folder.rmdir()
        return recovered

    # -- files -------------------------------------------------------------------------
    def _pending(self, persona: str) -> Path:
        folder = self.root / persona / "pending"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _claimed(self, persona: str, worker_id: str) -> Path:
        folder = self.root / persona / "claimed" / worker_id.replace(":", "-")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _publish_message(self, run_id: str, message: Message) -> None:
        kind = "result" if isinstance(message, Result) else "event"
        name = f"{time.time_ns()}-{kind}-{uuid.uuid4().hex[:8]}.json"
        self._publish(self.root / RUNS_DIR / run_id / name, message)

    def _publish(self, target: Path, model: BaseModel) -> None:
        tmp = self.root / TMP_DIR / f"{uuid.uuid4().hex}.json"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(model.model_dump_json(), encoding="utf-8")
            os.rename(tmp, target)
        except OSError as exc:
            raise QueueError(f"cannot write to the task queue at {target.parent}: {exc}") from exc


class Emitter:
    """The ``emit`` callback a handler gets: sends events of the task's attempt to the
    run's channel, with the attempt's number and token."""

    def __init__(self, queue: FileQueue, task: Task) -> None:
        self._queue = queue
        self._task = task

    def __call__(self, event: Event) -> None:
        self._queue._publish_message(self._task.run_id, worker_event(self._task, event))


def _remove(path: Path) -> None:
    """Remove a file, or a folder someone put in its place."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _suffix(task: Task) -> str:
    """The end of a task's pending file name: ``-<run_id>-<task_id>-a<attempt>.json``."""
    return f"-{task.run_id}-{task.task_id}-a{task.attempt}.json"


def _is_dead_local_worker(folder_name: str) -> bool:
    host, _, pid = folder_name.rpartition("-")
    return is_dead_local(host, pid)
