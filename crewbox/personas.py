"""Load personas: ``prompts/<name>.md`` in Claude Code's subagent format, read as leniently.

Format (code.claude.com "Subagents"): front matter with ``name`` and ``description``
(required), ``tools`` (comma list or YAML list; absent = every tool; a tool may carry a
permission rule, ``Bash(npm test:*)``, which crewbox enforces, and ``Agent(a, b)`` limits
which sub-agents the Agent tool starts; ``Task`` is Agent's legacy name), ``disallowedTools``
(taken away from ``tools``), ``model`` (``inherit``, an alias of crewbox.llm.catalog.ALIASES
or a model id), ``maxTurns`` and ``effort`` (low, medium, high, max); crewbox adds
``workspace`` (a folder under workspaces/), ``budget_usd``, ``requests_per_minute`` and
``input_tokens_per_minute`` (crewbox.llm.ratelimit). Claude Code keys that mean nothing in
crewbox (IGNORED_KEYS) are listed once as a warning; other keys (``color``...) are kept in
``extra`` and otherwise ignored. The Markdown body is the system prompt.

Lenient as Claude Code is: front matter that is not valid YAML is read line by line
(:mod:`crewbox.persona_file`) with a warning; tools crewbox does not have are dropped with a
warning. A file that still cannot be used (no name, no description, a bad budget) is one
:class:`InvalidPersona` in :attr:`Personas.invalid`: listed by ``crewbox personas``, and an
error only for a run or plan that names it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from crewbox.errors import PersonaError
from crewbox.llm.catalog import EFFORTS, resolve_alias
from crewbox.persona_file import (
    ROLE_PROMPTS,
    FrontMatterError,
    lenient_fields,
    name_problem,
    read_fields,
    split_front_matter,
)

log = logging.getLogger("crewbox.personas")

AGENT_TOOL = "Agent"
"""Claude Code's tool through which a persona's model hands work to its sub-agents."""

LEGACY_AGENT_TOOL = "Task"
"""Agent's former name, accepted in ``tools`` lists and in the model's calls."""

TOOL_NAMES = ("Read", "Write", "Edit", "Glob", "Grep", "Bash", AGENT_TOOL)
"""The Claude Code tools crewbox has (worker/tools; ``Agent`` runs a persona's sub-agents).
A unit test keeps this equal to the worker's tool table."""

IGNORED_KEYS = (
    "permissionMode",
    "skills",
    "mcpServers",
    "memory",
    "background",
    "isolation",
    "initialPrompt",
)
"""Claude Code front-matter keys that mean nothing in crewbox (no permission prompts, no
skills or MCP servers, no memory, every task runs in its own container): named once in a
warning of ``crewbox personas`` when a file has them."""

_TOOL_ENTRY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
"""A ``tools`` entry: a name, optionally with a rule in parentheses: ``Bash(npm test:*)``."""


def tool_name(entry: str) -> str:
    """The tool an entry of ``tools`` names, ``Task`` read as ``Agent``: ``Bash(npm
    test:*)`` → ``Bash``. An entry that is no tool name (``mcp__x``) comes back stripped."""
    match = _TOOL_ENTRY.match(entry)
    name = match.group(1) if match else entry.strip()
    return AGENT_TOOL if name == LEGACY_AGENT_TOOL else name


def tool_rule(entry: str) -> str | None:
    """The rule in parentheses of a ``tools`` entry (``npm test:*``), None without one."""
    match = _TOOL_ENTRY.match(entry)
    rule = match.group(2) if match else None
    return rule.strip() if rule is not None and rule.strip() else None


def tool_rules(tools: list[str] | None, name: str) -> list[str] | None:
    """The rules ``tools`` gives tool ``name``: None when it lists the tool bare (or has
    no list: every tool, unrestricted), else the rules of its entries."""
    if tools is None:
        return None
    entries = [t for t in tools if tool_name(t) == name]
    if any(tool_rule(t) is None for t in entries):
        return None
    return [rule for t in entries if (rule := tool_rule(t)) is not None]


MAX_TURNS_LIMIT = 200
"""The largest ``maxTurns`` accepted (as ``CREWBOX_MAX_TURNS``)."""


class Persona(BaseModel):
    """A named specialist.

    ``tools``: the Claude Code tools it may use, after ``disallowedTools`` and after dropping
    names crewbox does not have, each as written (a rule kept: ``Bash(npm test:*)``, see
    :func:`tool_name`, :func:`tool_rules`; ``Task`` written as ``Agent``); None for every
    tool. ``model``: a model id (aliases resolved) or None for the configured default.
    ``max_turns``: its ``maxTurns``, None for ``CREWBOX_MAX_TURNS``. ``effort``: its
    ``effort`` (crewbox.llm.catalog.EFFORTS), None for ``CREWBOX_EFFORT`` or the model's
    default. ``workspace``: folder name under workspaces/ or None.
    ``warnings``: one line each, what loading it leniently had to overlook.
    """

    name: str
    description: str
    prompt: str
    tools: list[str] | None = None
    model: str | None = None
    max_turns: int | None = None
    effort: str | None = None
    workspace: str | None = None
    budget_usd: Decimal | None = None
    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    engine: str | None = None
    """Who runs its tasks (worker.engines): ``builtin`` or ``claude-code``; None: the
    configured default (``CREWBOX_ENGINE``, else builtin)."""
    path: Path | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)

    def model_or(self, default: str) -> str:
        """The persona's model id, or ``default`` when it has none or says ``inherit``."""
        return default if self.model in (None, "", "inherit") else str(self.model)

    def turns_or(self, default: int) -> int:
        """The persona's ``maxTurns``, or ``default`` (``CREWBOX_MAX_TURNS``) when unset."""
        return default if self.max_turns is None else self.max_turns


