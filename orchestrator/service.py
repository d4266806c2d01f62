"""The orchestrator: plan a request, dispatch its tasks in dependency order, synthesize.

One :class:`Orchestrator` serves embedded runs (``crewbox run``, in the CLI's process) and
the cluster's orchestrator service alike: it talks to workers only through a TaskQueue and
keeps each run in a RunLog, event by event, so a run it drove can be resumed from its log
by ``crewbox resume`` or by another orchestrator once its owner lease expires.

Attempts: each dispatch of a task is an attempt with a number and a random token. A worker
renews the attempt's heartbeat while it runs; an attempt whose heartbeat is older than
CREWBOX_HEARTBEAT_TIMEOUT_S is lost and dispatched again at once (judged by the workers' own
timestamps, after the inbox is read: a late orchestrator loses nothing); so is one whose job
the queue lost (neither queued nor started). An attempt not started within
CREWBOX_START_TIMEOUT_S while no worker of its persona is alive ends failed, in the dead-letter
queue: nothing waits for ever.
A message (result or event) that does not parse or whose token does not match is dropped
(``message_rejected``); a result of an attempt that is no longer the task's current one is
superseded (its usage counts, its result is not used), unless it succeeded before its task
ended: then the task ends with it and its newer attempts are superseded.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from crewbox import telemetry
from crewbox.budget import budgeted, unpriced_models
from crewbox.config import Settings
from crewbox.errors import ArtifactError, CrewboxError, PlanError, UserError
from crewbox.limits import check_request_size
from crewbox.llm.base import LLMClient
from crewbox.models import (
    END_KIND,
    MAX_WORKER_MESSAGE_CHARS,
    AttemptInfo,
    BudgetInfo,
    ConcurrencyChange,
    DependencyOutput,
    Event,
    EventKind,
    LLMCall,
    Payload,
    PersonasOffered,
    Plan,
    PlanProblems,
    PlanReady,
    RejectedMessage,
    Request,
    Result,
    RunEnded,
    RunFailed,
    RunSummary,
    Stage,
    Task,
    TaskEnded,
    TaskSpec,
    TaskStatus,
    Usage,
    WorkerEvent,
)
from crewbox.periodic import Periodic
from crewbox.personas import Persona
from crewbox.procs import process_id
from crewbox.queue.base import Inbound, TaskQueue
from crewbox.runlog.base import LEASE_RENEW_S, RunLog
from crewbox.store import RunStore, check_artifacts
from crewbox.subagents import persona_models
from orchestrator.dispatch import DependencyGraph
from orchestrator.plan import Planner
from orchestrator.run import (
    ActiveRun,
    AttemptClaim,
    AttemptState,
    pending_work,
    replay,
    trusted_result,
    worker_payload,
)
from orchestrator.synthesize import Synthesizer, fallback_answer

RECEIVE_WAIT_S = 1.0
"""Longest single wait for results, so heartbeats and cancel are checked this often."""

HEARTBEAT_CHECK_S = 0.5
"""Heartbeats are read at most this often (a lost attempt is seen within the heartbeat
timeout plus this): reading them after every batch of results took a quarter of the
orchestrator's time in a 100-task run (py-spy)."""

UNSTARTED_CHECK_S = 2.0
"""Attempts not started yet are looked up on their queues at most this often (a job lost
by the queue is dispatched again within CREWBOX_HEARTBEAT_TIMEOUT_S plus this)."""

CANCEL_CHECK_S = 0.2
"""The run log's cancel flag (`crewbox cancel`) is read at most this often; Ctrl-C of the
process that drives the run is seen at once."""

MAX_REJECTED_LOGGED = 100
"""``message_rejected`` events one run logs at most; later bad messages are dropped unlogged."""

CANCEL_GRACE_S = 30.0
"""After a cancel, how long running attempts get to stop at their next turn and report
their usage before they are counted cancelled without a result."""


FINAL_NAME = "final.md"
"""The answer's file, as summary.json's ``final_path`` and the ``synthesis_written`` event
name it: relative to the run folder, which is not at the same path in a container and on
the host."""


class RunTakenOverError(CrewboxError):
    """Another orchestrator holds the run's lease: this one stops driving it."""


class RunHandedOverError(RunTakenOverError):
    """This orchestrator is shutting down: it gives the run's lease up for another."""


class ResultsDiskFullError(CrewboxError):
    """The results folder's disk is full: the run stopped where it was, resumable."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A write failed for want of space (or quota) on the device."""

RESULTS_MIN_FREE_BYTES = 64 * 1024 * 1024
"""A run is resumed only when the results folder's disk has this much free (64 MiB: a few
artifacts of CREWBOX_MAX_ARTIFACT_BYTES), so a takeover does not rerun tasks into a disk that
is still full."""


