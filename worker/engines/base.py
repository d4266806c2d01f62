"""The engine seam: the same task in, the same outcome out, whoever runs it.

``builtin`` is crewbox's own agent loop (worker.agent, run by worker.service.TaskRunner);
``claude-code`` is the real Claude Code CLI (worker.engines.claude_code). Both get an
:class:`EngineRun` and return a :class:`worker.agent.AgentOutcome`; the TaskRunner around them
does the rest alike (heartbeats through the queue, the run watch that sets ``stop``, the
Result with artifacts and usage, DLQ and resume).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crewbox.config import Settings
from crewbox.llm.base import LLMClient
from crewbox.models import Task, Usage
from crewbox.personas import Persona

BUILTIN = "builtin"
CLAUDE_CODE = "claude-code"


def engine_of(settings: Settings, persona: Persona) -> str:
    """The engine of ``persona``'s tasks: ``CREWBOX_ENGINE`` when set (every persona),
    else the persona's ``engine``, else builtin."""
    return settings.engine or persona.engine or BUILTIN


@dataclass
class EngineRun:
    """One attempt for an engine.

    ``llm``: the task's budgeted client (every call goes through it); ``model``: the model id
    of the persona; ``out_dir``: the working directory, whose files are the artifacts;
    ``workspace``: the persona's read-only reference folder or None; ``deadline_m``:
    ``time.monotonic()`` by which the attempt ends (``timeout_s``); ``stop``: set when the
    run is cancelled or lost its owner; ``on_call(usage, subagent)``: each call's usage as
    it returns; ``map_model``: the model id a requested model becomes
    (``Settings.model_of``); ``subagents``: the persona's sub-agents by name.
    """

    task: Task
    persona: Persona
    llm: LLMClient
    model: str
    out_dir: Path
    workspace: Path | None
    max_turns: int
    allow_bash: bool
    deadline_m: float
    stop: threading.Event
    on_call: Callable[[Usage, str | None], None]
    map_model: Callable[[str | None], str]
    subagents: dict[str, Persona] = field(default_factory=dict)
    timed_out: str = ""
    """The error line of a run cut by its deadline."""