@dataclass(frozen=True)
class InvalidPersona:
    """A persona file that cannot be used: ``name`` (its ``name`` key, else the file's stem),
    the file, and ``reason``, one line that says what to fix."""

    name: str
    path: Path
    reason: str


class Personas(dict[str, Persona]):
    """The usable personas of a prompts folder by name, and :attr:`invalid`: the files that
    could not be used, in file order."""

    def __init__(self, valid: dict[str, Persona], invalid: Iterable[InvalidPersona] = ()) -> None:
        super().__init__(valid)
        self.invalid: list[InvalidPersona] = list(invalid)

    def invalid_reason(self, name: str) -> str | None:
        """Why the file of persona ``name`` cannot be used; None when no invalid file has
        that name (or a valid one does)."""
        if name in self:
            return None
        return next((bad.reason for bad in self.invalid if bad.name == name), None)


def unknown_persona(name: str, known: Iterable[str]) -> str:
    """The one-line problem of a plan or command naming persona ``name`` that is not among
    ``known``: its file's reason when ``known`` is :class:`Personas` and the file is invalid,
    else the list of known personas."""
    names = list(known)
    reason = known.invalid_reason(name) if isinstance(known, Personas) else None
    if reason is not None:
        return f"persona {name!r} cannot be used: {reason}"
    return f"unknown persona {name!r} (known: {', '.join(sorted(names)) or 'none'})"


_LIST_COMMA = re.compile(r",(?![^()]*\))")
"""A comma that separates tools: not one inside a rule's parentheses (``Agent(a, b)``)."""


