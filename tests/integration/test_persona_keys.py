"""Claude Code's persona keys take effect on a run: ``maxTurns``, ``disallowedTools`` and the
model aliases, through an embedded ``crewbox run --plan`` with the scripted model."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from crewbox.models import RunSummary
from crewbox.testing import recorded_calls
from tests.conftest import ROOT, crewbox_env, run_crewbox, spec

TESTER = """---
name: tester
description: Tries things: a persona with Claude Code's own keys.
tools: Read, Write, Glob, mcp__github__create_issue
disallowedTools: Write
maxTurns: 2
model: haiku
color: green
---
You test.
"""


def test_max_turns_disallowed_tools_and_model_alias_take_effect(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    (prompts / "tester.md").write_text(TESTER)
    write = {"name": "Write", "input": {"file_path": "out.md", "content": "x"}}
    glob = {"name": "Glob", "input": {"pattern": "*"}}
    steps = [
        {"match": "Task id: t1", "tool_uses": [write]},
        {"match": "Task id: t1", "tool_uses": [glob]},
        {"match": "Task id: t1", "tool_uses": [glob]},  # a third turn: never reached
        {"match": "## Results", "text": "answer"},
    ]
    (tmp_path / "script.yaml").write_text(yaml.safe_dump({"steps": steps}))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"request": "Test it", "tasks": [spec("t1", "tester")]}))
    env = crewbox_env(
        tmp_path,
        CREWBOX_PROMPTS_DIR=str(prompts),
        CREWBOX_PROVIDER="scripted",
        CREWBOX_SCRIPT_PATH=str(tmp_path / "script.yaml"),
        CREWBOX_SCRIPT_RECORD_DIR=str(tmp_path / "record"),
        CREWBOX_TASK_RETRIES="0",
    )
    proc = run_crewbox(["run", "--plan", str(plan), "--workers", "1"], env, cwd=tmp_path)
    calls = [c for c in recorded_calls(tmp_path / "record") if "Task id: t1" in str(c.messages)]
    assert len(calls) == 2, proc.stderr  # maxTurns: 2 (CREWBOX_MAX_TURNS is 20)
    assert {c.model for c in calls} == {"claude-haiku-5-5"}  # model: haiku
    assert calls[0].tools == ["Read", "Glob"]  # Write disallowed, the MCP tool dropped
    refused = str(calls[1].messages[-1])
    assert "tool 'Write' is not available; available tools: Read, Glob" in refused
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    summary = RunSummary.model_validate_json((run_dir / "summary.json").read_text())
    (task,) = summary.tasks
    assert task.status == "failed" and "stopped after 2 turns" in (task.error or "")
    assert not (run_dir / "tester" / "t1" / "out.md").exists()
