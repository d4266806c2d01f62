"""The worker service: serves one persona's queue, runs the agent loop per task.

Embedded runs write each task's output folder straight into ``results/<run_id>/...``; in the
cluster (``CREWBOX_WORK_DIR`` set) output goes to a private folder in the container and the
artifacts travel back inside the Result (``content_b64``), so no worker mounts results/.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from crewbox.config import Settings
from crewbox.errors import CrewboxError, LLMAPIError, UserError
from crewbox.llm.base import LLMClient
from crewbox.models import Event, Result, Task, Usage
from crewbox.personas import Persona
from crewbox.queue.base import Emit, default_worker_id
from crewbox.store import RunStore, list_artifacts, write_atomic
from worker.agent import AgentOutcome, AgentSetup, run_agent
from worker.tools import select_tools
from worker.tools.sandbox import Sandbox

log = logging.getLogger("crewbox.worker")

RESPONSE_FILE = "response.md"
"""Where the model's final text goes when the task wrote no file: every task delivers."""


class TaskRunner:
    """The queue handler of a worker: ``runner(task, emit) -> Result``, never raising."""

    def __init__(
        self, settings: Settings, persona: Persona, llm: LLMClient, worker_id: str = ""
    ) -> None:
        self.settings = settings
        self.persona = persona
        self.llm = llm
        self.worker_id = worker_id or default_worker_id()

    def __call__(self, task: Task, emit: Emit) -> Result:
        """Run ``task``; failures become a failed Result with a one-line error."""
        started = time.time()
        emit(
            Event(
                kind="task_started",
                run_id=task.run_id,
                task_id=task.task_id,
                persona=task.persona,
                message=f"{self.worker_id} started {task.task_id}",
                data={"worker": self.worker_id, "attempt": task.attempt},
            )
        )
        log.info("run %s task %s: started (attempt %d)", task.run_id, task.task_id, task.attempt)
        outcome = AgentOutcome()
        out_dir = self.output_dir(task)
        retryable = False
        try:
            outcome = self._run(task, out_dir, started)
            error = outcome.error
        except CrewboxError as exc:
            error, retryable = str(exc), isinstance(exc, LLMAPIError)
        result = self._result(task, out_dir, outcome, error, started)
        result.retryable = retryable
        log.info("run %s task %s: %s %s", task.run_id, task.task_id, result.status, error or "")
        return result

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

    def _run(self, task: Task, out_dir: Path, started: float) -> AgentOutcome:
        out_dir.mkdir(parents=True, exist_ok=True)
        workspace = self.workspace()
        roots = [out_dir] + ([workspace] if workspace and workspace.is_dir() else [])
        allow_bash = self.settings.allow_bash or task.allow_bash
        setup = AgentSetup(
            persona=self.persona,
            llm=self.llm,
            model=self.persona.model_or(self.settings.default_model()),
            tools=select_tools(self.persona.tools, allow_bash),
            sandbox=Sandbox(cwd=out_dir.resolve(), roots=[r.resolve() for r in roots]),
            workspace=workspace.resolve() if workspace else None,
            max_turns=self.settings.max_turns,
            max_tokens=self.settings.output_tokens(),
        )
        deadline = time.monotonic() + task.spec.timeout_s - (time.time() - started)
        outcome = run_agent(task, setup, deadline)
        deliver_text(out_dir, outcome.text)
        return outcome

    def _result(
        self, task: Task, out_dir: Path, outcome: AgentOutcome, error: str | None, started: float
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
            calls=outcome.calls,
            usage=Usage.total(outcome.calls),
            started_at_s=started,
            ended_at_s=ended,
            duration_ms=round((ended - started) * 1000),
            error=error,
            worker=self.worker_id,
            attempt=task.attempt,
        )


def deliver_text(out_dir: Path, text: str) -> None:
    """Write the model's final text to ``response.md`` when the task wrote no file itself.

    Models that cannot call tools (small local ones) still produce a deliverable this way.
    """
    if text.strip() and not any(p.is_file() for p in out_dir.rglob("*")):
        write_atomic(out_dir / RESPONSE_FILE, text.strip() + "\n")


def check_persona(personas: dict[str, Persona], name: str) -> Persona:
    """The persona called ``name``.

    Raises:
        UserError: no such persona; the message lists the known ones.
    """
    if name not in personas:
        known = ", ".join(sorted(personas))
        raise UserError(f"unknown persona {name!r}; known personas: {known} (see prompts/)")
    return personas[name]
