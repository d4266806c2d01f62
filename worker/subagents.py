"""The ``Agent`` tool: a persona's model hands part of its task to one of its sub-agents.

As Claude Code's Agent tool (formerly ``Task``; a call of ``Task`` runs it too): the input is
``description`` (3-5 words), ``prompt`` (the
work) and ``subagent_type`` (a sub-agent's name, crewbox.subagents); the tool's
description lists the sub-agents (``- name: description (Tools: ...)``). A call runs a
nested agent loop (worker.agent.run_loop) with the sub-agent's prompt, model and tools, in
the task's sandbox and output folder, within the task's deadline, stop event and budgets
(the same LLM client), and returns the sub-agent's final text. Several ``Agent`` calls of
one turn run at the same time (``parallel``, worker.tools.run_tools). ``Agent(a, b)`` in
the persona's tools offers only sub-agents ``a`` and ``b`` (crewbox.subagents).

A sub-agent's tools are the persona's tools (as selected for the task, so Bash only when
the persona has it and Bash is allowed) that its own ``tools`` names, or all of them when
it names none; never ``Agent`` (sub-agents do not nest); Bash keeps the persona's rules,
or takes the sub-agent's own (``Bash(npm test:*)``) when the persona has none. A sub-agent
calls with its own ``effort``, else the persona's. Each call of a sub-agent goes to
``record(usage, subagent_name)`` as it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from crewbox import telemetry
from crewbox.errors import BudgetExceededError, CrewboxError, ToolError
from crewbox.llm.base import ToolDef
from crewbox.models import Usage
from crewbox.personas import Persona, tool_name, tool_rules
from crewbox.subagents import subagent_model
from worker.agent import AgentSetup, LoopLimits, run_loop, system_blocks
from worker.tools import TASK_TOOL, Tool
from worker.tools.base import BaseTool, ToolInput, input_schema
from worker.tools.bash import BashTool
from worker.tools.sandbox import Sandbox

Record = Callable[[Usage, str], None]
"""Where a sub-agent's calls go: ``record(usage, subagent_name)``, from its own thread."""

DESCRIPTION = (
    "Launch a new agent to handle a complex, multi-step piece of your task on its own. "
    "It works in your working directory and workspace with the tools listed for it, "
    "cannot see this conversation, and returns one final message to you: give it a "
    "complete, self-contained prompt and say what it should report back. Several Agent "
    "calls in one turn run at the same time.\n\nAvailable agent types and the tools "
    "they have access to:\n"
)


class TaskInput(ToolInput):
    """The ``Agent`` tool's input: Claude Code's three parameters."""

    description: str = Field(description="A short (3-5 word) description of the task")
    prompt: str = Field(min_length=1, description="The task for the agent to perform")
    subagent_type: str = Field(description="The type of specialized agent to use for this task")


TASK_SCHEMA = input_schema(TaskInput)
"""The Agent tool's input schema, made once (a task's tool list is built per attempt)."""


@dataclass
class SubAgent:
    """One sub-agent as the Agent tool runs it: its persona file and its tools."""

    persona: Persona
    tools: list[Tool]


def subagent_tools(subagent: Persona, parent_tools: list[Tool]) -> list[Tool]:
    """The tools of ``parent_tools`` (the persona's, selected for the task) that
    ``subagent``'s ``tools`` names, or all of them when it names none; never Agent. A
    Bash without rules of its own takes the sub-agent's (``Bash(npm test:*)``)."""
    names = subagent.tools
    wanted = {tool_name(t) for t in names} if names is not None else None
    tools = [
        t for t in parent_tools if t.name != TASK_TOOL and (wanted is None or t.name in wanted)
    ]
    own_rules = tool_rules(names, "Bash")
    return [
        BashTool(own_rules) if own_rules and isinstance(t, BashTool) and not t.rules else t
        for t in tools
    ]


def task_tool_definition(subagents: dict[str, SubAgent]) -> ToolDef:
    """Claude Code's Agent tool, its description listing ``subagents``."""
    lines = []
    for name, sub in subagents.items():
        tools = ", ".join(t.name for t in sub.tools) or "none"
        lines.append(f"- {name}: {sub.persona.description} (Tools: {tools})")
    description = DESCRIPTION + "\n".join(lines)
    return ToolDef(name=TASK_TOOL, description=description, input_schema=TASK_SCHEMA)


