"""One executing run: its request, plan, graph, attempts, results and spend.

:class:`ActiveRun` is the orchestrator's whole state for a run, and :func:`replay` rebuilds
it from the run's events (``crewbox resume``, an orchestrator taking a run over), so that
whatever the log says happened is never done or billed again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from crewbox.models import (
    TASK_END_KINDS,
    WORKER_EVENT_KINDS,
    AttemptInfo,
    AttemptRecord,
    AttemptStatus,
    BudgetInfo,
    ConcurrencyChange,
    Event,
    LLMCall,
    Payload,
    Plan,
    PlanReady,
    Request,
    Result,
    RunEnded,
    RunFailed,
    Stage,
    Task,
    TaskEnded,
    Usage,
    add_usage,
)
from crewbox.store import RunStore
from orchestrator.dispatch import DependencyGraph

ORPHANED = "in flight when its orchestrator stopped"

MAX_NAME_CHARS = 200
"""Names a worker gives (itself, a sub-agent) are cut to this many characters."""

AttemptClaim = tuple[str, str | None, str | None, int | None, str]
"""Who a message says it is from: run id, task id, persona, attempt number, token."""

WORKER_PAYLOADS: dict[str, type[Payload]] = {
    "task_started": AttemptInfo,
    "llm_call": LLMCall,
    "concurrency_changed": ConcurrencyChange,
}
"""The payload of each kind of event a worker may send (models.WORKER_EVENT_KINDS)."""
assert set(WORKER_PAYLOADS) == WORKER_EVENT_KINDS


@dataclass
class AttemptState:
    """One attempt of a task: the dispatched Task (with its token) and how it went.

    ``status`` is None while the attempt is in flight.
    """

    task: Task
    status: AttemptStatus | None = None
    worker: str = ""
    usage: Usage = field(default_factory=Usage)
    usage_by_subagent: dict[str, Usage] = field(default_factory=dict)
    calls: list[Usage] = field(default_factory=list)
    error: str | None = None
    token_sha256: str = ""
    """The sha256 of the attempt's token (from its task_dispatched event after a replay,
    when the token itself is not known)."""
    dispatched_m: float = field(default_factory=time.monotonic)
    """When (``time.monotonic()``) this orchestrator dispatched it (or took it over)."""
    missing_since_m: float | None = None
    """Since when its job is neither on its queue nor started (None: it is there)."""

    def __post_init__(self) -> None:
        if not self.token_sha256 and self.task.token:
            self.token_sha256 = self.task.token_sha256

    def token_matches(self, token: str) -> bool:
        """True when ``token`` is this attempt's (compared in constant time)."""
        given = hashlib.sha256(token.encode()).hexdigest()
        return bool(self.token_sha256) and hmac.compare_digest(given, self.token_sha256)

    def add_call(self, call: LLMCall) -> None:
        """Count one ``llm_call`` of this attempt (under its sub-agent, if it has one)."""
        self.usage = self.usage + call.usage
        self.calls.append(call.usage)
        if call.subagent:
            add_usage(self.usage_by_subagent, call.subagent, call.usage)

    def record(self) -> AttemptRecord:
        """The attempt as summary.json lists it (an attempt still in flight: ``lost``)."""
        return AttemptRecord(
            attempt=self.task.attempt,
            status=self.status or "lost",
            worker=self.worker,
            usage=self.usage,
            usage_by_subagent=self.usage_by_subagent,
            error=self.error,
        )