def parse_tools(value: Any, source: str) -> list[str] | None:
    """Read a ``tools`` or ``disallowedTools`` value: a comma list or a YAML list; None when
    absent.

    Raises:
        PersonaError: when the value is neither a string nor a list of strings.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return [t.strip() for t in _LIST_COMMA.split(value) if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise PersonaError(f"{source}: 'tools' must be a comma list or a YAML list of tool names")


def read_front_matter(text: str, source: str) -> tuple[dict[str, Any], str, list[str]]:
    """The front matter keys, the body and the warnings of a persona file's text.

    YAML first; where the block is not valid YAML (or not a mapping), the line reader of
    :func:`crewbox.persona_file.lenient_fields`, with a warning saying so.

    Raises:
        PersonaError: the text has no (closed) front matter block.
    """
    try:
        block, body = split_front_matter(text)
    except FrontMatterError as exc:
        raise PersonaError(f"{source}: {exc}") from exc
    try:
        meta = yaml.safe_load(block) if block.strip() else {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        note = f"front matter is not strict YAML ({first}); read line by line as Claude Code does"
        return dict(lenient_fields(block)), body, [note]
    if not isinstance(meta, dict):
        note = "front matter is not a YAML mapping; read line by line as Claude Code does"
        return dict(lenient_fields(block)), body, [note]
    return {str(k): v for k, v in meta.items()}, body, []


def parse_persona(text: str, source: str) -> Persona:
    """Parse one persona file's text; ``source`` names it in messages.

    Raises:
        PersonaError: no front matter, a missing or invalid ``name``/``description``, a
            ``tools`` value of the wrong shape, a bad ``budget_usd`` or ``engine``.
    """
    meta, body, warnings = read_front_matter(text, source)
    name = _required(meta.pop("name", None), "name", source, "add 'name: <persona>' to it")
    problem = name_problem(name)
    if problem is not None:
        raise PersonaError(f"{source}: name {name!r} {problem}")
    description = _required(meta.pop("description", None), "description", source, "add one")
    tools = _tools(meta, source, warnings)
    return Persona(
        name=name,
        description=" ".join(description.split()),
        prompt=body.strip(),
        tools=tools,
        model=_model(meta.pop("model", None)),
        max_turns=_max_turns(meta.pop("maxTurns", None), warnings),
        effort=_effort(meta.pop("effort", None), warnings),
        workspace=_optional_str(meta.pop("workspace", None)),
        budget_usd=_budget(meta.pop("budget_usd", None), source),
        requests_per_minute=_rate(meta, "requests_per_minute", source),
        input_tokens_per_minute=_rate(meta, "input_tokens_per_minute", source),
        engine=_engine(meta.pop("engine", None), source),
        extra=meta,
        warnings=_ignored_keys(meta, warnings),
    )


def _ignored_keys(meta: dict[str, Any], warnings: list[str]) -> list[str]:
    """``warnings`` plus one line naming the IGNORED_KEYS ``meta`` has, if any."""
    present = [key for key in IGNORED_KEYS if key in meta]
    if present:
        warnings.append(f"Claude Code keys crewbox ignores: {', '.join(present)}")
    return warnings


ENGINES = ("builtin", "claude-code")
"""The engines a worker can run a task with (worker.engines)."""


def _engine(value: Any, source: str) -> str | None:
    """``engine``: one of ENGINES (any case), None when absent.

    Raises:
        PersonaError: any other value (running it with another engine than asked is worse
            than not loading it).
    """
    if value is None or value == "":
        return None
    engine = str(value).strip().lower()
    if engine not in ENGINES:
        raise PersonaError(
            f"{source}: engine {value!r} is unknown; give one of {', '.join(ENGINES)}"
        )
    return engine


def _effort(value: Any, warnings: list[str]) -> str | None:
    """``effort``: one of EFFORTS (any case); anything else is ignored with a warning."""
    if value is None or value == "":
        return None
    effort = str(value).strip().lower()
    if effort not in EFFORTS:
        warnings.append(f"effort {value!r} ignored: give one of {', '.join(EFFORTS)}")
        return None
    return effort


def _required(value: Any, key: str, source: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PersonaError(f"{source}: front matter has no '{key}'; {hint}")
    return value.strip()


def _tools(meta: dict[str, Any], source: str, warnings: list[str]) -> list[str] | None:
    """The tools after ``disallowedTools`` (by tool name), names crewbox does not have
    dropped (warned); entries kept as written (their rules), ``Task`` written ``Agent``."""
    listed = parse_tools(meta.pop("tools", None), source)
    denied = {tool_name(t) for t in parse_tools(meta.pop("disallowedTools", None), source) or []}
    tools = list(TOOL_NAMES) if listed is None and denied else listed
    if tools is None:
        return None
    entries = list(dict.fromkeys(_agent_entry(t) for t in tools))
    unknown = [t for t in entries if tool_name(t) not in TOOL_NAMES]
    if unknown:
        warnings.append(f"tools crewbox does not have, dropped: {', '.join(unknown)}")
    kept = [t for t in entries if tool_name(t) in TOOL_NAMES and tool_name(t) not in denied]
    unenforced = [t for t in kept if tool_rule(t) and tool_name(t) not in RULED_TOOLS]
    if unenforced:
        warnings.append(f"tool rules crewbox does not enforce, tool kept: {', '.join(unenforced)}")
    return kept


RULED_TOOLS = ("Bash", AGENT_TOOL)
"""The tools whose rules crewbox enforces: Bash's command patterns (worker.tools.bash),
Agent's sub-agent types (worker.subagents)."""


def _agent_entry(entry: str) -> str:
    """``entry`` with the legacy name ``Task`` written ``Agent`` (its rule kept)."""
    entry = entry.strip()
    rule = tool_rule(entry)
    if tool_name(entry) == AGENT_TOOL and entry.startswith(LEGACY_AGENT_TOOL):
        return f"{AGENT_TOOL}({rule})" if rule else AGENT_TOOL
    return entry


