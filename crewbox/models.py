"""The pydantic models every crewbox service exchanges.

Vocabulary (docs/architecture.md): a *request* becomes a *run*; the planner turns it into a *plan*
of *task specs*; each dispatched *task* yields a *result* listing its *artifacts* and *usage*;
*events* log everything in ``results/<run_id>/events.jsonl``.

Times are Unix epoch seconds (``*_at_s``, float); durations are milliseconds (``*_ms``);
money is US dollars (``*_usd``) held as :class:`~decimal.Decimal` so sums are exact, written
to JSON as numbers.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Task ids become folder names, so they are short and filesystem-safe."""

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Run ids become folder names (``results/<run_id>/``) and parts of Redis keys and RQ job
ids: letters, digits, ``_`` and ``-`` only (no ``.``, no ``/``), as :func:`new_run_id` makes
them (``20261121-193500-3fa2c1``)."""

RunId = Annotated[str, Field(pattern=RUN_ID_PATTERN)]
"""A run id that is safe as a path part (:data:`RUN_ID_PATTERN`)."""

MAX_CALL_TOKENS = 2_000_000
"""Upper bound on the tokens of one LLM call (input, output, cache write and cache read
together): twice the largest context window of a Claude model (1M tokens, Claude API docs,
"Context windows"; a call's prompt and its output both fit in the window). A worker that
reports more for one call is lying; its event is rejected."""

MAX_CALL_USD = Decimal(150)
"""Upper bound on the cost of one LLM call: MAX_CALL_TOKENS at the highest price per
million tokens in crewbox/llm/pricing.json ($75, Claude Opus 4 output); a test keeps it so."""

MAX_TASKS = 10_000
"""Upper bound on tasks in one plan given by file (``--plan``, workflows/): a volley of
hundreds of small tasks is a real use. The LLM planner has its own, smaller cap
(orchestrator.plan.MAX_PLANNED_TASKS)."""

MAX_INSTRUCTIONS_CHARS = 20_000
"""Upper bound on one task's instructions (about 5k tokens)."""

MAX_TIMEOUT_S = 3600
"""Upper bound on one task's timeout_s (one hour)."""


def _to_decimal(value: Any) -> Any:
    """Read floats through their shortest repr so 0.1 stays Decimal('0.1')."""
    return Decimal(str(value)) if isinstance(value, float) else value


USD = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    PlainSerializer(float, return_type=float, when_used="json"),
]
"""US dollars: Decimal in memory (exact sums), a JSON number on disk."""

Priority = Literal["high", "normal", "low"]
PRIORITY_RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
"""Dispatch order among ready tasks: lower rank first."""

TaskStatus = Literal["succeeded", "failed", "skipped", "cancelled", "budget_exceeded"]
"""How a task ended. ``cancelled``: the run was cancelled before or while it ran."""

RunStatus = Literal["succeeded", "partial", "failed", "cancelled"]
"""How a run ended: every task succeeded, some did, none did, or the user cancelled it."""

AttemptStatus = Literal["succeeded", "failed", "cancelled", "budget_exceeded", "lost", "superseded"]
"""How one attempt of a task ended: as its Result says, ``lost`` (its heartbeat stopped: the
worker died) or ``superseded`` (its result came after a newer attempt was dispatched)."""


def now_s() -> float:
    """Current Unix time in seconds."""
    return time.time()


