"""The worker's tools: Claude Code's Read, Write, Edit, Glob, Grep and Bash in a path sandbox.

- :data:`ALL_TOOLS`: every tool by name.
- :func:`select_tools`: the tools a persona gets (its ``tools`` list, Bash only if allowed).
- :func:`run_tool`: run one ``tool_use`` block; refusals and failures become error results
  the model sees, so the task goes on.
- :func:`run_tools`: a turn's calls; consecutive calls of ``parallel`` tools (``Agent``: a
  sub-agent each, worker.subagents) run at the same time. A call of ``Task`` (the Agent
  tool's legacy name) runs the Agent tool.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor

from crewbox import telemetry
from crewbox.errors import ToolError
from crewbox.llm.base import ToolResultBlock, ToolUseBlock
from crewbox.personas import LEGACY_AGENT_TOOL, tool_name, tool_rules
from crewbox.subagents import TASK_TOOL
from worker.tools.base import Tool
from worker.tools.bash import BashTool
from worker.tools.edit import EditTool
from worker.tools.glob import GlobTool
from worker.tools.grep import GrepTool
from worker.tools.read import ReadTool
from worker.tools.sandbox import Sandbox
from worker.tools.write import WriteTool

__all__ = ["ALL_TOOLS", "TASK_TOOL", "Sandbox", "Tool", "run_tool", "run_tools", "select_tools"]

ALL_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (ReadTool(), WriteTool(), EditTool(), GlobTool(), GrepTool(), BashTool())
}
"""Every tool, by Claude Code name, in a stable order."""

log = logging.getLogger("crewbox.worker")


def select_tools(names: list[str] | None, allow_bash: bool) -> list[Tool]:
    """The tools for a persona.

    Args:
        names: the persona's ``tools`` entries (order kept, duplicates dropped), each a
            tool name or a name with a rule (``Bash(npm test:*)``: Bash, refusing commands
            the rules do not allow, worker.tools.bash); None means all tools.
        allow_bash: when False, Bash is left out even if ``names`` lists it.

    Names crewbox does not have (Claude Code's WebFetch, MCP tools) are skipped with a
    warning, so real Claude Code subagent files load unmodified. ``Agent`` (``Task``) is
    skipped silently: it comes with the persona's sub-agents.
    """
    wanted = list(ALL_TOOLS) if names is None else list(dict.fromkeys(tool_name(n) for n in names))
    unknown = [name for name in wanted if name not in ALL_TOOLS and name != TASK_TOOL]
    if unknown:
        log.warning("skipping tools crewbox does not have: %s", ", ".join(unknown))
    wanted = [name for name in wanted if name in ALL_TOOLS and (allow_bash or name != "Bash")]
    bash_rules = tool_rules(names, "Bash")
    return [BashTool(bash_rules) if n == "Bash" and bash_rules else ALL_TOOLS[n] for n in wanted]


def run_tool(call: ToolUseBlock, tools: list[Tool], sandbox: Sandbox) -> ToolResultBlock:
    """Run one tool call and return its result block (same ``tool_use_id``).

    The input is validated by the tool's input model (the one its schema comes from).
    Never raises for an unknown or not-enabled tool name, input that does not fit the tool's
    model, a :class:`ToolError` or an ``OSError`` from the tool: those become a result with
    ``is_error=True`` and one line saying what went wrong. Other exceptions are bugs and
    propagate.
    """
    name = TASK_TOOL if call.name == LEGACY_AGENT_TOOL else call.name
    with telemetry.tool_span(name, call.id) as span:
        try:
            content = _run(call, tools, sandbox)
        except (ToolError, OSError) as exc:
            message = str(exc).strip() or type(exc).__name__
            telemetry.end_status(span, "failed", message)
            return ToolResultBlock(tool_use_id=call.id, content=message, is_error=True)
        return ToolResultBlock(tool_use_id=call.id, content=content)


def run_tools(
    calls: list[ToolUseBlock], tools: list[Tool], sandbox: Sandbox
) -> list[ToolResultBlock]:
    """Run one turn's calls (see :func:`run_tool`); the results in the order of ``calls``.

    Calls run one after another, except that consecutive calls of tools whose ``parallel``
    attribute is true (optional, false when absent) run together, one thread each, as
    Claude Code runs several ``Task`` calls of one turn. Exceptions other than those
    :func:`run_tool` turns into error results propagate (the first, once its group ended).
    """
    by_name = {tool.name: tool for tool in tools}
    results: list[ToolResultBlock] = []
    group: list[ToolUseBlock] = []
    for call in [*calls, None]:
        name = TASK_TOOL if call is not None and call.name == LEGACY_AGENT_TOOL else None
        tool = by_name.get(name or call.name) if call is not None else None
        if call is not None and getattr(tool, "parallel", False):
            group.append(call)
            continue
        results.extend(_run_together(group, tools, sandbox))
        group = []
        if call is not None:
            results.append(run_tool(call, tools, sandbox))
    return results


def _run_together(
    calls: list[ToolUseBlock], tools: list[Tool], sandbox: Sandbox
) -> list[ToolResultBlock]:
    if len(calls) <= 1:
        return [run_tool(call, tools, sandbox) for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="tool") as pool:
        # each thread in a copy of this one's context: its spans nest under this attempt
        futures = [
            pool.submit(contextvars.copy_context().run, run_tool, call, tools, sandbox)
            for call in calls
        ]
        return [future.result() for future in futures]


def _run(call: ToolUseBlock, tools: list[Tool], sandbox: Sandbox) -> str:
    by_name = {tool.name: tool for tool in tools}
    name = TASK_TOOL if call.name == LEGACY_AGENT_TOOL else call.name
    tool = by_name.get(name)
    if tool is None:
        available = ", ".join(by_name) or "none"
        raise ToolError(f"tool {call.name!r} is not available; available tools: {available}")
    return tool.run(tool.parse(call.input), sandbox)
