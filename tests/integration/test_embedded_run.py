"""`crewbox run` end to end in embedded mode, with the scripted LLM behind the real code path.

The CLI runs as a user runs it (a subprocess); it starts one worker process per persona on
the files queue; every LLM call goes to ScriptedLLM (CREWBOX_PROVIDER=scripted), which
records each call to disk and makes the first call of three tasks meet at a barrier: the
run can only pass if those tasks really run at the same time in different processes.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewbox.models import Event, Result, RunSummary, Usage
from crewbox.testing import RecordedCall, recorded_calls
from tests.conftest import ROOT, crewbox_env, run_crewbox, scripted_env

REQUEST = (
    "Plan a spring recital: choreography for the kids class, a ticket page, "
    "and an Instagram campaign"
)
CHOREO_SUMMARY = (
    "Choreography 'Spring Awakening' for Kids Ballet: 3 sections, 8 dancers, 4 minutes."
)
FINAL = "# Spring recital\n\nChoreography, ticket page and campaign are ready."

PLAN = {
    "tasks": [
        {
            "id": "choreo",
            "persona": "marie",
            "title": "Kids class choreography",
            "instructions": "Choreograph the kids ballet piece.",
            "depends_on": [],
            "priority": "high",
            "timeout_s": 120,
        },
        {
            "id": "tickets",
            "persona": "anga",
            "title": "Ticket page",
            "instructions": "Build the ticket page.",
            "depends_on": [],
            "priority": "normal",
            "timeout_s": 120,
        },
        {
            "id": "teaser",
            "persona": "fabien",
            "title": "Teaser posts",
            "instructions": "Write two teaser posts.",
            "depends_on": [],
            "priority": "normal",
            "timeout_s": 120,
        },
        {
            "id": "campaign",
            "persona": "fabien",
            "title": "Instagram campaign",
            "instructions": "Plan the Instagram campaign around the choreography.",
            "depends_on": ["choreo"],
            "priority": "normal",
            "timeout_s": 120,
        },
    ]
}


def usage(i: int, o: int, cw: int = 0, cr: int = 0) -> dict[str, int]:
    return {
        "input_tokens": i,
        "output_tokens": o,
        "cache_write_tokens": cw,
        "cache_read_tokens": cr,
    }


def write(path: str, content: str) -> dict[str, Any]:
    return {"name": "Write", "input": {"file_path": path, "content": content}}


def script() -> list[dict[str, Any]]:
    """Planner, four tasks (three meet at a barrier), synthesizer."""
    students = str(ROOT / "workspaces" / "dance" / "students.csv")
    return [
        {
            "match": "Call submit_plan",
            "usage": usage(900, 300, 1200, 0),
            "tool_uses": [{"name": "submit_plan", "input": PLAN}],
        },
        {
            "match": "Task id: choreo",
            "barrier": "start",
            "parties": 3,
            "usage": usage(500, 80, 0, 1200),
            "tool_uses": [
                {"name": "Read", "input": {"file_path": students}},
                write("choreography.md", "# Spring Awakening\n\n1. Bloom\n2. Rain\n3. Sun\n"),
            ],
        },
        {"match": "Task id: choreo", "usage": usage(700, 60), "text": CHOREO_SUMMARY},
        {
            "match": "Task id: tickets",
            "barrier": "start",
            "parties": 3,
            "usage": usage(450, 70),
            "tool_uses": [write("../../marie/choreo/hacked.md", "overwritten by anga")],
        },
        {
            "match": "Task id: tickets",
            "usage": usage(480, 90),
            "tool_uses": [write("site/tickets.html", "<h1>Spring recital tickets</h1>\n")],
        },
        {
            "match": "Task id: tickets",
            "usage": usage(520, 40),
            "text": "Ticket page in site/tickets.html.",
        },
        {
            "match": "Task id: teaser",
            "barrier": "start",
            "parties": 3,
            "usage": usage(400, 50),
            "tool_uses": [
                write("teaser.md", "Something is blooming at Studio Marie... #recital\n")
            ],
        },
        {
            "match": "Task id: teaser",
            "usage": usage(410, 30),
            "text": "Two teaser posts in teaser.md.",
        },
        {
            "match": "Task id: campaign",
            "usage": usage(600, 120),
            "tool_uses": [write("campaign.md", "# Campaign\n\nWeek 1: rehearsal reels.\n")],
        },
        {
            "match": "Task id: campaign",
            "usage": usage(650, 45),
            "text": "Campaign plan in campaign.md.",
        },
        {"match": "## Results", "usage": usage(1500, 200), "text": FINAL},
    ]


@pytest.fixture(scope="module")
def recital(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the recital request once; the tests below read what it left behind."""
    tmp = tmp_path_factory.mktemp("recital")
    env = scripted_env(tmp, script())
    proc = run_crewbox(["run", REQUEST], env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in (tmp / "results").iterdir() if p.is_dir()]
    return {"proc": proc, "run_dir": run_dir, "calls": recorded_calls(tmp / "record")}


