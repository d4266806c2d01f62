"""The TaskQueue protocol: how the orchestrator hands tasks to persona workers and hears back.

Two backends implement it with the same semantics: ``files`` (a folder per queue under
tasks/, claim by atomic rename, wake-ups by watchfiles) for embedded runs, and ``rq``
(Redis + RQ, one queue per persona) for the cluster. The orchestrator and workers only see
this protocol, so they run unchanged on either.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Callable, Collection
from typing import Protocol

from pydantic import BaseModel, ValidationError

from crewbox.models import Event, RejectedMessage, Result, Task, WorkerEvent
from crewbox.periodic import Periodic
from crewbox.procs import process_id

Emit = Callable[[Event], None]
"""Sends an event of a running task back to the orchestrator (e.g. ``task_started``)."""

TaskHandler = Callable[[Task, Emit], Result | None]
"""What a worker runs for each task it takes: returns the task's Result, never raises; None
when it discarded the task unrun (its run is no longer live) and nothing goes back."""

HEARTBEAT_INTERVAL_S = 1.0
"""How often a worker renews the heartbeat of the attempt it runs (the design: at most 2 s)."""

Message = Result | WorkerEvent
"""What a worker sends to its run's inbox: the Result of a task, or an event of it
(``emit``'s Event, sent with the attempt's number and token)."""

Inbound = Result | WorkerEvent | RejectedMessage
"""What the orchestrator reads from a run's inbox: a message, or what did not parse as one."""

MAX_REASON_CHARS = 200
"""A rejected message's reason is cut to this length (it never quotes the message)."""


def parse_message(raw: bytes | str) -> Inbound:
    """One inbox message read back: a Result, a WorkerEvent (a JSON object with an
    ``event`` key), or a RejectedMessage saying why it is neither. Never raises: anyone
    who may write to an inbox may write anything into it."""
    size = len(raw)
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one
        return RejectedMessage(reason=_cut(f"not JSON: {exc}"), size_bytes=size)
    if not isinstance(data, dict):
        return RejectedMessage(
            reason=f"not a JSON object but a {type(data).__name__}", size_bytes=size
        )
    model: type[BaseModel] = WorkerEvent if "event" in data else Result
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        reason = f"not a valid {model.__name__}: {where}: {first['msg']}"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        return RejectedMessage(reason=_cut(reason) + more, size_bytes=size)
    assert isinstance(message, (Result, WorkerEvent))
    return message


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def worker_event(task: Task, event: Event) -> WorkerEvent:
    """``event`` of ``task``'s attempt as its worker sends it: with the attempt's number and
    token (the orchestrator checks both before it logs the event)."""
    return WorkerEvent(attempt=task.attempt, token=task.token, event=event)


def heartbeat(beat: Callable[[], None]) -> Periodic:
    """A ``with`` block during which ``beat()`` (the backend's write; it must not raise) runs
    at once and then every HEARTBEAT_INTERVAL_S."""
    return Periodic(HEARTBEAT_INTERVAL_S, beat, "heartbeat", first_now=True)


def crashed_result(
    task: Task, worker_id: str, exc: BaseException, retryable: bool = True
) -> Result:
    """A failed Result for a task whose handler raised ``exc`` (its last traceback line)."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return Result.failed(task, f"worker crashed: {last}", worker=worker_id, retryable=retryable)


def default_worker_id() -> str:
    """``<hostname>:<pid>``: names a worker process in results and logs."""
    return process_id()


class TaskQueue(Protocol):
    """Queues of tasks, one per persona, plus a return channel per run."""

    def enqueue(self, task: Task) -> None:
        """Put ``task`` on its persona's queue (priority high before normal before low).

        Raises:
            QueueError: the backend cannot be written.
        """
        ...

    def serve(
        self,
        persona: str,
        handler: TaskHandler,
        *,
        worker_id: str,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Take tasks from ``persona``'s queue one at a time and run ``handler`` on each.

        Each task is taken by exactly one worker. The handler's Result and emitted events go
        back to the run's channel. Returns when ``stop`` is set, or, with ``burst``, when the
        queue is empty.
        """
        ...

    def receive(self, run_id: str, timeout_s: float) -> list[Inbound]:
        """Results and events of ``run_id`` that arrived, waiting up to ``timeout_s`` for one.

        Each is parsed on its own (:func:`parse_message`): one that does not parse is a
        RejectedMessage in its place, never an error. Returns an empty list on timeout.
        Each message is delivered once.
        """
        ...

    def heartbeats(self, run_id: str, personas: Collection[str]) -> dict[str, float]:
        """The last heartbeat (Unix time, s) of each started attempt of ``run_id`` by a
        worker of one of ``personas``, by attempt key (``<task_id>:<attempt>``). An attempt
        no worker has taken has none."""
        ...

    def waiting(self, tasks: list[Task]) -> set[str]:
        """The attempt keys of these attempts that are still on their queue or taken by a
        worker; the others were lost by the backend (a Redis restart can drop a job)."""
        ...

    def live_workers(self, persona: str) -> int:
        """How many workers of ``persona`` are alive now (serving its queue)."""
        ...

    def registered_workers(self, persona: str) -> int:
        """How many workers of ``persona`` are registered, alive or not (a killed one stays
        registered a while, so its restart can be waited for); 0: none was started."""
        ...

    def withdraw(self, tasks: list[Task]) -> list[str]:
        """Take these attempts off their queues where no worker has taken them yet.

        Returns the attempt keys withdrawn; the others are running (or gone).
        """
        ...

    def close_run(self, run_id: str, personas: Collection[str]) -> None:
        """Drop what the queue keeps for an ended run: its inbox and the heartbeats of
        ``personas``' attempts."""
        ...