def _model(value: Any) -> str | None:
    model = _optional_str(value)
    if model is None or model.strip() == "inherit":
        return None
    return resolve_alias(model)


def _max_turns(value: Any, warnings: list[str]) -> int | None:
    """``maxTurns``: a whole number from 1 to MAX_TURNS_LIMIT; anything else is ignored
    with a warning (the default then applies)."""
    if value is None or value == "":
        return None
    turns = _whole_number(value)
    if not 1 <= turns <= MAX_TURNS_LIMIT:
        warnings.append(f"maxTurns {value!r} ignored: give a whole number 1-{MAX_TURNS_LIMIT}")
        return None
    return turns


def _budget(value: Any, source: str) -> Decimal | None:
    """The ``budget_usd`` key: a positive number of dollars, or None when absent.

    Raises:
        PersonaError: anything else (a budget that cannot be read is never ignored).
    """
    if value is None or value == "":
        return None
    try:
        budget = Decimal(str(value).strip())
    except InvalidOperation:
        budget = Decimal(-1)
    if not budget.is_finite() or budget <= 0:
        raise PersonaError(f"{source}: budget_usd must be a positive number of dollars")
    return budget


def _rate(meta: dict[str, Any], key: str, source: str) -> int | None:
    """A rate limit key (``requests_per_minute``, ``input_tokens_per_minute``): a positive
    whole number, or None when absent.

    Raises:
        PersonaError: anything else (a limit that cannot be read is never ignored).
    """
    value = meta.pop(key, None)
    if value is None or value == "":
        return None
    rate = _whole_number(value)
    if rate < 1:
        raise PersonaError(f"{source}: {key} must be a positive whole number")
    return rate


def _whole_number(value: Any) -> int:
    """``value`` (a YAML int or the text of one) as an int; 0 for anything else (a bool,
    ``2.5``, ``many``)."""
    if isinstance(value, bool):
        return 0
    try:
        return int(str(value).strip())
    except ValueError:
        return 0


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def load_persona(path: Path) -> Persona:
    """Load one persona file.

    Raises:
        PersonaError: unreadable file or invalid content (see :func:`parse_persona`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PersonaError(f"{path}: cannot read persona file ({why})") from exc
    persona = parse_persona(text, str(path))
    return persona.model_copy(update={"path": path})


def load_personas(prompts_dir: Path, report_invalid: bool = True) -> Personas:
    """Every persona under ``prompts_dir`` by name, the role prompts excluded.

    A file that cannot be used is kept in ``invalid`` (so is the second file of a name
    already taken; its reason names both files) and, with ``report_invalid``, logged as one
    warning (`crewbox personas` lists them itself, so it passes False); the others load.

    Raises:
        PersonaError: the folder has no persona file at all.
    """
    valid: dict[str, Persona] = {}
    invalid: list[InvalidPersona] = []
    for path in sorted(prompts_dir.glob("*.md")):
        try:
            persona = load_persona(path)
        except PersonaError as exc:
            invalid.append(InvalidPersona(_name_of(path), path, str(exc)))
            continue
        if persona.name in ROLE_PROMPTS:
            continue
        if persona.name in valid:
            first = valid[persona.name].path
            reason = f"{path}: persona name {persona.name!r} is used twice (also in {first})"
            invalid.append(InvalidPersona(persona.name, path, reason))
            continue
        valid[persona.name] = persona
    invalid = [bad for bad in invalid if bad.name not in ROLE_PROMPTS]
    for bad in invalid if report_invalid else []:
        log.warning("skipping persona file %s: %s", bad.path.name, bad.reason)
    if not valid and not invalid:
        raise PersonaError(f"{prompts_dir}: no persona files (*.md); run from the project root")
    return Personas(valid, invalid)


def _name_of(path: Path) -> str:
    """The name an unusable file would have had: its ``name`` key when the line reader finds
    one, else the file's stem."""
    try:
        name = read_fields(path).get("name")
    except (OSError, UnicodeDecodeError, FrontMatterError):
        return path.stem
    return name.strip() if isinstance(name, str) and name.strip() else path.stem


def load_role_prompt(prompts_dir: Path, role: str) -> Persona:
    """The orchestrator's or synthesizer's prompt file (``prompts/<role>.md``).

    Raises:
        PersonaError: the file is missing or invalid.
    """
    return load_persona(prompts_dir / f"{role}.md")
