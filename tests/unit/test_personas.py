"""Personas load from Claude Code subagent files, unknown keys and all."""

from __future__ import annotations

from pathlib import Path

import pytest

from crewbox.errors import PersonaError
from crewbox.personas import (
    TOOL_NAMES,
    load_persona,
    load_personas,
    parse_persona,
    unknown_persona,
)
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
        "claude-sonnet-5-5",
        None,
    )
    assert p.extra == {"color": "purple"}
    assert p.prompt == "You are a senior code reviewer."
    assert p.model_or("claude-sonnet-4-5") == "claude-sonnet-5-5"


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
        ("---\nname: Bad Name\ndescription: d\n---\nx", "lowercase letters"),
        ("---\nname: [a\n---\nx", "lowercase letters"),
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


def test_a_second_file_with_a_taken_name_is_invalid_and_the_first_loads(tmp_path: Path) -> None:
    for f in ("one.md", "two.md"):
        (tmp_path / f).write_text("---\nname: same\ndescription: d\n---\nx")
    personas = load_personas(tmp_path)
    assert list(personas) == ["same"] and personas["same"].path == tmp_path / "one.md"
    assert [(bad.name, bad.path.name) for bad in personas.invalid] == [("same", "two.md")]
    assert "'same' is used twice" in personas.invalid[0].reason


# Shapes of subagent files from public collections: Claude Code loads them all.
ONE_LINE_EXAMPLES = (
    "Use this agent when designing APIs. Examples: <example>Context: The user is building a "
    "service. user: 'Design the API' assistant: 'I will use the backend-architect agent.' "
    "<commentary>APIs are its job.</commentary></example>"
)
UNQUOTED_WITH_EXAMPLES = f"""---
name: backend-architect
description: {ONE_LINE_EXAMPLES}
tools: Read, Write, mcp__context7__resolve-library-id, WebFetch, LS
model: sonnet
color: blue
---
You design backends.
"""

LITERAL_NEWLINES = r"""---
name: doc-writer
description: Writes docs.\n\n<example>\nuser: "Document it"\nassistant: "On it"\n</example>
tools: Read, Grep
model: haiku
---
Écris la doc — en français, s'il le faut. 日本語も。
"""

YAML_LIST_AND_HOOKS = """---
name: tester
description: "Runs the tests: all of them."
tools:
  - Read
  - Bash
  - Glob
disallowedTools: Bash
maxTurns: 7
model: opus
hooks:
  PreToolUse:
    - matcher: Bash
      hooks: [{type: command, command: echo hi}]
---
You test.
"""


def test_unquoted_description_with_colons_and_examples_loads_with_a_warning() -> None:
    p = parse_persona(UNQUOTED_WITH_EXAMPLES, "backend-architect.md")
    assert p.name == "backend-architect"
    assert p.description.startswith("Use this agent when designing APIs. Examples: <example>")
    assert "<commentary>APIs are its job.</commentary></example>" in p.description
    assert p.tools == ["Read", "Write"]
    assert p.model == "claude-sonnet-5-5"
    assert p.extra == {"color": "blue"}
    assert any("not strict YAML" in w for w in p.warnings)
    dropped = [w for w in p.warnings if "dropped" in w]
    assert dropped == [
        "tools crewbox does not have, dropped: mcp__context7__resolve-library-id, WebFetch, LS"
    ]


def test_literal_newline_escapes_stay_text_and_non_ascii_prompts_load(tmp_path: Path) -> None:
    path = tmp_path / "doc-writer.md"
    path.write_text(LITERAL_NEWLINES, encoding="utf-8")
    p = load_persona(path)
    assert p.description.startswith("Writes docs.\\n\\n<example>")
    assert (p.tools, p.model) == (["Read", "Grep"], "claude-haiku-5-5")
    assert p.prompt == "Écris la doc — en français, s'il le faut. 日本語も。"


