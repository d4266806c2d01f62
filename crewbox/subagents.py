"""A persona's sub-agents: ``prompts/<persona>/agents/*.md``, in the persona file format.

A sub-agent is a :class:`~crewbox.personas.Persona` (``name``, ``description``, optional
``tools`` and ``model``, the system prompt) that the persona's model may hand a piece of
its task to through the ``Task`` tool (worker.subagents). Claude Code keeps its sub-agents
in ``.claude/agents/*.md``; crewbox keeps each persona's next to the persona's file.

A sub-agent file that does not load is skipped with one warning: the persona still works.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crewbox.errors import PersonaError
from crewbox.personas import Persona, load_persona

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


TASK_TOOL = "Task"
"""Claude Code's tool through which a persona's model hands work to its sub-agents."""


def offers_task(persona: Persona) -> bool:
    """True when the persona's tools allow the Task tool: no ``tools`` key (every tool), or
    Task among them (``disallowedTools: Task`` takes it away), as in Claude Code."""
    return persona.tools is None or TASK_TOOL in persona.tools


def offered_subagents(persona: Persona) -> dict[str, Persona]:
    """The sub-agents the persona's Task tool offers: :func:`load_subagents` when
    :func:`offers_task`, else none (its agents/ files are not read)."""
    return load_subagents(persona) if offers_task(persona) else {}


def subagent_model(subagent: Persona, parent_model: str, claude: bool = True) -> str:
    """The model a sub-agent calls: ``parent_model`` (the persona's) when it has none or
    says ``inherit``, or when ``claude`` is False (an OpenAI-compatible server serves its
    own model, not Claude's); else its model (aliases were resolved when its file loaded:
    crewbox.personas.MODEL_ALIASES)."""
    return subagent.model_or(parent_model) if claude else parent_model


def persona_models(persona: Persona, own: str, claude: bool = True) -> set[str]:
    """Every model a task of ``persona`` may call: its own (``own``: Settings.model_of) and
    its sub-agents' (see :func:`subagent_model`). Reads the sub-agent files."""
    subagents = load_subagents(persona).values()
    return {own} | {subagent_model(s, own, claude) for s in subagents}