def new_token() -> str:
    """A random attempt token (128 bits, hex): only the dispatcher and the worker know it."""
    return secrets.token_hex(16)


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121-193500-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class Usage(BaseModel):
    """Tokens and cost of one or more LLM calls.

    Token fields follow the Anthropic Messages API usage: ``input_tokens`` (uncached input),
    ``cache_write_tokens`` (``cache_creation_input_tokens``), ``cache_read_tokens``
    (``cache_read_input_tokens``), ``output_tokens``; ``thinking_tokens`` is the part of
    ``output_tokens`` the model spent thinking, where the API reports it
    (``output_tokens_details.thinking_tokens``). ``calls`` counts the calls summed.
    ``cost_usd`` is the whole cost; ``cache_write_usd`` and ``cache_read_usd`` are the parts
    of it paid for cache writes and cache reads.
    """

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    thinking_tokens: int = Field(default=0, ge=0)
    cost_usd: USD = Field(default=Decimal(0), ge=0)
    cache_write_usd: USD = Field(default=Decimal(0), ge=0)
    cache_read_usd: USD = Field(default=Decimal(0), ge=0)
    calls: int = Field(default=0, ge=0)

    def one_call_problem(self) -> str | None:
        """Why this cannot be the usage of one LLM call (more than one call, more than
        MAX_CALL_TOKENS or MAX_CALL_USD), or None when it can."""
        if self.calls > 1:
            return f"{self.calls} calls counted as one"
        if self.total_tokens > MAX_CALL_TOKENS:
            return f"{self.total_tokens} tokens in one call (at most {MAX_CALL_TOKENS})"
        if max(self.cost_usd, self.cache_write_usd + self.cache_read_usd) > MAX_CALL_USD:
            return f"${self.cost_usd} for one call (at most ${MAX_CALL_USD})"
        return None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            cache_write_usd=self.cache_write_usd + other.cache_write_usd,
            cache_read_usd=self.cache_read_usd + other.cache_read_usd,
            calls=self.calls + other.calls,
        )

    @property
    def total_tokens(self) -> int:
        """All tokens billed: input, cache write, cache read and output."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_tokens
            + self.cache_read_tokens
        )

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        """The exact sum of ``usages`` (an empty iterable gives zero usage)."""
        result = cls()
        for usage in usages:
            result = result + usage
        return result


def add_usage(into: dict[str, Usage], key: str, usage: Usage) -> None:
    """Add ``usage`` to ``into[key]`` (zero when absent)."""
    into[key] = into.get(key, Usage()) + usage


class ContextFile(BaseModel):
    """A file the user attached to a request (``--context-file``), shared with every task."""

    name: str
    content: str


class TaskSpec(BaseModel):
    """One task of a plan: the contract of docs/architecture.md (``submit_plan`` input items)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TASK_ID_PATTERN, description="Short unique id, e.g. 'choreography'.")
    persona: str = Field(description="Name of the persona that runs the task.")
    title: str = Field(min_length=1, max_length=200)
    instructions: str = Field(min_length=1, max_length=MAX_INSTRUCTIONS_CHARS)
    depends_on: list[str] = Field(default_factory=list)
    priority: Priority = "normal"
    timeout_s: int = Field(default=600, ge=1, le=MAX_TIMEOUT_S)


class Plan(BaseModel):
    """A plan: the tasks to run; the format of the planner's output and of ``--plan`` files."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_TASKS)


class Request(BaseModel):
    """What a user asked: free text, optional context files, optional ready-made plan.

    ``budget_usd``: when set, no LLM call of the run that could cross it is made
    (crewbox.budget), and nothing more is dispatched once it is reached.
    """

    run_id: RunId = Field(default_factory=new_run_id)
    text: str = Field(min_length=1)
    context_files: list[ContextFile] = Field(default_factory=list)
    plan: Plan | None = None
    budget_usd: USD | None = None
    allow_bash: bool = False
    created_at_s: float = Field(default_factory=now_s)

    def shared_context(self) -> str:
        """The context files as one text block, each under a ``## <name>`` heading."""
        return "\n\n".join(f"## {f.name}\n\n{f.content}" for f in self.context_files)


class DependencyOutput(BaseModel):
    """What a task receives from one of its dependencies: summary and artifact paths.

    ``artifacts`` are paths relative to the run folder, e.g. ``marie/choreo/plan.md``.
    """

    task_id: str
    persona: str
    title: str
    status: TaskStatus
    summary: str
    artifacts: list[str] = Field(default_factory=list)


