"""Load and validate personas: ``prompts/<name>.md`` in Claude Code subagent format.

Format (https://docs.claude.com/en/docs/claude-code/sub-agents): YAML front matter with
``name`` and ``description`` (required), ``tools`` (comma list or YAML list; absent = all
tools), ``model`` (``inherit`` or a model id); crewbox adds ``workspace`` (a folder under
workspaces/). Unknown keys are kept in ``extra`` and otherwise ignored, so real Claude Code
subagent files load unmodified. The Markdown body is the system prompt.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from pydantic import BaseModel, Field

from crewbox.errors import PersonaError

ROLE_PROMPTS = frozenset({"orchestrator", "synthesizer"})
"""Files in prompts/ that are the orchestrator's own prompts, not personas to plan for."""

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
"""Claude Code subagent names: lowercase letters, digits and hyphens."""


class Persona(BaseModel):
    """A named specialist.

    ``tools``: tool names the persona may use, None for all. ``model``: None or ``inherit``
    means the configured default model. ``workspace``: folder name under workspaces/ or None.
    """

    name: str
    description: str
    prompt: str
    tools: list[str] | None = None
    model: str | None = None
    workspace: str | None = None
    budget_usd: Decimal | None = None
    path: Path | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def model_or(self, default: str) -> str:
        """The persona's model id, or ``default`` when it has none or says ``inherit``."""
        return default if self.model in (None, "", "inherit") else str(self.model)


def parse_tools(value: Any, source: str) -> list[str] | None:
    """Read the ``tools`` key: a comma-separated string or a YAML list; None when absent.

    Raises:
        PersonaError: when the value is neither a string nor a list of strings.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise PersonaError(f"{source}: 'tools' must be a comma list or a YAML list of tool names")


def parse_persona(text: str, source: str) -> Persona:
    """Parse one persona file's text; ``source`` names it in error messages.

    Raises:
        PersonaError: no front matter, bad YAML, or a missing/invalid ``name``/``description``.
    """
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise PersonaError(f"{source}: front matter is not valid YAML ({first})") from exc
    meta = dict(post.metadata)
    name, description = meta.pop("name", None), meta.pop("description", None)
    if not isinstance(name, str) or not name.strip():
        raise PersonaError(f"{source}: front matter has no 'name'; add 'name: <persona>' to it")
    if not NAME_PATTERN.match(name.strip()):
        raise PersonaError(f"{source}: name {name!r} must be lowercase letters, digits, hyphens")
    if not isinstance(description, str) or not description.strip():
        raise PersonaError(f"{source}: front matter has no 'description'; add one line of it")
    return Persona(
        name=name.strip(),
        description=" ".join(description.split()),
        prompt=post.content.strip(),
        tools=parse_tools(meta.pop("tools", None), source),
        model=_optional_str(meta.pop("model", None)),
        workspace=_optional_str(meta.pop("workspace", None)),
        budget_usd=_budget(meta.pop("budget_usd", None), source),
        extra=meta,
    )


def _budget(value: Any, source: str) -> Decimal | None:
    """The ``budget_usd`` key: a positive number of dollars, or None when absent.

    Raises:
        PersonaError: anything else.
    """
    if value is None:
        return None
    try:
        budget = Decimal(str(value))
    except InvalidOperation:
        budget = Decimal(-1)
    if not budget.is_finite() or budget <= 0:
        raise PersonaError(f"{source}: budget_usd must be a positive number of dollars")
    return budget


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def load_persona(path: Path) -> Persona:
    """Load one persona file.

    Raises:
        PersonaError: unreadable file or invalid content (see :func:`parse_persona`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PersonaError(f"{path}: cannot read persona file ({exc.strerror})") from exc
    persona = parse_persona(text, str(path))
    return persona.model_copy(update={"path": path})


def load_personas(prompts_dir: Path) -> dict[str, Persona]:
    """Every persona under ``prompts_dir`` by name, the role prompts excluded.

    Raises:
        PersonaError: the folder has no persona, a file is invalid, or two share a name.
    """
    personas: dict[str, Persona] = {}
    for path in sorted(prompts_dir.glob("*.md")):
        persona = load_persona(path)
        if persona.name in ROLE_PROMPTS:
            continue
        if persona.name in personas:
            raise PersonaError(f"{path}: persona name {persona.name!r} is used twice")
        personas[persona.name] = persona
    if not personas:
        raise PersonaError(f"{prompts_dir}: no persona files (*.md); run from the project root")
    return personas


def load_role_prompt(prompts_dir: Path, role: str) -> Persona:
    """The orchestrator's or synthesizer's prompt file (``prompts/<role>.md``).

    Raises:
        PersonaError: the file is missing or invalid.
    """
    return load_persona(prompts_dir / f"{role}.md")