@dataclass
class ActiveRun:
    """The state of one run while an orchestrator drives it.

    ``kept``: results from before a resume that stand (not dispatched again).
    ``session_tries``: attempts dispatched per task by this orchestrator (retries count
    against CREWBOX_TASK_RETRIES per session, so a resumed task gets its retries again).
    """

    request: Request
    store: RunStore
    plan: Plan | None = None
    graph: DependencyGraph | None = None
    results: dict[str, Result] = field(default_factory=dict)
    kept: dict[str, Result] = field(default_factory=dict)
    attempts: dict[str, list[AttemptState]] = field(default_factory=dict)
    session_tries: dict[str, int] = field(default_factory=dict)
    stage_usage: dict[str, Usage] = field(default_factory=dict)
    persona_usage: dict[str, Usage] = field(default_factory=dict)
    budget_exceeded: bool = False
    cancelling: bool = False
    cancel_deadline_m: float = 0.0
    next_checks_m: dict[str, float] = field(default_factory=dict)
    """When (``time.monotonic()``) each periodic check of the run (heartbeats, the cancel
    flag in the run log) is due next."""
    started_at_s: float = field(default_factory=time.time)
    rejected: int = 0
    """Messages of the run's inbox dropped so far (``message_rejected``)."""
    owner: str = ""
    orphaned: list[AttemptState] = field(default_factory=list)

    def due(self, check: str, every_s: float) -> bool:
        """True at most once per ``every_s`` for ``check`` (the first time at once)."""
        now_m = time.monotonic()
        if now_m < self.next_checks_m.get(check, 0.0):
            return False
        self.next_checks_m[check] = now_m + every_s
        return True

    def in_flight_before_resume(self) -> list[AttemptState]:
        """Attempts that were in flight when the previous owner stopped (now lost)."""
        return list(self.orphaned)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.request.run_id

    def personas(self) -> set[str]:
        """The personas this run dispatched to (every persona of its plan)."""
        return {t.persona for t in self.plan.tasks} if self.plan else set()

    def spent(self) -> Usage:
        """Usage of every call so far (planner, every task attempt, synthesizer)."""
        return Usage.total(self.stage_usage.values())

    def attempt(self, task_id: str | None, number: int | None) -> AttemptState | None:
        """Attempt ``number`` of ``task_id``, or None when the run never dispatched it."""
        for state in self.attempts.get(task_id or "", []):
            if state.task.attempt == number:
                return state
        return None

    def latest(self, task_id: str) -> AttemptState | None:
        """The newest attempt of ``task_id``, or None."""
        states = self.attempts.get(task_id)
        return states[-1] if states else None

    def in_flight(self) -> list[AttemptState]:
        """Attempts dispatched and not ended, oldest first."""
        return [a for states in self.attempts.values() for a in states if a.status is None]

    def next_attempt(self, task_id: str) -> int:
        """The number of the next attempt of ``task_id`` (1 for the first)."""
        latest = self.latest(task_id)
        return latest.task.attempt + 1 if latest else 1

    def add_attempt(self, task: Task) -> AttemptState:
        """Record a dispatched attempt."""
        state = AttemptState(task=task)
        self.attempts.setdefault(task.task_id, []).append(state)
        self.session_tries[task.task_id] = self.session_tries.get(task.task_id, 0) + 1
        return state

    def count_call(self, stage: Stage, usage: Usage, persona: str | None) -> None:
        """Add one LLM call's usage to its stage (and its persona's, for tasks)."""
        add_usage(self.stage_usage, stage, usage)
        if persona:
            add_usage(self.persona_usage, persona, usage)

    def ordered_results(self) -> list[Result]:
        """Results in plan order."""
        assert self.plan is not None
        return [self.results[t.id] for t in self.plan.tasks if t.id in self.results]

    def attempt_records(self) -> dict[str, list[AttemptRecord]]:
        """Every attempt of every task, for summary.json."""
        return {tid: [a.record() for a in states] for tid, states in self.attempts.items()}


