"""The worker service: serves one persona's queue, runs the agent loop per task.

Embedded runs write each task's output folder straight into ``results/<run_id>/...``; in the
cluster (``CREWBOX_WORK_DIR`` set) output goes to a private folder in the container and the
artifacts travel back inside the Result (``content_b64``), so no worker mounts results/.

A task runs only while its run has a live owner (see crewbox.runlog): a task left on a
queue by a killed or ended run is discarded unrun. While a task runs, a watch thread stops
the agent loop at its next turn when the run is cancelled or loses its owner.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from crewbox import telemetry
from crewbox.budget import Limits, budgeted
from crewbox.config import Settings
from crewbox.errors import CrewboxError, LLMAPIError, UserError
from crewbox.llm.base import LLMClient
from crewbox.llm.limiter import ChangeSink, describe
from crewbox.models import (
    AttemptInfo,
    ConcurrencyChange,
    Event,
    EventKind,
    LLMCall,
    Payload,
    Result,
    Task,
    Usage,
    add_usage,
)
from crewbox.periodic import Periodic
from crewbox.personas import Persona, unknown_persona
from crewbox.queue.base import Emit, default_worker_id
from crewbox.runlog.base import RunLog
from crewbox.store import RunStore, list_artifacts, write_atomic
from crewbox.subagents import offered_subagents
from worker.agent import AgentOutcome, AgentSetup, run_agent, task_limits
from worker.engines.base import CLAUDE_CODE, EngineRun, engine_of
from worker.engines.claude_code import run_claude_code
from worker.subagents import TaskTool
from worker.tools import select_tools
from worker.tools.sandbox import Sandbox

log = logging.getLogger("crewbox.worker")

RESPONSE_FILE = "response.md"
"""Where the model's final text goes when the task wrote no file: every task delivers."""


WATCH_INTERVAL_S = 1.0
"""How often a running task checks whether its run was cancelled or lost its owner."""