def subagent_message(prompt: str, cwd: Path, workspace: Path | None) -> str:
    """A sub-agent's first user message: the prompt it was given, then where it works."""
    where = f"Your working directory (the task's output folder) is {cwd}."
    if workspace is not None:
        where += f" The workspace with reference material is {workspace}."
    return (
        f"{prompt}\n\n## Where you work\n\n{where}\n\nYour final message is returned to "
        "the agent that asked you; make it complete on its own."
    )


def sub_agents(subagents: dict[str, Persona], parent_tools: list[Tool]) -> dict[str, SubAgent]:
    """Each of ``subagents`` with its tools (:func:`subagent_tools` of ``parent_tools``)."""
    return {name: SubAgent(p, subagent_tools(p, parent_tools)) for name, p in subagents.items()}


class TaskTool(BaseTool[TaskInput]):
    """The Agent tool of one task attempt (see the module docstring).

    ``parent``: the persona's AgentSetup (LLM client, model, sandbox, limits); ``limits``:
    the task's deadline and stop event; ``claude``: whether model aliases name Claude
    models (False on an OpenAI-compatible server: see crewbox.subagents.subagent_model).
    """

    name = TASK_TOOL
    description = DESCRIPTION
    input_model = TaskInput
    parallel = True

    def __init__(
        self,
        subagents: dict[str, Persona],
        parent: AgentSetup,
        limits: LoopLimits,
        record: Record,
        claude: bool = True,
    ) -> None:
        self.subagents = sub_agents(subagents, parent.tools)
        self.parent = parent
        self.limits = limits
        self.record = record
        self.claude = claude
        self.definition = task_tool_definition(self.subagents)

    def run(self, input: TaskInput, sandbox: Sandbox) -> str:
        """Run the sub-agent ``input.subagent_type`` on ``input.prompt``; its final text.

        Raises:
            ToolError: an unknown sub-agent, or the sub-agent did not finish (max turns,
                timeout, cancelled, an API error): the model sees why.
            BudgetExceededError: the sub-agent's next call did not fit a budget (the task
                ends ``budget_exceeded``).
        """
        args = input
        sub = self.subagents.get(args.subagent_type)
        if sub is None:
            known = ", ".join(self.subagents) or "none"
            raise ToolError(f"Agent: no sub-agent {args.subagent_type!r}; available: {known}")
        return self._run(sub, args.prompt, sandbox)

    def _run(self, sub: SubAgent, prompt: str, sandbox: Sandbox) -> str:
        name = sub.persona.name
        setup = AgentSetup(
            persona=sub.persona,
            llm=self.parent.llm,
            model=subagent_model(sub.persona, self.parent.model, self.claude),
            tools=sub.tools,
            sandbox=sandbox,
            workspace=self.parent.workspace,
            max_turns=sub.persona.turns_or(self.parent.max_turns),
            max_tokens=self.parent.max_tokens,
            effort=sub.persona.effort or self.parent.persona.effort,
        )
        first = subagent_message(prompt, sandbox.cwd, setup.workspace)
        try:
            with telemetry.agent_span(name) as span:
                outcome = run_loop(
                    system_blocks(sub.persona, ""),
                    first,
                    setup,
                    self.limits,
                    lambda usage: self.record(usage, name),
                )
                telemetry.end_status(
                    span, "failed" if outcome.error else "succeeded", outcome.error
                )
        except CrewboxError as exc:
            raise ToolError(f"sub-agent {name} failed: {exc}") from exc
        if outcome.budget_exceeded:
            raise BudgetExceededError(f"sub-agent {name}: {outcome.error}", outcome.budget_scope)
        if outcome.error:
            partial = f"; its last text: {outcome.text}" if outcome.text else ""
            raise ToolError(f"sub-agent {name} did not finish: {outcome.error}{partial}")
        return outcome.text or f"(sub-agent {name} ended without a final message)"
