"""A generated collection of persona files shaped like the public Claude Code subagent
collections (written here, not copied from them), for `crewbox personas` and the cluster at
scale.

Each file has front matter with ``name``, ``description`` (plain, folded, or unquoted with
``: `` and ``<example>`` blocks, so not strict YAML), ``tools`` as a comma list, a YAML list,
an empty value or no key at all, ``model``, ``color``, keys crewbox does not know
(``category``, ``version``) and some ``x-`` keys; a few files cannot be used: the front
matter is not closed, it has no description, its name is taken twice or is 64 characters
long. :func:`write_collection` writes them and returns what loading must find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

AREAS = ("backend", "frontend", "data", "security", "devops", "docs", "mobile", "ml", "qa")
ROLES = ("architect", "reviewer", "engineer", "specialist", "auditor", "writer", "tuner")
MODELS = ("sonnet", "opus", "haiku", "inherit", None)
COLORS = ("red", "blue", "green", "purple", "orange", "cyan")


@dataclass
class Collection:
    """What loading the collection must give: ``valid`` persona names (file order), and
    ``refused``: file name -> a text its one reason contains; ``no_tools``: personas whose
    ``tools`` is empty (shown as "none"); ``duplicates``: file name -> the earlier file with
    its name."""

    valid: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    no_tools: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)


def persona_name(index: int) -> str:
    """A realistic name, some long (up to 40 characters), some starting with ``x-``."""
    area, role = AREAS[index % len(AREAS)], ROLES[index // len(AREAS) % len(ROLES)]
    name = f"{area}-{role}-{index:03d}"
    if index % 23 == 0:
        name = f"x-{name}"
    if index % 17 == 0:
        name = f"{name}-for-large-distributed-systems"[:40].rstrip("-")
    return name


def tools_lines(index: int) -> list[str]:
    """``tools`` as Claude Code files write it: comma list, YAML list, ``[]``, or absent."""
    shape = index % 4
    if shape == 0:
        return ["tools: Read, Grep, Glob, Bash"]
    if shape == 1:
        return ["tools:", "  - Read", "  - Write", "  - Edit"]
    if shape == 2 and index % 8 == 2 and index % 5:
        return ["tools: []"]  # no tool at all (strict YAML only: the line reader reads text)
    return []


def description_lines(index: int, name: str) -> list[str]:
    """A description: plain, folded (``>``), or unquoted with ``: `` and examples (not YAML)."""
    text = f"Expert {name.replace('-', ' ')}. Use PROACTIVELY for reviews and design."
    if index % 5 == 0:
        example = "<example>Context: the user asks for a review. user: 'Review this'</example>"
        return [f"description: {text} Examples: {example}"]
    if index % 5 == 1:
        return ["description: >", f"  {text}", "  It also writes short reports."]
    return [f"description: {text}"]


def front_matter(index: int, name: str) -> list[str]:
    """The front matter lines of a usable file ``index``."""
    lines = [f"name: {name}", *description_lines(index, name), *tools_lines(index)]
    model = MODELS[index % len(MODELS)]
    if model:
        lines.append(f"model: {model}")
    lines.append(f"color: {COLORS[index % len(COLORS)]}")
    if index % 3 == 0:
        lines += [f"category: {AREAS[index % len(AREAS)]}", "version: 1.2"]
    if index % 7 == 0:
        lines += ["x-api-integration: true", "x-team: platform"]
    return lines


def file_text(lines: list[str], closed: bool = True) -> str:
    """A persona file: ``---``, the lines, ``---`` (unless not ``closed``), a body."""
    end = ["---"] if closed else []
    return "\n".join(["---", *lines, *end, "", "You are a careful specialist.", ""])


BROKEN = {
    5: "unclosed",
    41: "no-description",
    77: "duplicate",
    113: "too-long",
    149: "unclosed",
    185: "duplicate",
    190: "no-description",
    197: "too-long",
}
"""File index -> how it is broken (8 of 200 files)."""


def write_collection(folder: Path, count: int = 200) -> Collection:
    """Write ``count`` persona files ``NNN-<name>.md`` into ``folder`` (created) and return
    what loading them must give."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = Collection()
    for index in range(count):
        name = persona_name(index)
        lines = front_matter(index, name)
        broken = BROKEN.get(index)
        if broken == "duplicate":
            name = persona_name(index - 1)
            lines = front_matter(index, name)
        elif broken == "too-long":
            name = ("a" + "-very-long-name" * 5)[:64]
            lines = front_matter(index, name)
        elif broken == "no-description":
            lines = [line for line in lines if not line.startswith(("description", "  "))]
        filename = f"{index:03d}-{name}.md"
        (folder / filename).write_text(file_text(lines, closed=broken != "unclosed"))
        if broken is None:
            expected.valid.append(name)
            if tools_lines(index) == ["tools: []"]:
                expected.no_tools.append(name)
        else:
            expected.refused[filename] = REASONS[broken]
        if broken == "duplicate":
            expected.duplicates[filename] = f"{index - 1:03d}-{name}.md"
    return expected


REASONS = {
    "unclosed": "the front matter is not closed",
    "no-description": "no 'description'",
    "duplicate": "is used twice (also in /",
    "too-long": "is 64 characters long",
}
"""How each kind of broken file's reason reads (a part of it)."""