class Orchestrator:
    """Runs requests: ``run(request)`` and ``resume(run_id)`` return the RunSummary.

    ``on_event`` sees every event after it is in the run log. ``cancel`` (a threading
    Event) cancels every run this orchestrator drives, as ``crewbox cancel`` does for one;
    ``shutdown`` makes it stop driving its runs and release their leases at once, so
    another orchestrator (or this one restarted) takes them over without waiting for the
    leases to expire.
    """

    def __init__(
        self,
        settings: Settings,
        llm: LLMClient,
        queue: TaskQueue,
        personas: dict[str, Persona],
        planner_prompt: Persona,
        synthesizer_prompt: Persona,
        run_log: RunLog,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.settings = settings
        self.llm = llm
        self.queue = queue
        self.personas = personas
        self.log = run_log
        self.on_event = on_event
        self.cancel = threading.Event()
        self.shutdown = threading.Event()
        self.fail_without_worker = False
        """True in the cluster's orchestrator service: a task for a persona with no worker
        registered on the queue (its service not started) fails at once; embedded runs start
        their workers on demand and leave it False."""
        self.planner = Planner(
            llm,
            planner_prompt,
            personas,
            model=settings.model_of(planner_prompt.model),
            max_tokens=settings.output_tokens(),
            repairs=settings.plan_repairs,
            max_tasks=settings.max_planned_tasks,
            candidates=settings.planner_candidates,
        )
        self.synthesizer = Synthesizer(
            llm,
            synthesizer_prompt,
            model=settings.model_of(synthesizer_prompt.model),
            max_tokens=settings.output_tokens(),
            budget_tokens=settings.synthesis_tokens(),
        )

    # -- entry points --------------------------------------------------------------------
    def run(self, request: Request) -> RunSummary:
        """Plan, dispatch, synthesize a new run; returns the summary (also in the run log).

        Raises:
            PlanError: the plan is invalid (nothing was dispatched).
            LLMAPIError: the planner's call failed.
            Any error ends the run with a ``run_failed`` event before it propagates, so
            whoever follows the run is not left waiting.
        """
        store = RunStore(self.settings.results_dir, request.run_id)
        store.create(request)
        self.log.create(request)
        owner = self._acquire(request.run_id)
        run = ActiveRun(request=request, store=store, owner=owner)
        self.emit(run, "run_started", message=request.text[:200])
        return self._traced_drive(run)

    def resume(self, run_id: str) -> RunSummary:
        """Go on with a run from its log: what is left of it (see
        orchestrator.run.pending_work), keeping what stands (see orchestrator.run.replay).

        Raises:
            RunNotFoundError: no such run.
            UserError: the run has nothing left to do, or another live process owns it.
        """
        request = self.log.request(run_id)
        events = self.log.events(run_id)
        needed, rerun = pending_work(events, requested=True)
        if not needed:
            raise UserError(
                f"run {run_id} has finished; nothing to resume (`crewbox dlq list {run_id}` "
                "shows its failed tasks, `crewbox dlq retry` runs one again)"
            )
        self._check_results_space(run_id)
        owner = self._acquire(run_id)
        self.log.clear_cancel(run_id)
        store = RunStore(self.settings.results_dir, run_id)
        store.create(request)
        run, notes = replay(request, events, store, rerun)
        run.owner = owner
        kept = ", ".join(sorted(run.kept)) or "none"
        self.emit(run, "run_resumed", message="; ".join([f"kept: {kept}", *notes]))
        for state in run.in_flight_before_resume():
            self._emit_attempt(run, "attempt_lost", state, state.error or "lost")
        return self._traced_drive(run)

    def _acquire(self, run_id: str) -> str:
        """Take the run's lease under a new owner id (``<host>:<pid>:<nonce>``: two runs
        driven by one process, or two drives of one run, never share it); returns it."""
        owner = f"{process_id()}:{secrets.token_hex(4)}"
        if not self.log.acquire(run_id, owner):
            holder = self.log.owner(run_id)
            raise UserError(
                f"run {run_id} is being run by {holder}; `crewbox cancel {run_id}` stops it"
            )
        return owner

    def _traced_drive(self, run: ActiveRun) -> RunSummary:
        """:meth:`_drive` inside the run's span (``invoke_workflow``, crewbox.telemetry) and
        its log context; a resumed or taken-over run starts a trace of its own."""
        with telemetry.log_context(run_id=run.run_id), telemetry.run_span(run.run_id) as span:
            span.set_attribute(telemetry.ORCHESTRATOR, run.owner)
            try:
                summary = self._drive(run)
            except Exception as exc:
                telemetry.end_status(span, "failed", str(exc) or type(exc).__name__)
                raise
            telemetry.end_status(span, summary.status)
            return summary

    def _drive(self, run: ActiveRun) -> RunSummary:
        with LeaseKeeper(self.log, run.run_id, run.owner) as lease:
            try:
                return self._drive_owned(run, lease)
            except Exception as exc:  # every failure ends the run visibly, then propagates
                if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
                    self._stop_disk_full(run, exc)
                if not isinstance(exc, RunTakenOverError):
                    with contextlib.suppress(Exception):
                        self.emit(run, "run_failed", message=str(exc) or type(exc).__name__)
                raise

    def _stop_disk_full(self, run: ActiveRun, exc: OSError) -> None:
        """End a run whose results could not be written for want of space with a
        ``run_failed`` that leaves it resumable (RunFailed.resumable).

        Raises:
            ResultsDiskFullError: always, naming the disk and how to go on.
        """
        where = exc.filename or self.settings.results_dir
        reason = (
            f"the results disk is full ({where}: {exc.strerror}); the run stopped and can go "
            f"on: free space under {self.settings.results_dir}, then `crewbox resume "
            f"{run.run_id}` (in the cluster an orchestrator goes on with it by itself)"
        )
        with contextlib.suppress(Exception):  # the event log may be on that disk too
            self._publish(
                Event.of("run_failed", run.run_id, RunFailed(resumable=True), message=reason)
            )
        raise ResultsDiskFullError(reason) from exc

    def _check_results_space(self, run_id: str) -> None:
        """Raises ResultsDiskFullError when the results disk has less than
        RESULTS_MIN_FREE_BYTES free (nothing is written, nothing dispatched)."""
        folder = self.settings.results_dir
        free = shutil.disk_usage(folder if folder.exists() else Path.cwd()).free
        if free < RESULTS_MIN_FREE_BYTES:
            raise ResultsDiskFullError(
                f"run {run_id} not resumed: the results disk ({folder}) has {free // 1024} KiB "
                f"free, less than {RESULTS_MIN_FREE_BYTES // 2**20} MiB; free space first"
            )

    def _drive_owned(self, run: ActiveRun, lease: LeaseKeeper) -> RunSummary:
        check_request_size(run.request, self.settings, self.planner.model)  # before any call
        self._check_budget_enforceable(run)
        if run.plan is None:
            plan = run.request.plan or self._plan(run)
            run.plan = plan
            run.store.write_plan(plan)
            self.emit(run, "plan_ready", PlanReady(plan=plan), message=f"{len(plan.tasks)} tasks")
        run.graph = DependencyGraph(run.plan)
        self._execute(run, lease)
        summary = self._finish(run)
        self.queue.close_run(run.run_id, run.personas())
        return summary

    def _plan(self, run: ActiveRun) -> Plan:
        def on_call(usage: Usage) -> None:
            self._record_call(run, "planner", usage)

        def on_adjust(changes: list[str]) -> None:
            self.emit(
                run, "plan_adjusted", PlanProblems(problems=changes), message="; ".join(changes)
            )

        def on_offer(names: list[str]) -> None:
            of = len(self.personas)
            cap = f"plan at most {self.planner.cap} tasks"
            offered = PersonasOffered(offered=names, of=of)
            self.emit(run, "personas_offered", offered, message=f"{len(names)} of {of}; {cap}")

        try:
            with telemetry.stage_span("plan", run.run_id):
                return self.planner.plan(
                    run.request, on_call, on_adjust, llm=self._run_llm(run), on_offer=on_offer
                )
        except PlanError as exc:
            self.emit(run, "plan_invalid", PlanProblems(problems=exc.problems), message=str(exc))
            raise

    # -- dispatch loop -------------------------------------------------------------------
    def _execute(self, run: ActiveRun, lease: LeaseKeeper) -> None:
        assert run.graph is not None
        while True:
            self._check_cancel(run)
            for spec in run.graph.ready():
                self._start_task(run, spec)
            if run.graph.finished:
                return
            lease.check()
            if self.shutdown.is_set():
                raise RunHandedOverError(f"run {run.run_id}: handed over (shutting down)")
            self._take_inbox(run, RECEIVE_WAIT_S)
            self._check_heartbeats(run)
            self._check_cancel_grace(run)

    def _start_task(self, run: ActiveRun, spec: TaskSpec) -> None:
        assert run.graph is not None
        if spec.id in run.kept:
            kept = run.kept[spec.id]
            run.results[spec.id] = kept
            run.graph.mark_ended(spec.id, kept.status)
        elif run.cancelling:
            self._end_unrun(run, spec, "the run was cancelled", "cancelled")
        elif unmet := run.graph.unmet(spec):
            self._end_unrun(run, spec, f"dependency {', '.join(unmet)} did not succeed", "skipped")
        elif self._over_budget(run):
            self._end_unrun(run, spec, "budget reached", "skipped")
        else:
            self._dispatch(run, spec)

    def _dispatch(self, run: ActiveRun, spec: TaskSpec) -> None:
        """Send the next attempt of ``spec`` to its persona's queue; in the cluster, end the
        task failed at once (dead-lettered) when the persona has no worker at all."""
        task = Task(
            run_id=run.run_id,
            spec=spec,
            request_text=run.request.text,
            context=run.request.shared_context(),
            dependencies=self._dependency_outputs(run, spec),
            allow_bash=run.request.allow_bash,
            budget_usd=run.request.budget_usd,
            budget_spenders=list(_spenders(run)),
            attempt=run.next_attempt(spec.id),
            trace_context=telemetry.inject(),
        )
        state = run.add_attempt(task)
        if reason := self._no_worker(run, task):
            state.status, state.error = "failed", reason  # never in flight: never lost
            self._end_task(run, self._unfinished(state, reason, "failed"))
            return
        info = AttemptInfo(
            attempt=task.attempt, priority=spec.priority, token_sha256=task.token_sha256
        )
        # logged first: an attempt a crash left unqueued is lost on replay and sent again
        self.emit(
            run, "task_dispatched", info, task_id=spec.id, persona=spec.persona, message=spec.title
        )
        self.queue.enqueue(task)

    def _no_worker(self, run: ActiveRun, task: Task) -> str | None:
        """With ``fail_without_worker``, why ``task`` cannot wait for a worker: its persona
        has none registered on the queue (its service not started, or stopped; a killed
        worker stays registered a while, and its restart is waited for); else None."""
        if not self.fail_without_worker:
            return None
        if self.queue.registered_workers(task.persona):
            return None
        return (
            f"no worker of persona {task.persona} is alive: start it "
            f'(`make up PERSONAS="{task.persona}"` or `docker compose up -d {task.persona}`), '
            f"then `crewbox dlq retry {run.run_id} {task.task_id}`"
        )

    def _dependency_outputs(self, run: ActiveRun, spec: TaskSpec) -> list[DependencyOutput]:
        outputs = []
        for dep_id in spec.depends_on:
            r = run.results[dep_id]
            outputs.append(
                DependencyOutput(
                    task_id=r.task_id,
                    persona=r.persona,
                    title=r.title,
                    status=r.status,
                    summary=r.summary,
                    artifacts=[f"{r.persona}/{r.task_id}/{a.path}" for a in r.artifacts],
                )
            )
        return outputs

    def _take_inbox(self, run: ActiveRun, wait_s: float) -> None:
        """Handle every message in the run's inbox, waiting up to ``wait_s`` for the first."""
        for message in self.queue.receive(run.run_id, wait_s):
            self._on_message(run, message)

    def _on_message(self, run: ActiveRun, message: Inbound) -> None:
        """One message of the run's inbox, untrusted: whoever may write to the inbox may
        write anything. What does not parse, or does not match an attempt this run
        dispatched (run, task, persona, attempt, token), is dropped with a
        ``message_rejected`` event; nothing a worker sends can end the run."""
        if isinstance(message, RejectedMessage):
            self._reject(run, f"{message.reason} ({message.size_bytes} bytes)")
        elif isinstance(message, Result):
            self._on_result(run, message)
        else:
            self._on_worker_event(run, message)

    def _reject(self, run: ActiveRun, reason: str, task_id: str | None = None) -> None:
        """Log a dropped message; ``task_id`` only when it is a task of this run (the
        event never names what a sender made up). After MAX_REJECTED_LOGGED of a run, the
        rest are dropped without an event (a flood must not fill the run log)."""
        run.rejected += 1
        if run.rejected > MAX_REJECTED_LOGGED:
            return
        if run.rejected == MAX_REJECTED_LOGGED:
            reason += "; further rejected messages of this run are dropped without an event"
        known = task_id if task_id in run.attempts else None
        persona = run.attempts[known][0].task.persona if known else None
        self.emit(run, "message_rejected", task_id=known, persona=persona, message=reason)

    def _attempt_of(self, run: ActiveRun, claim: AttemptClaim) -> tuple[AttemptState | None, str]:
        """The dispatched attempt a message is about, or None and why it is not one."""
        run_id, task_id, persona, attempt, token = claim
        what = f"attempt {attempt} of task {str(task_id)[:64]!r}"
        if run_id != run.run_id:
            return None, f"{what}: for run {run_id[:64]!r}, sent to run {run.run_id}"
        state = run.attempt(task_id, attempt)
        if state is None:
            return None, f"{what}: never dispatched by this run"
        if persona != state.task.persona:
            return None, f"{what}: sent as {str(persona)[:64]!r}, not {state.task.persona}"
        if not state.token_matches(token):
            return None, f"{what}: wrong token"
        return state, ""

    def _on_worker_event(self, run: ActiveRun, message: WorkerEvent) -> None:
        event = message.event
        claim = (event.run_id, event.task_id, event.persona, message.attempt, message.token)
        state, problem = self._attempt_of(run, claim)
        payload: Payload | None = None
        if state is not None:
            payload, problem = worker_payload(event, message.attempt)
        if state is None or payload is None:
            self._reject(run, f"{event.kind} event refused: {problem}", event.task_id)
            return
        if isinstance(payload, AttemptInfo):
            state.worker = payload.worker
        elif isinstance(payload, LLMCall):
            state.add_call(payload)
            run.count_call("tasks", payload.usage, state.task.persona)
        text = event.message[:MAX_WORKER_MESSAGE_CHARS]
        task = state.task
        self.emit(
            run, event.kind, payload, task_id=task.task_id, persona=task.persona, message=text
        )

    def _on_result(self, run: ActiveRun, result: Result) -> None:
        claim = (result.run_id, result.task_id, result.persona, result.attempt, result.token)
        state, problem = self._attempt_of(run, claim)
        if state is None:
            self._reject(run, f"result refused: {problem}", result.task_id)
            return
        result = trusted_result(result, state)
        replaced = state.status is not None or state is not run.latest(result.task_id)
        if replaced and self._late_success(run, state, result):
            return
        if replaced:
            state.status = "superseded"
            self._emit_attempt(
                run,
                "attempt_superseded",
                state,
                f"attempt {result.attempt} reported after it was replaced",
            )
            return
        result = self._checked_artifacts(run, result)
        state.status = "failed" if result.status == "skipped" else result.status
        state.worker, state.error = result.worker, result.error
        if result.status == "failed" and result.retryable and self._retry(run, state):
            return
        self._end_task(run, result)

    def _late_success(self, run: ActiveRun, state: AttemptState, result: Result) -> bool:
        """Take the success of an attempt already judged lost or replaced while a newer
        attempt of its task is in flight (the task has not ended): the task ends with it,
        and the newer attempts are superseded (withdrawn when still queued). A result that
        arrives is never thrown away for an attempt that may then fail. True when taken.
        (An attempt lost with the previous owner of a resumed run, before its task is
        dispatched again, stays superseded: its task is not passed out yet.)"""
        newer = [s for s in run.attempts[result.task_id] if s is not state and s.status is None]
        if result.status != "succeeded" or result.task_id in run.results or not newer:
            return False
        result = self._checked_artifacts(run, result)
        if result.status != "succeeded":
            return False
        self.queue.withdraw([s.task for s in newer])
        for other in newer:
            other.status = "superseded"
            self._emit_attempt(
                run, "attempt_superseded", other, f"attempt {result.attempt} succeeded first"
            )
        state.status, state.worker, state.error = "succeeded", result.worker, None
        self._end_task(run, result)
        return True

    def _checked_artifacts(self, run: ActiveRun, result: Result) -> Result:
        """``result``, or a failed one (not retried: the same output fails the same way)
        saying why its artifacts are refused (crewbox.store.check_artifacts)."""
        try:
            folder = run.store.task_dir(result.persona, result.task_id)
            check_artifacts(folder, result.artifacts, self.settings.max_artifact_bytes)
        except ArtifactError as exc:
            refused = {"status": "failed", "error": str(exc), "artifacts": [], "retryable": False}
            return result.model_copy(update=refused)
        return result

    def _retry(self, run: ActiveRun, state: AttemptState) -> bool:
        task = state.task
        if run.cancelling or run.session_tries.get(task.task_id, 0) > self.settings.task_retries:
            return False
        self._emit_attempt(
            run, "task_retried", state, f"attempt {task.attempt} {state.status}: {state.error}"
        )
        self._dispatch(run, task.spec)
        return True

    def _end_task(self, run: ActiveRun, result: Result) -> None:
        assert run.graph is not None
        result = self._store_result(run, result)
        run.results[result.task_id] = result
        run.graph.mark_ended(result.task_id, result.status)
        state = run.attempt(result.task_id, result.attempt) or run.latest(result.task_id)
        usage = state.usage if state else result.usage
        payload = TaskEnded(
            attempt=result.attempt,
            worker=result.worker,
            duration_ms=result.duration_ms,
            tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
            artifacts=[a.path for a in result.artifacts],
        )
        self.emit(
            run,
            END_KIND[result.status],
            payload,
            task_id=result.task_id,
            persona=result.persona,
            message=result.error or result.summary[:200],
        )
        if result.status == "budget_exceeded" and result.budget_scope == "run":
            self._budget_reached(run, result.error or "budget reached")  # a persona's: its task
        if result.status == "failed":
            self.emit(
                run,
                "task_dead_lettered",
                AttemptInfo(attempt=result.attempt),
                task_id=result.task_id,
                persona=result.persona,
                message=result.error or "failed",
            )

    def _end_unrun(self, run: ActiveRun, spec: TaskSpec, reason: str, status: TaskStatus) -> None:
        assert run.graph is not None
        result = Result.skipped(run.run_id, spec, reason, status)
        run.results[spec.id] = run.store.write_result(result)
        run.graph.mark_ended(spec.id, result.status)
        self.emit(
            run,
            END_KIND[status],
            TaskEnded(),
            task_id=spec.id,
            persona=spec.persona,
            message=reason,
        )

    def _store_result(self, run: ActiveRun, result: Result) -> Result:
        """Write the result (and carried artifacts); a bad artifact fails the task instead."""
        try:
            return run.store.write_result(result, self.settings.max_artifact_bytes)
        except ArtifactError as exc:
            failed = {"status": "failed", "error": str(exc), "artifacts": []}
            return run.store.write_result(result.model_copy(update=failed))

    # -- lost attempts, cancel, budget --------------------------------------------------
    def _check_heartbeats(self, run: ActiveRun) -> None:
        """Lose attempts whose heartbeat stopped; check those with none on their queue (see
        :meth:`_check_unstarted`): not started yet, or started and their heartbeat gone
        with a Redis restart."""
        in_flight = run.in_flight()
        if not in_flight or not run.due("heartbeats", HEARTBEAT_CHECK_S):
            return
        beats = self.queue.heartbeats(run.run_id, {a.task.persona for a in in_flight})
        read_s = time.time()
        # A worker sends its result before its heartbeat stops: whatever ended before the
        # read is in the inbox now. Taken first, a late read never loses a finished attempt.
        self._take_inbox(run, 0.0)
        unstarted = []
        for state in run.in_flight():
            beat = beats.get(state.task.attempt_key)
            if beat is None:
                unstarted.append(state)
            elif silent_s := self._silence_s(beat, read_s, beats):
                self._lose(run, state, f"no heartbeat for {silent_s:.0f}s: its worker died")
        if unstarted and run.due("unstarted", UNSTARTED_CHECK_S):
            self._check_unstarted(run, unstarted)

    def _silence_s(self, beat_s: float, read_s: float, beats: dict[str, float]) -> float:
        """How long an attempt's worker has been silent when that is past the heartbeat
        timeout, else 0. Judged by the workers' clocks: ``beat_s`` against the newest beat
        of any worker of the run (a skewed or starved host does not lose its attempts while
        the others beat alike), and against ``read_s`` (when beats were read) only once
        every worker of the run has been silent that long (all dead, or all away)."""
        timeout_s = self.settings.heartbeat_timeout_s
        newest_s = max(beats.values())
        if newest_s - beat_s > timeout_s:
            return newest_s - beat_s
        if read_s - newest_s > timeout_s:
            return read_s - beat_s
        return 0.0

    def _check_unstarted(self, run: ActiveRun, unstarted: list[AttemptState]) -> None:
        """Attempts with no heartbeat. One whose job is neither queued nor heartbeating for
        CREWBOX_HEARTBEAT_TIMEOUT_S was lost by the queue (a Redis restart), or its worker
        died with its heartbeat: it is dispatched again. One not started within
        CREWBOX_START_TIMEOUT_S while no worker of its persona is alive ends failed, in the
        dead-letter queue."""
        waiting = self.queue.waiting([s.task for s in unstarted])
        now_m = time.monotonic()
        live: dict[str, int] = {}
        for state in unstarted:
            task = state.task
            if task.attempt_key not in waiting:
                state.missing_since_m = state.missing_since_m or now_m
                if now_m - state.missing_since_m >= self.settings.heartbeat_timeout_s:
                    reason = f"its job is no longer on {task.persona}'s queue, no heartbeat"
                    self._lose(run, state, reason)
                continue
            state.missing_since_m = None
            if state.worker or now_m - state.dispatched_m < self.settings.start_timeout_s:
                continue  # a started attempt is not withdrawn
            if task.persona not in live:
                live[task.persona] = self.queue.live_workers(task.persona)
            if not live[task.persona] and self.queue.withdraw([task]):
                self._not_started(run, state)

    def _not_started(self, run: ActiveRun, state: AttemptState) -> None:
        """End a withdrawn attempt no worker started: failed, in the dead-letter queue."""
        task = state.task
        reason = (
            f"no worker of persona {task.persona} is alive: attempt {task.attempt} was not "
            f"started within {self.settings.start_timeout_s:.0f}s (CREWBOX_START_TIMEOUT_S); "
            f"start one, then `crewbox dlq retry {run.run_id} {task.task_id}`"
        )
        state.status, state.error = "lost", reason
        self._emit_attempt(run, "attempt_lost", state, f"attempt {task.attempt}: {reason}")
        self._end_task(run, self._unfinished(state, reason, "failed"))

    def _lose(self, run: ActiveRun, state: AttemptState, reason: str) -> None:
        state.status, state.error = "lost", reason
        self._emit_attempt(run, "attempt_lost", state, f"attempt {state.task.attempt}: {reason}")
        if run.cancelling:
            self._end_task(run, self._unfinished(state, "cancelled: " + reason, "cancelled"))
        elif not self._retry(run, state):
            self._end_task(run, self._unfinished(state, reason, "failed"))

    @staticmethod
    def _unfinished(state: AttemptState, error: str, status: TaskStatus) -> Result:
        return Result.failed(state.task, error, worker=state.worker, retryable=False, status=status)

    def _check_cancel(self, run: ActiveRun) -> None:
        if run.cancelling:
            return
        if not self.cancel.is_set() and not (
            run.due("cancel", CANCEL_CHECK_S) and self.log.cancel_requested(run.run_id)
        ):
            return
        run.cancelling = True
        run.cancel_deadline_m = time.monotonic() + CANCEL_GRACE_S
        self.log.request_cancel(run.run_id)
        self.emit(run, "cancel_requested", message="cancelling: nothing more is dispatched")
        queued = {a.task.attempt_key: a for a in run.in_flight()}
        for key in self.queue.withdraw([a.task for a in queued.values()]):
            state = queued[key]
            state.status = "cancelled"
            self._end_task(run, self._unfinished(state, "cancelled before it started", "cancelled"))

    def _check_cancel_grace(self, run: ActiveRun) -> None:
        if not run.cancelling or time.monotonic() < run.cancel_deadline_m:
            return
        for state in run.in_flight():
            state.status = "cancelled"
            error = f"cancelled; no result within {CANCEL_GRACE_S:.0f}s"
            self._end_task(run, self._unfinished(state, error, "cancelled"))

    def _over_budget(self, run: ActiveRun) -> bool:
        """True once the run's budget is reached: by what it spent, or because a call was
        refused for it (crewbox.budget: every call is checked before it is made)."""
        budget = run.request.budget_usd
        if run.budget_exceeded:
            return True
        if budget is None or run.spent().cost_usd < budget:
            return False
        self._budget_reached(run, f"budget ${budget} reached")
        return True

    def _budget_reached(self, run: ActiveRun, reason: str) -> None:
        """Mark the run's budget reached (once): nothing more is dispatched."""
        if run.budget_exceeded:
            return
        run.budget_exceeded = True
        budget = run.request.budget_usd or Decimal(0)
        spent = run.spent().cost_usd
        self.emit(
            run,
            "budget_exceeded",
            BudgetInfo(budget_usd=budget, spent_usd=spent),
            message=f"{reason} (${spent:.6f} spent): dispatching nothing more",
        )

    def _check_budget_enforceable(self, run: ActiveRun) -> None:
        """A budget can be held only where every model the run may call has a price.

        Raises:
            UserError: a budget is set and some model is not in pricing.json (the run
                fails before any call; nothing is spent).
        """
        claude = self.settings.resolved_provider() != "openai"
        plan = run.plan or run.request.plan
        names = {t.persona for t in plan.tasks} if plan else set(self.personas)
        personas = [self.personas[n] for n in sorted(names) if n in self.personas]
        models: set[str] = set()
        if run.request.budget_usd is None:  # only the personas with a budget of their own
            personas = [p for p in personas if p.budget_usd is not None]
        else:
            models = {self.planner.model, self.synthesizer.model}
        for persona in personas:  # its own model and its sub-agents'
            models |= persona_models(persona, self.settings.model_of(persona.model), claude)
        unpriced = unpriced_models(self.settings, models)
        if unpriced:
            raise UserError(
                f"a budget cannot be held: no price for {', '.join(unpriced)} in "
                "crewbox/llm/pricing.json; add it there or run without a budget"
            )

    def _run_llm(self, run: ActiveRun) -> LLMClient:
        """The orchestrator's LLM behind the run's budget, for the planner and synthesizer."""
        budget = run.request.budget_usd
        limits = [("run", budget)] if budget else []
        return budgeted(self.llm, self.log, run.run_id, limits, _spenders(run))

    # -- synthesis and summary -----------------------------------------------------------
    def _finish(self, run: ActiveRun) -> RunSummary:
        results = run.ordered_results()
        text = self._synthesize(run, results)
        summary = self._summary(run, results, FINAL_NAME)
        self.log.finish(summary, text)
        self.emit(run, "synthesis_written", message=FINAL_NAME)
        self.emit(
            run,
            "run_finished",
            RunEnded(status=summary.status, usage=summary.usage_total),
            message=summary.status,
        )
        return summary

    def _synthesize(self, run: ActiveRun, results: list[Result]) -> str:
        if not any(r.status == "succeeded" for r in results):
            return fallback_answer(run.request, results, "no task succeeded")

        def on_call(usage: Usage) -> None:
            self._record_call(run, "synthesizer", usage)

        try:
            with telemetry.stage_span("synthesize", run.run_id):
                return self.synthesizer.synthesize(
                    run.request, results, run.store.folder, on_call, llm=self._run_llm(run)
                )
        except CrewboxError as exc:
            self.emit(run, "synthesis_failed", message=str(exc))
            return fallback_answer(run.request, results, str(exc))

    def _summary(self, run: ActiveRun, results: list[Result], final_path: str) -> RunSummary:
        statuses = {r.status for r in results}
        status = (
            "cancelled"
            if run.cancelling
            else "succeeded"
            if statuses == {"succeeded"}
            else ("partial" if "succeeded" in statuses else "failed")
        )
        ended = time.time()
        return RunSummary(
            run_id=run.run_id,
            request=run.request.text,
            status=status,
            started_at_s=run.started_at_s,
            ended_at_s=ended,
            duration_ms=round((ended - run.started_at_s) * 1000),
            tasks=results,
            attempts=run.attempt_records(),
            usage_by_persona=run.persona_usage,
            usage_by_stage={
                k: run.stage_usage.get(k, Usage()) for k in ("planner", "tasks", "synthesizer")
            },
            usage_total=run.spent(),
            budget_usd=run.request.budget_usd,
            budget_exceeded=run.budget_exceeded,
            concurrency_changes=[
                e.payload(ConcurrencyChange)
                for e in self.log.events(run.run_id)
                if e.kind == "concurrency_changed"
            ],
            final_path=final_path,
        )

    # -- events --------------------------------------------------------------------------
    def _record_call(self, run: ActiveRun, stage: Stage, usage: Usage) -> None:
        run.count_call(stage, usage, None)
        self.emit(run, "llm_call", LLMCall(stage=stage, usage=usage), message=stage)

    def _emit_attempt(
        self, run: ActiveRun, kind: EventKind, state: AttemptState, message: str
    ) -> None:
        info = AttemptInfo(attempt=state.task.attempt, worker=state.worker)
        self.emit(
            run, kind, info, task_id=state.task.task_id, persona=state.task.persona, message=message
        )

    def emit(
        self,
        run: ActiveRun,
        kind: EventKind,
        payload: Payload | None = None,
        *,
        task_id: str | None = None,
        persona: str | None = None,
        message: str = "",
    ) -> None:
        """Append an event to the run log and pass it to ``on_event``."""
        self._publish(
            Event.of(kind, run.run_id, payload, task_id=task_id, persona=persona, message=message)
        )

    def _publish(self, event: Event) -> None:
        self.log.append(event)
        if self.on_event:
            self.on_event(event)


class LeaseKeeper:
    """Renews the run's owner lease every LEASE_RENEW_S while in a ``with`` block, and
    releases it at the end; :meth:`check` raises once the lease was lost."""

    def __init__(self, log: RunLog, run_id: str, owner: str) -> None:
        self._log = log
        self._run_id = run_id
        self._owner = owner
        self._lost = False
        self._renewing = Periodic(LEASE_RENEW_S, self._renew, "lease")

    def __enter__(self) -> LeaseKeeper:
        self._renewing.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._renewing.__exit__()
        with contextlib.suppress(CrewboxError):
            self._log.release(self._run_id, self._owner)

    def _renew(self) -> bool:
        try:
            self._lost = not self._log.renew(self._run_id, self._owner)
        except CrewboxError:
            return False  # the backend is away; the lease lasts LEASE_TTL_S meanwhile
        return self._lost

    def check(self) -> None:
        """Raises RunTakenOverError once another owner took the run."""
        if self._lost:
            raise RunTakenOverError(f"run {self._run_id}: another orchestrator took it over")


def _spenders(run: ActiveRun) -> tuple[str, ...]:
    """The personas of ``run``'s plan (none before it has one): who spends in its budget."""
    return tuple(sorted({t.persona for t in run.plan.tasks})) if run.plan else ()
