"""A persona's sub-agents: ``prompts/<persona>/agents/*.md``, in the persona file format.

A sub-agent is a :class:`~crewbox.personas.Persona` (``name``, ``description``, optional
``tools`` and ``model``, the system prompt) that the persona's model may hand a piece of
its task to through the ``Agent`` tool (``Task``, its legacy name; worker.subagents).
Claude Code keeps its sub-agents in ``.claude/agents/*.md``; crewbox keeps each persona's
next to the persona's file.

A sub-agent file that does not load is skipped with one warning: the persona still works.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crewbox.errors import PersonaError
from crewbox.personas import AGENT_TOOL, Persona, load_persona, tool_name, tool_rules

log = logging.getLogger("crewbox.personas")

AGENTS_DIR = "agents"
"""The sub-agents' folder inside ``prompts/<persona>/``."""


def agents_dir(persona: Persona) -> Path | None:
    """``prompts/<persona>/agents`` beside the persona's file, or None for a persona that
    was not loaded from a file."""
    if persona.path is None:
        return None
    return persona.path.parent / persona.name / AGENTS_DIR


def read_subagents(persona: Persona) -> tuple[dict[str, Persona], list[str]]:
    """The persona's sub-agents by name, in file-name order ({} when it has none), and one
    line per file skipped: one that does not load (bad front matter, no name...) or repeats
    a name. Never raises."""
    folder = agents_dir(persona)
    if folder is None or not folder.is_dir():
        return {}, []
    subagents: dict[str, Persona] = {}
    skipped: list[str] = []
    for path in sorted(folder.glob("*.md")):
        try:
            subagent = load_persona(path)
        except PersonaError as exc:
            skipped.append(f"sub-agent skipped: {exc}")
            continue
        if subagent.name in subagents:
            skipped.append(f"sub-agent skipped: {path}: name {subagent.name!r} is used twice")
            continue
        subagents[subagent.name] = subagent
    return subagents, skipped


def load_subagents(persona: Persona) -> dict[str, Persona]:
    """The persona's sub-agents (see :func:`read_subagents`); each file skipped is logged
    as one warning."""
    subagents, skipped = read_subagents(persona)
    for line in skipped:
        log.warning("%s", line)
    return subagents


TASK_TOOL = AGENT_TOOL
"""The sub-agent tool's name: Claude Code's ``Agent`` (``Task`` accepted as its legacy name
in tools lists, crewbox.personas.tool_name, and in the model's calls, worker.tools)."""


def offers_task(persona: Persona) -> bool:
    """True when the persona's tools allow the Agent tool: no ``tools`` key (every tool), or
    Agent (or Task) among them (``disallowedTools: Agent`` takes it away), as in Claude
    Code."""
    return persona.tools is None or any(tool_name(t) == AGENT_TOOL for t in persona.tools)


def allowed_types(persona: Persona) -> list[str] | None:
    """The sub-agent types ``Agent(a, b)`` entries allow (comma-separated); None when the
    tool is listed bare or not restricted."""
    rules = tool_rules(persona.tools, AGENT_TOOL)
    if rules is None:
        return None
    return [t.strip() for rule in rules for t in rule.split(",") if t.strip()]


def offered_subagents(persona: Persona) -> dict[str, Persona]:
    """The sub-agents the persona's Agent tool offers: :func:`load_subagents` when
    :func:`offers_task` (only the types of :func:`allowed_types` when it restricts them),
    else none (its agents/ files are not read)."""
    if not offers_task(persona):
        return {}
    subagents = load_subagents(persona)
    types = allowed_types(persona)
    if types is None:
        return subagents
    return {name: sub for name, sub in subagents.items() if name in types}


def subagent_model(subagent: Persona, parent_model: str, claude: bool = True) -> str:
    """The model a sub-agent calls: ``parent_model`` (the persona's) when it has none or
    says ``inherit``, or when ``claude`` is False (an OpenAI-compatible server serves its
    own model, not Claude's); else its model (aliases were resolved when its file loaded:
    crewbox.llm.catalog.ALIASES)."""
    return subagent.model_or(parent_model) if claude else parent_model


def persona_models(persona: Persona, own: str, claude: bool = True) -> set[str]:
    """Every model a task of ``persona`` may call: its own (``own``: Settings.model_of) and
    its sub-agents' (see :func:`subagent_model`). Reads the sub-agent files."""
    subagents = load_subagents(persona).values()
    return {own} | {subagent_model(s, own, claude) for s in subagents}