class Task(BaseModel):
    """A dispatched task: the spec plus what the worker needs to run it on its own."""

    run_id: RunId
    spec: TaskSpec
    request_text: str
    context: str = ""
    dependencies: list[DependencyOutput] = Field(default_factory=list)
    allow_bash: bool = False
    budget_usd: USD | None = None
    """The run's budget: the worker checks it before every LLM call (crewbox.budget)."""
    budget_spenders: list[str] = Field(default_factory=list)
    """The personas of the run: who spends in its budget besides the orchestrator (the
    Redis ledger sums their spend, crewbox.runlog.redis)."""
    attempt: int = 1
    token: str = Field(default_factory=new_token)
    enqueued_at_s: float = Field(default_factory=now_s)
    trace_context: dict[str, str] = Field(default_factory=dict)
    """The W3C trace context (``traceparent``) of the run's span when it was dispatched, so
    the attempt's spans join the run's trace (crewbox.telemetry); empty with tracing off."""

    @property
    def token_sha256(self) -> str:
        """The sha256 (hex) of ``token``: what the run log keeps of it."""
        return hashlib.sha256(self.token.encode()).hexdigest()

    @property
    def attempt_key(self) -> str:
        """``<task_id>:<attempt>``: names this attempt in heartbeats and logs."""
        return attempt_key(self.task_id, self.attempt)

    @property
    def task_id(self) -> str:
        """The spec's id."""
        return self.spec.id

    @property
    def persona(self) -> str:
        """The persona that runs this task."""
        return self.spec.persona


class Artifact(BaseModel):
    """A file a task wrote into its output folder.

    ``path`` is relative to the task's output folder (POSIX separators); ``bytes`` its size;
    ``sha256`` the hex digest of its content. ``content_b64`` carries the content when the
    result travels through a queue to another host (the ``rq`` backend); otherwise None.
    """

    path: str
    bytes: int
    sha256: str
    content_b64: str | None = None


class Result(BaseModel):
    """A task's outcome.

    ``usage`` is the sum of ``calls`` (one Usage per LLM call, in call order), the calls of
    the task's sub-agents included; ``usage_by_subagent`` is their part of it, per
    sub-agent name. ``worker`` names who ran it: ``<hostname>:<pid>``. ``retryable`` marks
    failures worth another attempt (API errors, a crashed or lost worker), not the model's
    own failures.
    """

    run_id: RunId
    task_id: str
    persona: str
    title: str = ""
    status: TaskStatus
    summary: str = ""
    artifacts: list[Artifact] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    calls: list[Usage] = Field(default_factory=list)
    usage_by_subagent: dict[str, Usage] = Field(default_factory=dict)
    started_at_s: float = 0.0
    ended_at_s: float = 0.0
    duration_ms: int = 0
    error: str | None = None
    retryable: bool = False
    worker: str = ""
    attempt: int = 1
    token: str = ""
    budget_scope: str = ""
    """With status ``budget_exceeded``: the budget reached (``run``, ``persona:<name>``)."""

    @classmethod
    def failed(
        cls,
        task: Task,
        error: str,
        *,
        worker: str = "",
        retryable: bool = True,
        status: TaskStatus = "failed",
    ) -> Result:
        """A Result for ``task`` that never produced one of its own (a crashed handler, a
        lost worker, a run that is no longer live); started and ended now."""
        now = now_s()
        return cls(
            run_id=task.run_id,
            task_id=task.task_id,
            persona=task.persona,
            title=task.spec.title,
            status=status,
            error=error,
            retryable=retryable,
            worker=worker,
            started_at_s=now,
            ended_at_s=now,
            attempt=task.attempt,
            token=task.token,
        )

    @classmethod
    def skipped(cls, run_id: str, spec: TaskSpec, reason: str, status: TaskStatus) -> Result:
        """A Result for a task that was never dispatched (``skipped`` or ``cancelled``)."""
        return cls(
            run_id=run_id,
            task_id=spec.id,
            persona=spec.persona,
            title=spec.title,
            status=status,
            error=reason,
        )


def attempt_key(task_id: str, attempt: int) -> str:
    """``<task_id>:<attempt>``: one attempt of one task, unique within its run."""
    return f"{task_id}:{attempt}"