def test_yaml_list_tools_disallowed_tools_max_turns_and_extra_keys() -> None:
    p = parse_persona(YAML_LIST_AND_HOOKS, "tester.md")
    assert p.description == "Runs the tests: all of them."
    assert p.tools == ["Read", "Glob"]
    assert (p.max_turns, p.turns_or(20), p.model) == (7, 7, "claude-opus-5-5")
    assert set(p.extra) == {"hooks"} and p.warnings == []


def test_disallowed_tools_without_tools_take_from_every_tool() -> None:
    p = parse_persona("---\nname: a\ndescription: d\ndisallowedTools: Bash, Write\n---\nx", "a")
    assert p.tools == [t for t in TOOL_NAMES if t not in ("Bash", "Write")]


@pytest.mark.parametrize("value", ["0", "many", "500", "true"])
def test_a_bad_max_turns_is_ignored_with_a_warning(value: str) -> None:
    p = parse_persona(f"---\nname: a\ndescription: d\nmaxTurns: {value}\n---\nx", "a.md")
    assert p.max_turns is None and p.turns_or(20) == 20
    assert len(p.warnings) == 1 and "maxTurns" in p.warnings[0]


def test_inherit_and_model_ids_are_kept() -> None:
    inherit = parse_persona("---\nname: a\ndescription: d\nmodel: inherit\n---\nx", "a.md")
    assert inherit.model is None and inherit.model_or("claude-x") == "claude-x"
    own = parse_persona("---\nname: a\ndescription: d\nmodel: claude-3-haiku\n---\nx", "a.md")
    assert own.model_or("claude-x") == "claude-3-haiku"


def test_one_broken_file_is_invalid_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text(UNQUOTED_WITH_EXAMPLES)
    (tmp_path / "nofront.md").write_text("Just a prompt, no front matter.\n")
    (tmp_path / "unclosed.md").write_text("---\nname: open\ndescription: d\n")
    (tmp_path / "nodesc.md").write_text("---\nname: quiet\n---\nx")
    (tmp_path / "latin1.md").write_bytes(
        "---\nname: l\ndescription: caf\xe9\n---\n".encode("latin-1")
    )
    (tmp_path / "budget.md").write_text(
        "---\nname: spender\ndescription: d\nbudget_usd: lots\n---\n"
    )
    personas = load_personas(tmp_path)
    assert list(personas) == ["backend-architect"]
    reasons = {bad.name: bad.reason for bad in personas.invalid}
    assert set(reasons) == {"nofront", "unclosed", "quiet", "latin1", "spender"}
    assert "must start with a '---' line" in reasons["nofront"]
    assert "not closed" in reasons["unclosed"]
    assert "no 'description'" in reasons["quiet"]
    assert "not UTF-8" in reasons["latin1"]
    assert "budget_usd must be a positive number" in reasons["spender"]
    assert "cannot be used" in unknown_persona("quiet", personas)
    assert (
        unknown_persona("nobody", personas) == "unknown persona 'nobody' (known: backend-architect)"
    )


def test_the_persona_tool_names_are_the_workers_tools() -> None:
    from worker.tools import ALL_TOOLS

    assert set(TOOL_NAMES) - {"Agent"} == set(ALL_TOOLS)


def test_claude_ids_mean_the_local_model_on_an_openai_compatible_server() -> None:
    from crewbox.config import Settings

    claude = Settings(provider="anthropic", anthropic_api_key="k", model="claude-sonnet-4-6")
    local = Settings(provider="openai", llm_model="smollm2")
    haiku = parse_persona("---\nname: a\ndescription: d\nmodel: haiku\n---\nx", "a.md")
    assert claude.model_of(haiku.model) == "claude-haiku-5-5"
    assert local.model_of(haiku.model) == "smollm2"  # never priced as Haiku
    assert (claude.model_of(None), local.model_of("inherit")) == ("claude-sonnet-4-6", "smollm2")
    assert local.model_of("qwen2.5-7b") == "qwen2.5-7b"


