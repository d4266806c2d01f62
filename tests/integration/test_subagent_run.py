"""Sub-agents end to end: `crewbox run --plan` (a subprocess, a worker process per persona,
ScriptedLLM behind CREWBOX_PROVIDER=scripted) with marie's shipped choreography-analyzer.

Marie's model writes a draft and asks for two checks in one turn; both analyzer runs'
first calls meet at a barrier (they must be in flight at the same time), use only their
tools on haiku, and summary.json counts their usage under the task, per sub-agent, with
the totals equal to what the scripted provider answered.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.models import Event, LLMCall, RunSummary, Usage
from crewbox.testing import recorded_calls
from tests.conftest import ROOT, run_crewbox, scripted_env, spec

pytestmark = pytest.mark.integration

ANALYZER = "choreography-analyzer"
STUDENTS = str(ROOT / "workspaces" / "dance" / "students.csv")


def check(piece: str) -> dict[str, Any]:
    prompt = f"Check {piece} in choreography.md"
    return {
        "name": "Task",
        "input": {"description": f"check {piece}", "prompt": prompt, "subagent_type": ANALYZER},
    }


def analyzer_steps(piece: str, report: str) -> list[dict[str, Any]]:
    grep = {"pattern": piece.split("-")[0].title(), "path": STUDENTS, "output_mode": "content"}
    return [
        {
            "match": f"Check {piece}",
            "barrier": "analyzers",
            "parties": 2,
            "usage": {"input_tokens": 800, "output_tokens": 30, "cache_write_tokens": 900},
            "tool_uses": [{"name": "Grep", "input": grep}],
        },
        {
            "match": f"Check {piece}",
            "usage": {"input_tokens": 950, "output_tokens": 120, "cache_read_tokens": 900},
            "text": report,
        },
    ]


def script() -> list[dict[str, Any]]:
    draft = {"file_path": "choreography.md", "content": "# Pieces\n\nkids-piece, teens-piece\n"}
    return [
        {
            "match": "Task id: choreo",
            "usage": {"input_tokens": 1200, "output_tokens": 200},
            "tool_uses": [
                {"name": "Write", "input": draft},
                check("kids-piece"),
                check("teens-piece"),
            ],
        },
        {"match": "Task id: choreo", "usage": {"input_tokens": 1500}, "text": "Two pieces."},
        *analyzer_steps("kids-piece", "Kids: Sami is missing from section 2."),
        *analyzer_steps("teens-piece", "Teens: Yanis jumps before April 20."),
        {"match": "## Results", "text": "answer"},
    ]


def test_marie_runs_two_analyzer_checks_at_once_and_summary_counts_them(tmp_path: Path) -> None:
    plan = {"request": "Two recital pieces", "tasks": [spec("choreo", "marie")]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    env = scripted_env(tmp_path, script())

    proc = run_crewbox(["run", "--plan", str(tmp_path / "plan.yaml")], env, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    summary = RunSummary.model_validate_json((run_dir / "summary.json").read_text())
    calls = recorded_calls(tmp_path / "record")
    assert len(calls) == len(script())
    analyzer = [c for c in calls if "review choreography" in c.system[0]]
    assert len(analyzer) == 4
    firsts = [c for c in analyzer if c.step in (2, 4)]  # each check's first call
    assert max(c.started_at_s for c in firsts) < min(c.ended_at_s for c in firsts)
    assert {c.model for c in analyzer} == {"claude-haiku-5-5"}
    assert all(c.tools == ["Read", "Grep"] for c in analyzer)
    assert all("Yanis Fournier" in c.text for c in analyzer if c.step == 5)  # its Grep ran
    marie_last = next(c for c in calls if c.step == 1)
    assert "Sami is missing" in marie_last.text and "Yanis jumps" in marie_last.text

    (result,) = summary.tasks
    assert result.status == "succeeded" and [a.path for a in result.artifacts] == [
        "choreography.md"
    ]
    spent = Usage.total(c.usage for c in analyzer)
    assert result.usage_by_subagent == {ANALYZER: spent}
    (attempt,) = summary.attempts["choreo"]
    assert attempt.usage_by_subagent == {ANALYZER: spent}
    assert attempt.usage == result.usage == summary.usage_by_stage["tasks"]
    assert summary.usage_total == Usage.total(c.usage for c in calls)
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    events = [Event.model_validate_json(x) for x in lines]
    tagged = [e.payload(LLMCall) for e in events if e.kind == "llm_call"]
    assert sum(c.subagent == ANALYZER for c in tagged) == 4


def test_a_budget_refuses_to_start_when_a_sub_agent_model_has_no_price(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    analyzer = prompts / "marie" / "agents" / f"{ANALYZER}.md"
    analyzer.write_text(analyzer.read_text().replace("model: haiku", "model: claude-unknown-9"))
    (tmp_path / "plan.yaml").write_text(
        yaml.safe_dump({"request": "req", "tasks": [spec("choreo", "marie")]})
    )
    env = scripted_env(tmp_path, [{"text": "never"}], CREWBOX_PROMPTS_DIR=str(prompts))

    args = ["run", "--plan", str(tmp_path / "plan.yaml"), "--budget-usd", "1"]
    proc = run_crewbox(args, env, cwd=tmp_path)

    lines = [x for x in proc.stderr.splitlines() if "error" in x]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "claude-unknown-9" in lines[0] and "pricing.json" in lines[0]
