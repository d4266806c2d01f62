"""The agent loop: persona prompt + task → model ↔ tools, until the model ends its turn.

One loop per task, as in Claude Code: the model answers; if it asked for tools, the calls
run in the sandbox (in order; consecutive ``Agent`` calls at the same time, see
worker.tools.run_tools) and their results (or errors, which the model sees and can act on)
go back; this repeats until the model stops asking or ``max_turns`` is reached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crewbox.errors import BudgetExceededError, LLMAPIError
from crewbox.llm.base import LLMClient, Message, SystemBlock
from crewbox.models import Task, Usage
from crewbox.personas import Persona
from worker.tools import Tool, run_tools
from worker.tools.sandbox import Sandbox


@dataclass
class AgentOutcome:
    """What the loop produced: the model's final text, its turns, and why it stopped (each
    call's usage goes to the loop's ``on_call`` as it returns).

    ``error`` is None when the model ended its turn; otherwise one line (max turns, timeout,
    cancelled, budget). ``cancelled``: the loop stopped because ``stop`` was set;
    ``budget_exceeded``: because the next call could have crossed a budget (not made).
    """

    text: str = ""
    turns: int = 0
    error: str | None = None
    cancelled: bool = False
    budget_exceeded: bool = False
    budget_scope: str = ""


@dataclass
class AgentSetup:
    """Everything the loop needs besides the task: who, with what model, within what limits."""

    persona: Persona
    llm: LLMClient
    model: str
    tools: list[Tool]
    sandbox: Sandbox
    workspace: Path | None
    max_turns: int = 20
    max_tokens: int = 4096
    effort: str | None = None
    """The calls' effort; None: the persona's ``effort`` (else CREWBOX_EFFORT or the
    model's default, crewbox.llm.anthropic)."""


def system_blocks(persona: Persona, context: str) -> list[SystemBlock]:
    """The persona prompt, then the run's shared context; the last block is cached.

    Both are the stable prefix of every call of the task (and of every task of the persona
    in the run), so ``cache_control`` goes on the last of them.
    """
    blocks = [SystemBlock(text=persona.prompt)]
    if context.strip():
        blocks.append(SystemBlock(text=f"# Shared context of this request\n\n{context}"))
    blocks[-1].cache = True
    return blocks


def task_message(task: Task, cwd: Path, workspace: Path | None) -> str:
    """The first user message: the request, the task, its dependencies' outputs, the rules."""
    spec = task.spec
    parts = [
        f"Task id: {spec.id}\nTitle: {spec.title}\nRun: {task.run_id}",
        f"## The user's request\n\n{task.request_text}",
        f"## Your task\n\n{spec.instructions}",
    ]
    if task.dependencies:
        parts.append("## Results of the tasks yours depends on\n\n" + dependency_text(task))
    where = f"Your working directory (output folder) is {cwd}. Every file you write there "
    where += "by a relative path is delivered to the user as an artifact."
    if workspace is not None:
        where += f" Your workspace with reference material is {workspace} (read-only)."
    parts.append(
        f"## Where you work\n\n{where}\n\nWhen you are done, reply with a short "
        "summary (3-6 sentences) of what you produced."
    )
    return "\n\n".join(parts)


def dependency_text(task: Task) -> str:
    """Each dependency's title, status, summary and artifact paths, as Markdown."""
    sections = []
    for dep in task.dependencies:
        files = ", ".join(dep.artifacts) or "none"
        sections.append(
            f"### {dep.task_id} ({dep.persona}, {dep.status}): {dep.title}\n\n"
            f"{dep.summary or '(no summary)'}\n\nArtifacts (relative to the run): {files}"
        )
    return "\n\n".join(sections)


def run_agent(
    task: Task,
    setup: AgentSetup,
    deadline_s: float,
    on_call: Callable[[Usage], None] | None = None,
    stop: threading.Event | None = None,
) -> AgentOutcome:
    """Run the loop for ``task`` until the model ends its turn, ``max_turns``, the deadline,
    or ``stop`` is set (checked before every call).

    ``deadline_s`` is a ``time.monotonic()`` value; each LLM call gets what is left of it as
    its ``timeout_s``, so a slow call is cut at the deadline. ``on_call`` sees each call's
    usage as soon as it returns. LLM errors (LLMAPIError, ModelBehaviorError) before the
    deadline propagate to the caller, which fails the task.
    """
    system = system_blocks(setup.persona, task.context)
    first = task_message(task, setup.sandbox.cwd, setup.workspace)
    return run_loop(system, first, setup, task_limits(task, deadline_s, stop), on_call)


@dataclass(frozen=True)
class LoopLimits:
    """When a loop stops besides ``max_turns``: ``deadline_s`` (``time.monotonic()``),
    with ``timed_out`` as its error line, and ``stop`` once it is set."""

    deadline_s: float
    timed_out: str
    stop: threading.Event | None = None


def task_limits(task: Task, deadline_s: float, stop: threading.Event | None) -> LoopLimits:
    """The limits of ``task``'s loop, shared by its sub-agents' loops."""
    timed_out = f"timed out after {task.spec.timeout_s}s (timeout_s of the task)"
    return LoopLimits(deadline_s, timed_out, stop)


def run_loop(
    system: list[SystemBlock],
    first_message: str,
    setup: AgentSetup,
    limits: LoopLimits,
    on_call: Callable[[Usage], None] | None = None,
) -> AgentOutcome:
    """The tool-use loop itself from ``first_message`` (see :func:`run_agent`); a task's
    sub-agents (worker.subagents) run it too, with their own system prompt and tools.

    A tool that raises BudgetExceededError (a sub-agent whose next call did not fit) ends
    the loop as a call would."""
    definitions = [t.definition for t in setup.tools]
    messages = [Message(role="user", content=first_message)]
    outcome = AgentOutcome()
    stop = limits.stop
    while outcome.turns < setup.max_turns:
        if stop is not None and stop.is_set():
            outcome.error, outcome.cancelled = "cancelled: the run was cancelled", True
            return outcome
        remaining_s = limits.deadline_s - time.monotonic()
        if remaining_s <= 0:
            outcome.error = limits.timed_out
            return outcome
        try:
            response = setup.llm.complete(
                system=system,
                messages=messages,
                tools=definitions or None,
                max_tokens=setup.max_tokens,
                model=setup.model,
                timeout_s=remaining_s,
                effort=setup.effort or setup.persona.effort,
            )
        except BudgetExceededError as exc:
            return _over_budget(outcome, exc)
        except LLMAPIError:
            if time.monotonic() < limits.deadline_s:
                raise
            outcome.error = limits.timed_out + " during an LLM call"
            return outcome
        outcome.turns += 1
        if on_call is not None:
            on_call(response.usage)
        outcome.text = response.text or outcome.text
        if response.stop_reason != "tool_use" or not response.tool_uses:
            return outcome
        # The whole answer goes back as it came: thinking blocks first, signatures intact
        # (the API refuses a tool-loop turn whose thinking was dropped).
        messages.append(Message(role="assistant", content=list(response.content)))
        try:
            results = run_tools(response.tool_uses, setup.tools, setup.sandbox)
        except BudgetExceededError as exc:
            return _over_budget(outcome, exc)
        messages.append(Message(role="user", content=list(results)))
    outcome.error = (
        f"stopped after {setup.max_turns} turns (maxTurns, else CREWBOX_MAX_TURNS) "
        "without finishing"
    )
    return outcome


def _over_budget(outcome: AgentOutcome, exc: BudgetExceededError) -> AgentOutcome:
    outcome.error, outcome.budget_exceeded = str(exc), True
    outcome.budget_scope = exc.scope
    return outcome
