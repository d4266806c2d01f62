"""The orchestrator: plan a request, dispatch its tasks in dependency order, synthesize.

One :class:`Orchestrator` serves embedded runs (``crewbox run``, in the CLI's process) and
the cluster's orchestrator service alike: it talks to workers only through a TaskQueue.
Every step is an Event in ``results/<run_id>/events.jsonl``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from crewbox.config import Settings
from crewbox.errors import ArtifactError, CrewboxError, PlanError
from crewbox.llm.base import LLMClient
from crewbox.models import (
    DependencyOutput,
    Event,
    Plan,
    Request,
    Result,
    RunSummary,
    Task,
    TaskSpec,
    Usage,
)
from crewbox.personas import Persona
from crewbox.queue.base import TaskQueue
from crewbox.store import RunStore
from orchestrator.dispatch import DependencyGraph
from orchestrator.plan import Planner
from orchestrator.synthesize import Synthesizer, fallback_answer

RESULT_GRACE_S = 30.0
"""How long past a task's timeout_s the orchestrator waits for its result before it counts
the task as lost (its worker died) and retries or fails it."""

RECEIVE_WAIT_S = 1.0
"""Longest single wait for results, so deadlines are checked at least this often."""


@dataclass
class RunState:
    """Mutable state of one run while it executes."""

    request: Request
    store: RunStore
    plan: Plan | None = None
    graph: DependencyGraph | None = None
    results: dict[str, Result] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    stage_usage: dict[str, Usage] = field(default_factory=dict)
    budget_exceeded: bool = False
    started_at_s: float = field(default_factory=time.time)

    def spent_usd(self) -> Usage:
        """Usage of every call so far (planner, tasks, synthesizer)."""
        return Usage.total(self.stage_usage.values())


class Orchestrator:
    """Runs requests: ``run(request) -> RunSummary``.

    ``on_event`` sees every event; ``on_finish(summary, final_text)`` runs once the answer and
    summary are written, before the ``run_finished`` event.
    """

    def __init__(
        self,
        settings: Settings,
        llm: LLMClient,
        queue: TaskQueue,
        personas: dict[str, Persona],
        planner_prompt: Persona,
        synthesizer_prompt: Persona,
        on_event: Callable[[Event], None] | None = None,
        on_finish: Callable[[RunSummary, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_finish = on_finish
        self.queue = queue
        self.personas = personas
        self.on_event = on_event
        model = settings.default_model()
        self.planner = Planner(
            llm,
            planner_prompt,
            personas,
            model=planner_prompt.model_or(model),
            max_tokens=settings.output_tokens(),
            repairs=settings.plan_repairs,
        )
        self.synthesizer = Synthesizer(
            llm,
            synthesizer_prompt,
            model=synthesizer_prompt.model_or(model),
            max_tokens=settings.output_tokens(),
            budget_tokens=settings.synthesis_tokens(),
        )

    # -- the run -----------------------------------------------------------------------
    def run(self, request: Request) -> RunSummary:
        """Plan, dispatch, synthesize; returns the summary also written to summary.json.

        Raises:
            PlanError: the plan is invalid (nothing was dispatched).
            LLMAPIError: the planner's call failed.
            Any error ends the run with a ``run_failed`` event before it propagates, so
            whoever follows the run is not left waiting.
        """
        state = RunState(request=request, store=RunStore(self.settings.results_dir, request.run_id))
        state.store.create(request)
        self.emit(state, "run_started", message=request.text[:200])
        try:
            return self._run(state)
        except Exception as exc:  # every failure ends the run visibly, then propagates
            with contextlib.suppress(Exception):
                self.emit(state, "run_failed", message=str(exc) or type(exc).__name__)
            raise

    def _run(self, state: RunState) -> RunSummary:
        state.plan = state.request.plan or self._plan(state)
        state.store.write_plan(state.plan)
        self.emit(
            state,
            "plan_ready",
            message=f"{len(state.plan.tasks)} tasks",
            data={"plan": state.plan.model_dump(mode="json")},
        )
        self._execute(state)
        return self._finish(state)

    def _plan(self, state: RunState) -> Plan:
        def on_call(usage: Usage) -> None:
            self._record_call(state, "planner", usage)

        def on_adjust(changes: list[str]) -> None:
            self.emit(state, "plan_adjusted", message="; ".join(changes), data={"changes": changes})

        try:
            return self.planner.plan(state.request, on_call, on_adjust)
        except PlanError as exc:
            self.emit(state, "plan_invalid", message=str(exc), data={"problems": exc.problems})
            raise

    # -- dispatch loop -----------------------------------------------------------------
    def _execute(self, state: RunState) -> None:
        assert state.plan is not None
        state.graph = graph = DependencyGraph(state.plan)
        while not graph.finished:
            self._skip_blocked(state)
            self._dispatch_ready(state)
            if graph.finished:
                break
            for message in self.queue.receive(state.request.run_id, self._wait_s(state)):
                self._on_message(state, message)
            self._expire_lost(state)

    def _dispatch_ready(self, state: RunState) -> None:
        assert state.graph is not None
        for spec in state.graph.ready():
            if self._over_budget(state):
                self._skip(state, spec, "budget reached")
                continue
            self._dispatch(state, spec, attempt=1)

    def _dispatch(self, state: RunState, spec: TaskSpec, attempt: int) -> None:
        assert state.graph is not None
        task = Task(
            run_id=state.request.run_id,
            spec=spec,
            request_text=state.request.text,
            context=state.request.shared_context(),
            dependencies=self._dependency_outputs(state, spec),
            allow_bash=state.request.allow_bash,
            attempt=attempt,
        )
        state.tasks[spec.id] = task
        state.deadlines[spec.id] = time.monotonic() + spec.timeout_s + RESULT_GRACE_S
        self.queue.enqueue(task)
        state.graph.mark_dispatched(spec.id)
        self.emit(
            state,
            "task_dispatched",
            task_id=spec.id,
            persona=spec.persona,
            message=spec.title,
            data={"attempt": attempt, "priority": spec.priority},
        )

    def _dependency_outputs(self, state: RunState, spec: TaskSpec) -> list[DependencyOutput]:
        outputs = []
        for dep_id in spec.depends_on:
            r = state.results[dep_id]
            paths = [f"{r.persona}/{r.task_id}/{a.path}" for a in r.artifacts]
            outputs.append(
                DependencyOutput(
                    task_id=r.task_id,
                    persona=r.persona,
                    title=r.title,
                    status=r.status,
                    summary=r.summary,
                    artifacts=paths,
                )
            )
        return outputs

    def _wait_s(self, state: RunState) -> float:
        if not state.deadlines:
            return RECEIVE_WAIT_S
        return max(0.0, min(RECEIVE_WAIT_S, min(state.deadlines.values()) - time.monotonic()))

    def _on_message(self, state: RunState, message: Result | Event) -> None:
        if isinstance(message, Event):
            self._publish(state, message)
        elif (
            message.task_id in state.deadlines
            and message.attempt == state.tasks[message.task_id].attempt
        ):
            self._on_result(state, message)

    def _on_result(self, state: RunState, result: Result) -> None:
        assert state.graph is not None
        state.deadlines.pop(result.task_id, None)
        for usage in result.calls:
            self._record_call(state, "tasks", usage, task_id=result.task_id, persona=result.persona)
        if result.status == "failed" and self._retry(state, result):
            return
        result = self._store_result(state, result)
        state.results[result.task_id] = result
        state.graph.mark_ended(result.task_id, result.status)
        tokens = result.usage.total_tokens
        self.emit(
            state,
            f"task_{result.status}",
            task_id=result.task_id,
            persona=result.persona,
            message=result.error or result.summary[:200],
            data={
                "worker": result.worker,
                "duration_ms": result.duration_ms,
                "tokens": tokens,
                "cost_usd": float(result.usage.cost_usd),
                "artifacts": [a.path for a in result.artifacts],
            },
        )

    def _store_result(self, state: RunState, result: Result) -> Result:
        """Write the result (and carried artifacts); a bad artifact fails the task instead.

        Returns the result as written (no carried content)."""
        try:
            return state.store.write_result(result)
        except ArtifactError as exc:
            failed = {"status": "failed", "error": str(exc), "artifacts": []}
            return state.store.write_result(result.model_copy(update=failed))

    def _retry(self, state: RunState, result: Result) -> bool:
        if not result.retryable or result.attempt > self.settings.task_retries:
            return False
        task = state.tasks[result.task_id]
        self.emit(
            state,
            "task_retried",
            task_id=result.task_id,
            persona=result.persona,
            message=f"attempt {result.attempt} failed: {result.error}",
        )
        self._dispatch(state, task.spec, attempt=result.attempt + 1)
        return True

    def _expire_lost(self, state: RunState) -> None:
        now = time.monotonic()
        for task_id, deadline in list(state.deadlines.items()):
            if now >= deadline:
                task = state.tasks[task_id]
                self._on_result(state, lost_result(task))

    def _skip_blocked(self, state: RunState) -> None:
        assert state.graph is not None
        for spec in state.graph.blocked():
            failed = [
                d for d in spec.depends_on if state.graph.ended.get(d) in ("failed", "skipped")
            ]
            self._skip(state, spec, f"dependency {', '.join(failed)} did not succeed")

    def _skip(self, state: RunState, spec: TaskSpec, reason: str) -> None:
        assert state.graph is not None
        result = Result(
            run_id=state.request.run_id,
            task_id=spec.id,
            persona=spec.persona,
            title=spec.title,
            status="skipped",
            error=reason,
        )
        state.results[spec.id] = result
        state.graph.mark_ended(spec.id, "skipped")
        self.emit(state, "task_skipped", task_id=spec.id, persona=spec.persona, message=reason)

    def _over_budget(self, state: RunState) -> bool:
        budget = state.request.budget_usd
        if budget is None or state.spent_usd().cost_usd < budget:
            return False
        if not state.budget_exceeded:
            state.budget_exceeded = True
            spent = state.spent_usd().cost_usd
            self.emit(
                state,
                "budget_exceeded",
                message=f"budget ${budget} reached (${spent:.6f} spent): dispatching nothing more",
                data={"budget_usd": float(budget), "spent_usd": float(spent)},
            )
        return True

    # -- synthesis and summary ---------------------------------------------------------
    def _finish(self, state: RunState) -> RunSummary:
        results = self._ordered_results(state)
        text = self._synthesize(state, results)
        path = state.store.write_final(text)
        self.emit(state, "synthesis_written", message=str(path))
        summary = self._summary(state, results, str(path))
        state.store.write_summary(summary)
        if self.on_finish:
            self.on_finish(summary, text)
        self.emit(
            state,
            "run_finished",
            message=summary.status,
            data={"usage": summary.usage_total.model_dump(mode="json")},
        )
        return summary

    def _synthesize(self, state: RunState, results: list[Result]) -> str:
        if not any(r.status == "succeeded" for r in results):
            return fallback_answer(state.request, results, "no task succeeded")

        def on_call(usage: Usage) -> None:
            self._record_call(state, "synthesizer", usage)

        try:
            return self.synthesizer.synthesize(state.request, results, state.store.folder, on_call)
        except CrewboxError as exc:
            self.emit(state, "synthesis_failed", message=str(exc))
            return fallback_answer(state.request, results, str(exc))

    def _ordered_results(self, state: RunState) -> list[Result]:
        assert state.plan is not None
        return [state.results[t.id] for t in state.plan.tasks if t.id in state.results]

    def _summary(self, state: RunState, results: list[Result], final_path: str) -> RunSummary:
        by_persona: dict[str, Usage] = {}
        for r in results:
            by_persona[r.persona] = by_persona.get(r.persona, Usage()) + r.usage
        statuses = {r.status for r in results}
        status = (
            "succeeded"
            if statuses == {"succeeded"}
            else ("partial" if "succeeded" in statuses else "failed")
        )
        ended = time.time()
        return RunSummary(
            run_id=state.request.run_id,
            request=state.request.text,
            status=status,
            started_at_s=state.started_at_s,
            ended_at_s=ended,
            duration_ms=round((ended - state.started_at_s) * 1000),
            tasks=results,
            usage_by_persona=by_persona,
            usage_by_stage={
                k: state.stage_usage.get(k, Usage()) for k in ("planner", "tasks", "synthesizer")
            },
            usage_total=state.spent_usd(),
            budget_usd=state.request.budget_usd,
            budget_exceeded=state.budget_exceeded,
            final_path=final_path,
        )

    # -- events ------------------------------------------------------------------------
    def _record_call(
        self,
        state: RunState,
        stage: str,
        usage: Usage,
        task_id: str | None = None,
        persona: str | None = None,
    ) -> None:
        state.stage_usage[stage] = state.stage_usage.get(stage, Usage()) + usage
        self.emit(
            state,
            "llm_call",
            task_id=task_id,
            persona=persona,
            message=stage,
            data={"stage": stage, "usage": usage.model_dump(mode="json")},
        )

    def emit(
        self,
        state: RunState,
        kind: str,
        *,
        task_id: str | None = None,
        persona: str | None = None,
        message: str = "",
        data: dict[str, object] | None = None,
    ) -> None:
        """Append an event to the run's events.jsonl and pass it to ``on_event``."""
        self._publish(
            state,
            Event(
                kind=kind,
                run_id=state.request.run_id,
                task_id=task_id,
                persona=persona,
                message=message,
                data=data or {},
            ),
        )

    def _publish(self, state: RunState, event: Event) -> None:
        state.store.append_event(event)
        if self.on_event:
            self.on_event(event)


def lost_result(task: Task) -> Result:
    """A failed, retryable Result for a task whose result never came back in time."""
    return Result.failed(
        task,
        f"no result within timeout_s={task.spec.timeout_s} + {RESULT_GRACE_S:.0f}s grace "
        "(the worker may have died)",
    )
