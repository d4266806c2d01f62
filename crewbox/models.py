"""The pydantic models every crewbox service exchanges.

Vocabulary (ARCHITECTURE.md): a *request* becomes a *run*; the planner turns it into a *plan*
of *task specs*; each dispatched *task* yields a *result* listing its *artifacts* and *usage*;
*events* log everything in ``results/<run_id>/events.jsonl``.

Times are Unix epoch seconds (``*_at_s``, float); durations are milliseconds (``*_ms``);
money is US dollars (``*_usd``) held as :class:`~decimal.Decimal` so sums are exact, written
to JSON as numbers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Task ids become folder names, so they are short and filesystem-safe."""

MAX_TASKS = 24
"""Upper bound on tasks in one plan: a bound on cost, and on what a person can review."""

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

TaskStatus = Literal["succeeded", "failed", "skipped"]


def now_s() -> float:
    """Current Unix time in seconds."""
    return time.time()


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121-193500-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class Usage(BaseModel):
    """Tokens and cost of one or more LLM calls.

    Token fields follow the Anthropic Messages API usage: ``input_tokens`` (uncached input),
    ``cache_write_tokens`` (``cache_creation_input_tokens``), ``cache_read_tokens``
    (``cache_read_input_tokens``), ``output_tokens``. ``calls`` counts the calls summed.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: USD = Decimal(0)
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
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


class ContextFile(BaseModel):
    """A file the user attached to a request (``--context-file``), shared with every task."""

    name: str
    content: str


class TaskSpec(BaseModel):
    """One task of a plan: the contract of ARCHITECTURE.md (``submit_plan`` input items)."""

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

    ``budget_usd``: when set, the run dispatches nothing more once its cost reaches it.
    """

    run_id: str = Field(default_factory=new_run_id)
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

    run_id: str
    spec: TaskSpec
    request_text: str
    context: str = ""
    dependencies: list[DependencyOutput] = Field(default_factory=list)
    allow_bash: bool = False
    attempt: int = 1
    enqueued_at_s: float = Field(default_factory=now_s)

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

    ``usage`` is the sum of ``calls`` (one Usage per LLM call, in call order).
    ``worker`` names who ran it: ``<hostname>:<pid>``. ``retryable`` marks failures worth
    another attempt (API errors, a crashed or lost worker), not the model's own failures.
    """

    run_id: str
    task_id: str
    persona: str
    title: str = ""
    status: TaskStatus
    summary: str = ""
    artifacts: list[Artifact] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    calls: list[Usage] = Field(default_factory=list)
    started_at_s: float = 0.0
    ended_at_s: float = 0.0
    duration_ms: int = 0
    error: str | None = None
    retryable: bool = False
    worker: str = ""
    attempt: int = 1

    @classmethod
    def failed(cls, task: Task, error: str, *, worker: str = "", retryable: bool = True) -> Result:
        """A failed Result for ``task`` that never produced one of its own (a crashed
        handler, a lost worker); started and ended now."""
        now = now_s()
        return cls(
            run_id=task.run_id,
            task_id=task.task_id,
            persona=task.persona,
            title=task.spec.title,
            status="failed",
            error=error,
            retryable=retryable,
            worker=worker,
            started_at_s=now,
            ended_at_s=now,
            attempt=task.attempt,
        )


class Event(BaseModel):
    """One line of ``events.jsonl``: something that happened in a run.

    ``kind`` is one of: run_started, plan_ready, plan_invalid, plan_adjusted,
    task_dispatched, task_started, task_succeeded, task_failed, task_skipped, task_retried,
    llm_call, budget_exceeded, synthesis_written, synthesis_failed, run_finished, run_failed.
    ``data`` holds kind-specific fields (``usage`` for llm_call).
    """

    kind: str
    run_id: str
    ts_s: float = Field(default_factory=now_s)
    task_id: str | None = None
    persona: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class RunSummary(BaseModel):
    """``summary.json``: statuses, timings, usage and cost per task, per persona, in total.

    ``usage_by_stage`` has ``planner``, ``tasks`` and ``synthesizer``; ``usage_total`` is the
    sum of every LLM call of the run (the ``llm_call`` events of ``events.jsonl``).
    """

    run_id: str
    request: str
    status: Literal["succeeded", "partial", "failed"]
    started_at_s: float
    ended_at_s: float
    duration_ms: int
    tasks: list[Result]
    usage_by_persona: dict[str, Usage]
    usage_by_stage: dict[str, Usage]
    usage_total: Usage
    budget_usd: USD | None = None
    budget_exceeded: bool = False
    final_path: str | None = None