class TaskRunner:
    """The queue handler of a worker: ``runner(task, emit) -> Result | None``, never raising.

    ``run_log``: where run ownership and cancel requests are read; None runs every task
    (unit tests). ``subagents``: the persona's sub-agents (None: read from
    ``prompts/<persona>/agents/`` when its tools allow Task); with any, the model gets the Task
    tool (worker.subagents).
    """

    def __init__(
        self,
        settings: Settings,
        persona: Persona,
        llm: LLMClient,
        worker_id: str = "",
        run_log: RunLog | None = None,
        limit_sink: ChangeSink | None = None,
        subagents: dict[str, Persona] | None = None,
    ) -> None:
        self.settings = settings
        self.persona = persona
        self.subagents = offered_subagents(persona) if subagents is None else subagents
        self.llm = llm
        self.worker_id = worker_id or default_worker_id()
        self.run_log = run_log
        self.limit_sink = limit_sink

    def __call__(self, task: Task, emit: Emit) -> Result | None:
        """Run ``task``; failures become a failed Result with a one-line error; None when
        the task's run is not live (discarded unrun)."""
        if not self._live(task.run_id):
            log.warning(
                "run %s task %s: discarded, the run has no live owner (it ended or "
                "was killed; `crewbox resume` runs it again)",
                task.run_id,
                task.task_id,
            )
            return None
        with (
            telemetry.attached(task.trace_context),
            telemetry.attempt_span(task) as span,
            telemetry.log_context(run_id=task.run_id, task_id=task.task_id, attempt=task.attempt),
        ):
            span.set_attribute(telemetry.WORKER, self.worker_id)
            result = self._run_attempt(task, emit)
            telemetry.end_status(span, result.status, result.error)
            return result

    def _run_attempt(self, task: Task, emit: Emit) -> Result:
        started = time.time()
        info = AttemptInfo(attempt=task.attempt, worker=self.worker_id)
        emit(task_event(task, "task_started", info, f"{self.worker_id} started {task.task_id}"))
        log.info("run %s task %s: started (attempt %d)", task.run_id, task.task_id, task.attempt)
        stop = threading.Event()
        with run_watch(self, task.run_id, stop), self._limit_events(task, emit):
            result = self._attempt(task, emit, stop, started)
        log.info(
            "run %s task %s: %s %s", task.run_id, task.task_id, result.status, result.error or ""
        )
        return result

    @contextlib.contextmanager
    def _limit_events(self, task: Task, emit: Emit) -> Iterator[None]:
        """While ``task`` runs, changes of its credential's concurrency limit are its run's
        ``concurrency_changed`` events."""
        sink = self.limit_sink
        if sink is None:
            yield
            return

        def on_change(change: ConcurrencyChange) -> None:
            log.warning("run %s task %s: %s", task.run_id, task.task_id, describe(change))
            emit(task_event(task, "concurrency_changed", change, describe(change)))

        sink.target = on_change
        try:
            yield
        finally:
            sink.target = None

    def _live(self, run_id: str) -> bool:
        return self.run_log is None or self.run_log.owner(run_id) is not None

    def stop_reason(self, run_id: str) -> bool:
        """True when the task of ``run_id`` in progress should stop: its run was cancelled
        or has no live owner."""
        if self.run_log is None:
            return False
        return self.run_log.cancel_requested(run_id) or self.run_log.owner(run_id) is None

    def _attempt(self, task: Task, emit: Emit, stop: threading.Event, started: float) -> Result:
        def on_call(usage: Usage, subagent: str | None) -> None:
            payload = LLMCall(stage="tasks", usage=usage, attempt=task.attempt, subagent=subagent)
            where = f"tasks/{subagent}" if subagent else "tasks"
            emit(task_event(task, "llm_call", payload, where))

        calls = AttemptCalls(on_call)
        outcome = AgentOutcome()
        out_dir = self.output_dir(task)
        retryable = False
        try:
            outcome = self._run(task, out_dir, started, calls, stop)
            error = outcome.error
        except CrewboxError as exc:
            error = str(exc)
            retryable = isinstance(exc, LLMAPIError) and exc.retryable
        result = self._result(task, out_dir, outcome, error, started, calls)
        result.retryable = retryable
        if outcome.cancelled:
            result.status = "cancelled"
        elif outcome.budget_exceeded:
            result.status, result.budget_scope = "budget_exceeded", outcome.budget_scope
        return result

    def _budgeted(self, task: Task) -> LLMClient:
        """The LLM behind the task's budgets: the run's and the persona's (crewbox.budget).

        Without a run log (unit tests) or a budget, the LLM itself."""
        limits: Limits = []
        if task.budget_usd is not None:
            limits.append(("run", task.budget_usd))
        if self.persona.budget_usd is not None:
            limits.append((f"persona:{self.persona.name}", self.persona.budget_usd))
        if self.run_log is None:
            return self.llm
        sharers = tuple(task.budget_spenders)
        return budgeted(self.llm, self.run_log, task.run_id, limits, sharers)

    def output_dir(self, task: Task) -> Path:
        """The task's working directory: its folder in results/, or in CREWBOX_WORK_DIR."""
        if self.settings.work_dir is not None:
            return self.settings.work_dir / task.run_id / task.persona / task.task_id
        store = RunStore(self.settings.results_dir, task.run_id)
        return store.task_dir(task.persona, task.task_id)

    def workspace(self) -> Path | None:
        """The persona's workspace folder, or None when it has none."""
        if self.settings.workspace_mount is not None:
            return self.settings.workspace_mount
        if not self.persona.workspace:
            return None
        return self.settings.workspaces_dir / self.persona.workspace

    def _run(
        self,
        task: Task,
        out_dir: Path,
        started: float,
        calls: AttemptCalls,
        stop: threading.Event,
    ) -> AgentOutcome:
        out_dir.mkdir(parents=True, exist_ok=True)
        workspace = self.workspace()
        read_only = [workspace] if workspace and workspace.is_dir() else []
        allow_bash = self.settings.allow_bash or task.allow_bash
        deadline = time.monotonic() + task.spec.timeout_s - (time.time() - started)
        if engine_of(self.settings, self.persona) == CLAUDE_CODE:
            run = EngineRun(
                task=task,
                persona=self.persona,
                llm=self._budgeted(task),
                model=self.settings.model_of(self.persona.model),
                out_dir=out_dir,
                workspace=read_only[0].resolve() if read_only else None,
                max_turns=self.persona.turns_or(self.settings.max_turns),
                allow_bash=allow_bash,
                deadline_m=deadline,
                stop=stop,
                on_call=calls.add,
                map_model=self.settings.model_of,
                subagents=self.subagents,
                timed_out=task_limits(task, deadline, stop).timed_out,
            )
            outcome = run_claude_code(run)
            deliver_text(out_dir, outcome.text)
            return outcome
        setup = AgentSetup(
            persona=self.persona,
            llm=self._budgeted(task),
            model=self.settings.model_of(self.persona.model),
            tools=select_tools(self.persona.tools, allow_bash),
            sandbox=Sandbox(cwd=out_dir, read_only=read_only),
            workspace=workspace.resolve() if workspace else None,
            max_turns=self.persona.turns_or(self.settings.max_turns),
            max_tokens=self.settings.output_tokens(),
        )
        if self.subagents:
            limits = task_limits(task, deadline, stop)
            claude = self.settings.resolved_provider() != "openai"
            setup.tools.append(TaskTool(self.subagents, setup, limits, calls.add, claude))
        outcome = run_agent(task, setup, deadline, calls.add, stop)
        deliver_text(out_dir, outcome.text)
        return outcome

    def _result(
        self,
        task: Task,
        out_dir: Path,
        outcome: AgentOutcome,
        error: str | None,
        started: float,
        calls: AttemptCalls,
    ) -> Result:
        carry = self.settings.work_dir is not None
        try:
            artifacts = list_artifacts(
                out_dir, carry=carry, max_bytes=self.settings.max_artifact_bytes
            )
        except CrewboxError as exc:
            artifacts, error = [], str(exc)
        if carry:
            shutil.rmtree(out_dir, ignore_errors=True)
        ended = time.time()
        return Result(
            run_id=task.run_id,
            task_id=task.task_id,
            persona=task.persona,
            title=task.spec.title,
            status="failed" if error else "succeeded",
            summary=outcome.text,
            artifacts=artifacts,
            calls=list(calls.calls),
            usage=Usage.total(calls.calls),
            usage_by_subagent=dict(calls.by_subagent),
            started_at_s=started,
            ended_at_s=ended,
            duration_ms=round((ended - started) * 1000),
            error=error,
            worker=self.worker_id,
            attempt=task.attempt,
            token=task.token,
        )