def test_names_up_to_63_characters_load_and_a_bad_name_says_what_is_wrong() -> None:
    from crewbox.persona_file import MAX_NAME_CHARS, name_problem

    long = "distributed-systems-observability-engineer-agent"  # 48 characters
    assert parse_persona(f"---\nname: {long}\ndescription: d\n---\nx", "x.md").name == long
    assert name_problem("a" * MAX_NAME_CHARS) is None
    assert "64 characters long; at most 63" in (name_problem("a" * 64) or "")
    assert "must start with a lowercase letter" in (name_problem("9lives") or "")
    assert "must not end with a hyphen" in (name_problem("tester-") or "")
    assert "'_'" in (name_problem("code_reviewer") or "")


def test_effort_and_ignored_claude_code_keys() -> None:
    text = (
        "---\nname: t\ndescription: d\neffort: High\npermissionMode: plan\nskills: [a]\n"
        "memory: project\n---\nx"
    )
    p = parse_persona(text, "x.md")
    assert p.effort == "high"
    assert p.warnings == ["Claude Code keys crewbox ignores: permissionMode, skills, memory"]
    bad = parse_persona("---\nname: t\ndescription: d\neffort: extreme\n---\nx", "x.md")
    assert bad.effort is None and "effort 'extreme' ignored" in bad.warnings[0]


def test_agent_is_the_sub_agent_tool_task_its_legacy_name_and_rules_keep_the_tool() -> None:
    from crewbox.personas import tool_rules

    p = parse_persona(
        "---\nname: t\ndescription: d\ntools: Read, Task, Bash(npm test:*), Bash(ls)\n---\nx",
        "x.md",
    )
    assert p.tools == ["Read", "Agent", "Bash(npm test:*)", "Bash(ls)"] and p.warnings == []
    assert tool_rules(p.tools, "Bash") == ["npm test:*", "ls"]
    assert tool_rules(p.tools, "Read") is None
    q = parse_persona(
        "---\nname: t\ndescription: d\ntools: Agent(a, b), Read(./docs/**)\n---\nx", "x"
    )
    assert q.tools == ["Agent(a, b)", "Read(./docs/**)"]
    assert q.warnings == ["tool rules crewbox does not enforce, tool kept: Read(./docs/**)"]
    r = parse_persona("---\nname: t\ndescription: d\ndisallowedTools: Task\n---\nx", "x")
    assert r.tools is not None and "Agent" not in r.tools


def test_crewbox_personas_shows_the_aliases_resolved_to_priced_ids_and_keeps_agent(
    tmp_path: Path,
) -> None:
    import shutil

    from tests.conftest import crewbox_env, run_crewbox

    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    for name, alias in (("marie", "sonnet"), ("anga", "opus"), ("fabien", "haiku")):
        path = prompts / f"{name}.md"
        path.write_text(path.read_text().replace("model: inherit", f"model: {alias}"))
    (prompts / "storyteller.md").write_text(
        "---\nname: storyteller\ndescription: Tells.\ntools: Read, Agent\nmodel: fable\n"
        "effort: high\nmcpServers: [x]\n---\nTell."
    )
    env = crewbox_env(
        tmp_path,
        CREWBOX_PROMPTS_DIR=str(prompts),
        CREWBOX_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="k",
    )
    proc = run_crewbox(["personas", "--long"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {
        line.split("│")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("│ ") and line.split("│")[1].strip()
    }
    for name, model in (
        ("marie", "claude-sonnet-5-5"),
        ("anga", "claude-opus-5-5"),
        ("fabien", "claude-haiku-5-5"),
        ("storyteller", "claude-fable-5-2"),
    ):
        assert model in rows[name] and " yes " in rows[name], rows[name]
    assert "Read, Agent" in rows["storyteller"]
    assert "warning storyteller: Claude Code keys crewbox ignores: mcpServers" in proc.stdout
    assert "no price" not in proc.stderr
