"""Personas load from Claude Code subagent files, unknown keys and all."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewbox.errors import PersonaError
from crewbox.personas import load_personas, parse_persona
from tests.conftest import ROOT

CLAUDE_CODE_SUBAGENT = """---
name: code-reviewer
description: Expert code review specialist. Use immediately after writing code.
tools: Read, Grep, Glob, Bash
model: sonnet
color: purple
---
You are a senior code reviewer.
"""


def test_real_claude_code_subagent_loads_unmodified() -> None:
    p = parse_persona(CLAUDE_CODE_SUBAGENT, "code-reviewer.md")
    assert (p.name, p.tools, p.model, p.workspace) == (
        "code-reviewer",
        ["Read", "Grep", "Glob", "Bash"],
        "sonnet",
        None,
    )
    assert p.extra == {"color": "purple"}
    assert p.prompt == "You are a senior code reviewer."
    assert p.model_or("claude-sonnet-4-5") == "sonnet"


def test_tools_as_yaml_list_and_absent() -> None:
    listed = parse_persona(
        "---\nname: a\ndescription: d\ntools:\n  - Read\n  - Write\n---\nx", "a.md"
    )
    assert listed.tools == ["Read", "Write"]
    assert parse_persona("---\nname: a\ndescription: d\n---\nx", "a.md").tools is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\ndescription: d\n---\nx", "front matter has no 'name'"),
        ("---\nname: a\n---\nx", "front matter has no 'description'"),
        ("---\nname: Bad Name\ndescription: d\n---\nx", "must be lowercase"),
        ("---\nname: [a\n---\nx", "not valid YAML"),
        ("---\nname: a\ndescription: d\ntools: 3\n---\nx", "'tools' must be"),
    ],
)
def test_invalid_persona_files(text: str, message: str) -> None:
    with pytest.raises(PersonaError, match=message):
        parse_persona(text, "x.md")


def test_project_personas_and_role_prompts() -> None:
    personas = load_personas(ROOT / "prompts")
    assert sorted(personas) == ["anga", "fabien", "marie"]
    assert {p.workspace for p in personas.values()} == {"dance", "code", "marketing"}
    for p in personas.values():
        assert (ROOT / "workspaces" / str(p.workspace)).is_dir()


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    for f in ("one.md", "two.md"):
        (tmp_path / f).write_text("---\nname: same\ndescription: d\n---\nx")
    with pytest.raises(PersonaError, match="'same' is used twice"):
        load_personas(tmp_path)