class AttemptCalls:
    """Every LLM call of one attempt, the persona's and its sub-agents' (which make them
    from several threads at once): ``add(usage, subagent=None)`` records one and passes it
    on to ``on_call(usage, subagent)``.

    ``calls``: each call's usage, in the order they returned; ``by_subagent``: the sum per
    sub-agent name of the calls its sub-agents made.
    """

    def __init__(self, on_call: Callable[[Usage, str | None], None]) -> None:
        self.on_call = on_call
        self.calls: list[Usage] = []
        self.by_subagent: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def add(self, usage: Usage, subagent: str | None = None) -> None:
        """Record one call (see the class docstring)."""
        with self._lock:
            self.calls.append(usage)
            if subagent:
                add_usage(self.by_subagent, subagent, usage)
        self.on_call(usage, subagent)


def task_event(task: Task, kind: EventKind, payload: Payload, message: str) -> Event:
    """An event of ``task``'s run about ``task`` (its id and persona set)."""
    return Event.of(
        kind, task.run_id, payload, task_id=task.task_id, persona=task.persona, message=message
    )


def run_watch(runner: TaskRunner, run_id: str, stop: threading.Event) -> Periodic:
    """A ``with`` block during which ``stop`` gets set once the runner says the task of
    ``run_id`` should stop (checked every WATCH_INTERVAL_S)."""

    def check() -> bool:
        try:
            should_stop = runner.stop_reason(run_id)
        except CrewboxError as exc:  # Redis away: keep working, look again later
            log.warning("run %s: cannot check the run's state: %s", run_id, exc)
            return False
        if should_stop:
            stop.set()
        return should_stop

    return Periodic(WATCH_INTERVAL_S, check, "run-watch")


def deliver_text(out_dir: Path, text: str) -> None:
    """Write the model's final text to ``response.md`` when the task wrote no file itself.

    Models that cannot call tools (small local ones) still produce a deliverable this way.
    """
    if text.strip() and not any(p.is_file() for p in out_dir.rglob("*")):
        write_atomic(out_dir / RESPONSE_FILE, text.strip() + "\n")


def check_persona(personas: dict[str, Persona], name: str) -> Persona:
    """The persona called ``name``.

    Raises:
        UserError: no such persona (the message lists the known ones), or its file is
            invalid (the message says why).
    """
    if name not in personas:
        raise UserError(f"{unknown_persona(name, personas)}; see prompts/")
    return personas[name]
