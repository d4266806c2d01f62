"""Generated persona files shaped like public Claude Code subagent collections (front matter
with ``name``, ``description``, ``tools``, ``model``, sometimes ``color`` or an ``x-`` key;
a role prompt below), written from word lists here, not copied from any collection.

``write_personas(folder, 200)`` writes 200 valid files, ``invalid=k`` adds k files that
must be refused, one reason each (a name too long, no description, a name taken twice).
Shared by the embedded (bench/many_personas.py, tests/integration/test_many_personas.py)
and cluster tests of issue 18.
"""

from __future__ import annotations

import random
from pathlib import Path

FIELDS = [
    "python", "rust", "golang", "typescript", "react", "django", "kubernetes", "terraform",
    "postgres", "redis", "graphql", "security", "accessibility", "performance", "docs",
    "testing", "devops", "data", "ml", "mobile", "ios", "android", "payments", "search",
]  # fmt: skip
ROLES = [
    "expert", "reviewer", "architect", "debugger", "optimizer", "auditor", "writer",
    "engineer", "specialist", "migrator",
]  # fmt: skip
VERBS = ["Reviews", "Designs", "Debugs", "Tunes", "Audits", "Writes", "Builds", "Migrates"]
MODELS = ["sonnet", "opus", "haiku", "inherit"]
TOOLS = ["Read", "Write", "Edit", "Bash", "Grep", "Glob", "WebFetch", "WebSearch"]
COLORS = ["blue", "green", "red", "purple", "orange"]


def persona_names(count: int) -> list[str]:
    """``count`` distinct kebab-case names, ``<field>-<role>[-<n>]``, in a fixed order."""
    names = [f"{f}-{r}" for r in ROLES for f in FIELDS]
    extra = [f"{n}-{i}" for i in range(2, 100) for n in names]
    return (names + extra)[:count]


def persona_text(name: str, rng: random.Random) -> str:
    """One subagent file: front matter, then a role prompt of a few lines."""
    field, role = name.split("-")[:2]
    verb = rng.choice(VERBS)
    description = (
        f"{verb} {field} work as a {role}. Use PROACTIVELY for {field} questions, "
        f"{rng.choice(FIELDS)} integration and code review."
    )
    lines = ["---", f"name: {name}", f"description: {description}"]
    if rng.random() < 0.8:
        lines.append(f"tools: {', '.join(rng.sample(TOOLS, rng.randint(2, 6)))}")
    lines.append(f"model: {rng.choice(MODELS)}")
    if rng.random() < 0.3:
        lines.append(f"color: {rng.choice(COLORS)}")
    lines += [
        "---",
        "",
        f"You are a senior {field} {role}.",
        "",
        "## Focus areas",
        f"- {field} best practices and idioms",
        f"- {rng.choice(FIELDS)} and {rng.choice(FIELDS)} interplay",
        "",
        "## Approach",
        "1. Read the code first. 2. Say what is wrong. 3. Propose the smallest fix.",
    ]
    return "\n".join(lines) + "\n"


def write_personas(folder: Path, count: int, invalid: int = 0, seed: int = 18) -> list[str]:
    """Write ``count`` valid persona files and ``invalid`` refused ones into ``folder``.

    Returns the valid personas' names (file ``<name>.md`` each). The refused ones cycle
    through: a name over 63 characters, no description, a name taken twice (``zz-dup-*.md``
    repeating the first valid name).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = persona_names(count)
    for name in names:
        (folder / f"{name}.md").write_text(persona_text(name, rng), encoding="utf-8")
    for i in range(invalid):
        kind = i % 3
        if kind == 0:
            long_name = "a" + "-long" * 13 + f"-{i}"
            text = f"---\nname: {long_name}\ndescription: too long a name\n---\nBody.\n"
        elif kind == 1:
            text = f"---\nname: no-description-{i}\nmodel: sonnet\n---\nBody.\n"
        else:
            text = persona_text(names[0], rng)
        (folder / f"zz-bad-{i}.md").write_text(text, encoding="utf-8")
    return names