def summary_of(recital: dict[str, Any]) -> RunSummary:
    return RunSummary.model_validate_json((recital["run_dir"] / "summary.json").read_text())


def results_by_id(recital: dict[str, Any]) -> dict[str, Result]:
    return {r.task_id: r for r in summary_of(recital).tasks}


def calls_for(recital: dict[str, Any], task_id: str) -> list[RecordedCall]:
    return [c for c in recital["calls"] if f"Task id: {task_id}" in c.text]


def test_plan_covers_all_three_personas_and_every_task_succeeds(recital: dict[str, Any]) -> None:
    summary = summary_of(recital)
    assert summary.status == "succeeded"
    assert {r.persona for r in summary.tasks} == {"marie", "anga", "fabien"}
    assert [r.status for r in summary.tasks] == ["succeeded"] * 4


def test_independent_tasks_overlap_in_time_in_separate_processes(recital: dict[str, Any]) -> None:
    results = results_by_id(recital)
    parallel = [results[t] for t in ("choreo", "tickets", "teaser")]
    assert max(r.started_at_s for r in parallel) < min(r.ended_at_s for r in parallel)
    assert len({r.worker for r in parallel}) == 3
    assert results["campaign"].started_at_s >= results["choreo"].ended_at_s


def test_dependent_task_received_its_dependencys_summary(recital: dict[str, Any]) -> None:
    first_call = calls_for(recital, "campaign")[0]
    assert CHOREO_SUMMARY in first_call.text
    assert "marie/choreo/choreography.md" in first_call.text


def test_artifacts_on_disk_match_their_sha256(recital: dict[str, Any]) -> None:
    run_dir: Path = recital["run_dir"]
    expected = {
        "choreo": ["choreography.md"],
        "tickets": ["site/tickets.html"],
        "teaser": ["teaser.md"],
        "campaign": ["campaign.md"],
    }
    for task_id, result in results_by_id(recital).items():
        assert [a.path for a in result.artifacts] == expected[task_id]
        for artifact in result.artifacts:
            data = (run_dir / result.persona / task_id / artifact.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact.sha256
            assert len(data) == artifact.bytes


def test_escaping_write_is_refused_to_the_model_and_the_task_goes_on(
    recital: dict[str, Any],
) -> None:
    run_dir: Path = recital["run_dir"]
    assert not (run_dir / "marie" / "choreo" / "hacked.md").exists()
    second = calls_for(recital, "tickets")[1]
    tool_results = [
        b
        for m in second.messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert tool_results and tool_results[-1]["is_error"] is True
    assert "outside" in tool_results[-1]["content"]
    assert results_by_id(recital)["tickets"].status == "succeeded"


def test_final_answer_written_and_printed(recital: dict[str, Any]) -> None:
    final = (recital["run_dir"] / "final.md").read_text()
    assert final == FINAL
    assert recital["proc"].stdout.strip() == FINAL.strip()
    synth = next(c for c in recital["calls"] if "## Results" in c.text)
    assert CHOREO_SUMMARY in synth.text and "Spring Awakening" in synth.text


def test_summary_totals_equal_the_sum_of_per_call_usage(recital: dict[str, Any]) -> None:
    summary = summary_of(recital)
    calls = recital["calls"]
    assert len(calls) == len(script())
    recorded = Usage.total(c.usage for c in calls)
    assert summary.usage_total.model_dump(exclude={"calls"}) == recorded.model_dump(
        exclude={"calls"}
    )
    assert summary.usage_total.calls == len(calls)
    assert summary.usage_total.cost_usd > Decimal(0)
    events = [
        Event.model_validate_json(line)
        for line in (recital["run_dir"] / "events.jsonl").read_text().splitlines()
    ]
    from_events = Usage.total(
        Usage.model_validate(e.data["usage"]) for e in events if e.kind == "llm_call"
    )
    assert from_events == summary.usage_total
    per_persona = Usage.total(summary.usage_by_persona.values())
    assert per_persona + summary.usage_by_stage["planner"] + summary.usage_by_stage[
        "synthesizer"
    ] == (summary.usage_total)


def test_progress_on_stderr_names_personas_tasks_and_cost(recital: dict[str, Any]) -> None:
    stderr = recital["proc"].stderr
    for persona, task in (("marie", "choreo"), ("anga", "tickets"), ("fabien", "campaign")):
        assert any(persona in line and task in line and "✓" in line for line in stderr.splitlines())
    assert "$" in stderr and "tok" in stderr


def test_status_and_results_commands_read_the_run(recital: dict[str, Any], tmp_path: Path) -> None:
    run_dir: Path = recital["run_dir"]
    env = crewbox_env(run_dir.parent.parent)
    status = run_crewbox(["status", run_dir.name], env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "campaign" in status.stdout and "succeeded" in status.stdout
    results = run_crewbox(["results", run_dir.name, "--format", "json"], env, cwd=tmp_path)
    assert json.loads(results.stdout)["run_id"] == run_dir.name