def worker_payload(event: Event, attempt: int) -> tuple[Payload | None, str]:
    """The checked payload of an event a worker sent for ``attempt`` (its token already
    checked), rebuilt from known fields only; or None and why it is refused: a kind a worker
    may not send, data that does not fit the kind, another attempt or stage, or usage that
    cannot be one call's (Usage.one_call_problem)."""
    model = WORKER_PAYLOADS.get(event.kind)
    if model is None:
        return None, f"a worker may not send {event.kind} events"
    try:
        payload = event.payload(model)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, f"data does not fit {event.kind}: {where}: {first['msg']}"[:200]
    if isinstance(payload, AttemptInfo):
        if payload.attempt != attempt:
            return None, f"about attempt {payload.attempt}, sent for attempt {attempt}"
        return AttemptInfo(attempt=attempt, worker=payload.worker[:MAX_NAME_CHARS]), ""
    if isinstance(payload, LLMCall):
        return _worker_call(payload, attempt)
    assert isinstance(payload, ConcurrencyChange)
    cut = {k: getattr(payload, k)[:MAX_NAME_CHARS] for k in ("credential", "reason")}
    return payload.model_copy(update=cut), ""


def _worker_call(call: LLMCall, attempt: int) -> tuple[LLMCall | None, str]:
    if call.stage != "tasks" or call.attempt != attempt:
        return None, f"a {call.stage} call of attempt {call.attempt}, sent for attempt {attempt}"
    if problem := call.usage.one_call_problem():
        return None, f"usage refused: {problem}"
    subagent = call.subagent[:MAX_NAME_CHARS] if call.subagent else None
    return call.model_copy(update={"subagent": subagent}), ""


def trusted_result(result: Result, state: AttemptState) -> Result:
    """``result`` with what the orchestrator knows in place of what the worker said: the
    attempt's run, task, persona, title and number, its usage from the attempt's checked
    ``llm_call`` events, no token (the stored result never holds one), and a budget scope
    only of a budget the task has (the run's when it has one, its persona's)."""
    task = state.task
    scopes = {f"persona:{task.persona}", *(["run"] if task.budget_usd is not None else [])}
    return result.model_copy(
        update={
            "run_id": task.run_id,
            "task_id": task.task_id,
            "persona": task.persona,
            "title": task.spec.title,
            "attempt": task.attempt,
            "worker": result.worker[:MAX_NAME_CHARS],
            "usage": state.usage,
            "calls": list(state.calls),
            "usage_by_subagent": dict(state.usage_by_subagent),
            "token": "",
            "budget_scope": result.budget_scope if result.budget_scope in scopes else "",
        }
    )


def replay(
    request: Request, events: list[Event], store: RunStore, rerun: set[str] | None = None
) -> tuple[ActiveRun, list[str]]:
    """Rebuild a run from its events, to go on with it.

    Kept (not run again): with ``rerun`` None, tasks that succeeded and whose artifacts
    still match their sha256; with ``rerun`` given, every ended task outside ``rerun``.
    Attempts that were in flight are marked lost; their late results are superseded.

    Returns the run and notes on what was not kept and why, one line each.
    """
    run = ActiveRun(request=request, store=store)
    ended: dict[str, str] = {}
    for event in events:
        _apply(run, event, ended)
    if run.plan is None:
        return run, []
    notes = _keep_results(run, ended, rerun)
    for state in run.in_flight():
        state.status, state.error = "lost", ORPHANED
        run.orphaned.append(state)
    return run, notes


def _apply(run: ActiveRun, event: Event, ended: dict[str, str]) -> None:
    kind = event.kind
    if kind == "run_started":
        run.started_at_s = event.ts_s
    elif kind == "plan_ready":
        run.plan = event.payload(PlanReady).plan
    elif kind == "llm_call":
        _apply_call(run, event)
    elif kind == "task_dispatched":
        _apply_dispatch(run, event)
    elif kind in ("task_started", "task_retried", "attempt_lost", "attempt_superseded"):
        _apply_attempt(run, event)
    elif kind in TASK_END_KINDS:
        ended[event.task_id or ""] = TASK_END_KINDS[kind]
        state = run.attempt(event.task_id, event.payload(TaskEnded).attempt)
        status = TASK_END_KINDS[kind]
        if state is not None and state.status is None and status != "skipped":
            state.status = status
            state.error = event.message if kind != "task_succeeded" else None
    elif kind == "budget_exceeded":
        event.payload(BudgetInfo)
        run.budget_exceeded = True