EventKind = Literal[
    "run_started",
    "run_resumed",
    "plan_ready",
    "plan_invalid",
    "plan_adjusted",
    "personas_offered",
    "task_dispatched",
    "task_started",
    "task_succeeded",
    "task_failed",
    "task_skipped",
    "task_cancelled",
    "task_budget_exceeded",
    "task_retried",
    "task_dead_lettered",
    "dlq_dropped",
    "dlq_retried",
    "attempt_lost",
    "attempt_superseded",
    "result_rejected",
    "message_rejected",
    "llm_call",
    "budget_exceeded",
    "concurrency_changed",
    "cancel_requested",
    "synthesis_written",
    "synthesis_failed",
    "run_finished",
    "run_failed",
]
"""Every kind of event a run's log holds (``events.jsonl``, the Redis stream).
``result_rejected`` is only in logs of older versions: a refused message of a worker is now
``message_rejected``."""

WORKER_EVENT_KINDS: frozenset[EventKind] = frozenset(
    {"task_started", "llm_call", "concurrency_changed"}
)
"""The only kinds of event a worker may send (worker/service.py emits these): each is about
the attempt it runs. Every other kind is the orchestrator's; from a worker it is rejected."""

MAX_WORKER_MESSAGE_CHARS = 500
"""A worker event's ``message`` is cut to this many characters in the run log."""

END_KIND: dict[TaskStatus, EventKind] = {
    "succeeded": "task_succeeded",
    "failed": "task_failed",
    "skipped": "task_skipped",
    "cancelled": "task_cancelled",
    "budget_exceeded": "task_budget_exceeded",
}
"""The event kind that ends a task with each status."""

TASK_END_KINDS: dict[str, TaskStatus] = {kind: status for status, kind in END_KIND.items()}
"""Event kinds that end a task, and the status each stands for."""


Stage = Literal["planner", "tasks", "synthesizer"]
"""Where an LLM call was made: planning, a task's attempt, or the synthesis."""


class Payload(BaseModel):
    """Base of the typed payloads of events: :meth:`Event.payload` reads one back."""


class PlanReady(Payload):
    """``plan_ready``: the plan that is dispatched."""

    plan: Plan


class PlanProblems(Payload):
    """``plan_invalid`` and ``plan_adjusted``: what was wrong, one sentence each."""

    problems: list[str] = Field(default_factory=list)


class PersonasOffered(Payload):
    """``personas_offered``: the personas the planner was offered, best match first, when
    the catalog is larger than CREWBOX_PLANNER_CANDIDATES; ``of``: how many there are."""

    offered: list[str] = Field(default_factory=list)
    of: int = 0


class AttemptInfo(Payload):
    """``task_dispatched``, ``task_started``, ``task_retried``, ``attempt_lost``,
    ``attempt_superseded``, ``result_rejected``, ``task_dead_lettered``: which attempt."""

    attempt: int
    worker: str = ""
    priority: Priority = "normal"
    token_sha256: str = ""
    """``task_dispatched`` only: the sha256 (hex) of the attempt's token, so an orchestrator
    that takes the run over can still check the messages of its attempts (the token itself
    is never logged)."""


class TaskEnded(Payload):
    """``task_succeeded``/``failed``/``skipped``/``cancelled``: the outcome in brief."""

    attempt: int = 0
    worker: str = ""
    duration_ms: int = 0
    tokens: int = 0
    cost_usd: USD = Decimal(0)
    artifacts: list[str] = Field(default_factory=list)


class LLMCall(Payload):
    """``llm_call``: one call's usage; ``stage`` is planner, tasks or synthesizer;
    ``attempt`` is the task attempt that made it (tasks only); ``subagent`` the sub-agent
    of the task's persona that made it (None: the persona itself)."""

    stage: Stage
    usage: Usage
    attempt: int | None = None
    subagent: str | None = None


class RunFailed(Payload):
    """``run_failed``: ``resumable`` when the run stopped where it was and an orchestrator
    may go on with it by itself (the results disk was full), not only on ``crewbox resume``."""

    resumable: bool = False


class BudgetInfo(Payload):
    """``budget_exceeded``: the budget and what was spent when it was reached."""

    budget_usd: USD
    spent_usd: USD


class RunEnded(Payload):
    """``run_finished``: the run's status and total usage."""

    status: RunStatus
    usage: Usage


class Empty(Payload):
    """Events that carry no payload (their message says it all)."""


P = TypeVar("P", bound=Payload)


class Event(BaseModel):
    """One line of ``events.jsonl``: something that happened in a run.

    ``kind`` is an :data:`EventKind`; ``data`` is the kind's payload model dumped to JSON
    (see :meth:`payload`), e.g. :class:`LLMCall` for ``llm_call``.
    """

    kind: EventKind
    run_id: RunId
    ts_s: float = Field(default_factory=now_s)
    task_id: str | None = None
    persona: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(
        cls,
        kind: EventKind,
        run_id: str,
        payload: Payload | None = None,
        *,
        task_id: str | None = None,
        persona: str | None = None,
        message: str = "",
    ) -> Event:
        """An event whose ``data`` is ``payload`` (a typed model) dumped to JSON."""
        data = payload.model_dump(mode="json") if payload is not None else {}
        return cls(
            kind=kind, run_id=run_id, task_id=task_id, persona=persona, message=message, data=data
        )

    def payload(self, model: type[P]) -> P:
        """``data`` read back as ``model``.

        Raises:
            pydantic.ValidationError: ``data`` does not fit ``model`` (wrong kind).
        """
        return model.model_validate(self.data)


class WorkerEvent(BaseModel):
    """An event as a worker sends it to the orchestrator: with the attempt's number and
    token, so the orchestrator logs it only for the attempt it dispatched. The token is
    never written to the run log (only ``event`` is, once checked)."""

    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(ge=1)
    token: str
    event: Event


class RejectedMessage(BaseModel):
    """A message of a run's inbox that is not a Result or a WorkerEvent: ``reason`` says
    why in one short line, ``size_bytes`` is its size (its content is never logged)."""

    reason: str
    size_bytes: int = 0


class AttemptRecord(BaseModel):
    """One attempt of a task in ``summary.json``: who ran it, how it ended, what it cost
    (``usage``, every call of it; ``usage_by_subagent``, the part of it each sub-agent
    spent)."""

    attempt: int
    status: AttemptStatus
    worker: str = ""
    usage: Usage = Field(default_factory=Usage)
    usage_by_subagent: dict[str, Usage] = Field(default_factory=dict)
    error: str | None = None


class ConcurrencyChange(Payload):
    """``concurrency_changed``: the limit of calls in flight for one credential (a hash,
    never the key) went from ``old_limit`` to ``new_limit``, and why (crewbox.llm.limiter)."""

    credential: str
    old_limit: float
    new_limit: float
    reason: str


class RunSummary(BaseModel):
    """``summary.json``: statuses, timings, usage and cost per task, per persona, in total.

    ``attempts`` lists every attempt of each task (failed, lost, superseded and cancelled
    ones too) with its usage. ``usage_by_persona`` and ``usage_by_stage`` (``planner``,
    ``tasks``, ``synthesizer``) count every call; ``usage_total`` is the sum of every LLM
    call of the run (the ``llm_call`` events of ``events.jsonl``), what the provider billed.
    """

    run_id: str
    request: str
    status: RunStatus
    started_at_s: float
    ended_at_s: float
    duration_ms: int
    tasks: list[Result]
    attempts: dict[str, list[AttemptRecord]] = Field(default_factory=dict)
    usage_by_persona: dict[str, Usage]
    usage_by_stage: dict[str, Usage]
    usage_total: Usage
    budget_usd: USD | None = None
    budget_exceeded: bool = False
    concurrency_changes: list[ConcurrencyChange] = Field(default_factory=list)
    """Every change of a credential's limit of calls in flight during the run."""
    final_path: str | None = None
    """The answer's file relative to the run folder (``final.md``)."""