def _apply_call(run: ActiveRun, event: Event) -> None:
    call = event.payload(LLMCall)
    run.count_call(call.stage, call.usage, event.persona if call.stage == "tasks" else None)
    state = run.attempt(event.task_id, call.attempt)
    if state is not None:
        state.add_call(call)


def _apply_dispatch(run: ActiveRun, event: Event) -> None:
    assert run.plan is not None
    info = event.payload(AttemptInfo)
    spec = next(t for t in run.plan.tasks if t.id == event.task_id)
    task = Task(
        run_id=run.run_id,
        spec=spec,
        request_text=run.request.text,
        budget_usd=run.request.budget_usd,
        attempt=info.attempt,
        token="",
    )
    state = AttemptState(task=task, token_sha256=info.token_sha256)
    run.attempts.setdefault(spec.id, []).append(state)


def _apply_attempt(run: ActiveRun, event: Event) -> None:
    info = event.payload(AttemptInfo)
    state = run.attempt(event.task_id, info.attempt)
    if state is None:
        return
    if event.kind == "task_started":
        state.worker = info.worker
    elif state.status is None:
        kinds: dict[str, AttemptStatus] = {
            "task_retried": "failed",
            "attempt_superseded": "superseded",
        }
        state.status = kinds.get(event.kind, "lost")
        state.error = event.message


def _keep_results(run: ActiveRun, ended: dict[str, str], rerun: set[str] | None) -> list[str]:
    assert run.plan is not None
    notes = []
    for spec in run.plan.tasks:
        status = ended.get(spec.id)
        wanted = status == "succeeded" if rerun is None else spec.id not in rerun
        if status is None or not wanted:
            continue
        result = run.store.read_result(spec.persona, spec.id)
        if status in ("skipped", "cancelled"):
            result = result or Result.skipped(run.run_id, spec, "ended before", "skipped")
        if result is None:
            notes.append(f"{spec.id}: its result.json is missing; running it again")
            continue
        problems = run.store.artifact_problems(result) if result.status == "succeeded" else []
        if problems:
            notes.append(f"{spec.id}: artifacts changed ({', '.join(problems)}); running it again")
            continue
        run.kept[spec.id] = result
    return notes


TERMINAL_KINDS = ("run_finished", "run_failed")


def pending_work(events: list[Event], requested: bool = False) -> tuple[bool, set[str] | None]:
    """Whether a run's log leaves work to do, and what ``rerun`` to replay it with.

    - no ``run_finished``/``run_failed`` yet (its owner died): yes, every task not succeeded;
    - failed marked ``resumable`` (the results disk was full): yes, likewise, for a
      takeover too (once there is room again);
    - ``dlq_retried`` events after the end: yes, those tasks and every task that depends on
      them, directly or not;
    - with ``requested`` (``crewbox resume``, not a takeover): a run that finished
      ``cancelled`` or ended with ``run_failed``: yes, every task not succeeded. Without
      it, a run a user cancelled stays cancelled, and one that failed is not tried again
      and again by takeovers;
    - otherwise: no.
    """
    ends = [i for i, e in enumerate(events) if e.kind in TERMINAL_KINDS]
    if not ends:
        return True, None
    last = events[ends[-1]]
    if last.kind == "run_failed" and last.payload(RunFailed).resumable:  # a full results disk
        return True, None
    retried = {e.task_id or "" for e in events[ends[-1] :] if e.kind == "dlq_retried"}
    if retried:
        plans = [e.payload(PlanReady).plan for e in events if e.kind == "plan_ready"]
        return True, _with_dependents(plans[-1], retried) if plans else retried
    if requested and (last.kind == "run_failed" or last.payload(RunEnded).status == "cancelled"):
        return True, None
    return False, None


def _with_dependents(plan: Plan, task_ids: set[str]) -> set[str]:
    found = set(task_ids)
    changed = True
    while changed:
        more = {t.id for t in plan.tasks if found & set(t.depends_on)} - found
        found |= more
        changed = bool(more)
    return found
