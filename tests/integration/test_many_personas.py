"""Embedded mode with 200 personas present (tests/personas_fixture.py) and a plan naming
10, made by the (scripted) planner: worker processes start for those 10 only, at most
CREWBOX_MAX_WORKERS at once (the CLI as a user runs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, run_crewbox, scripted_env, spec
from tests.personas_fixture import write_personas

PRESENT = 200
PLANNED = 10
MAX_WORKERS = 4


def many_personas(tmp_path: Path) -> list[str]:
    """PRESENT generated personas plus the role prompts in ``tmp_path/prompts``."""
    prompts = tmp_path / "prompts"
    names = write_personas(prompts, PRESENT)
    for role in ("orchestrator.md", "synthesizer.md"):
        shutil.copy(ROOT / "prompts" / role, prompts / role)
    return names


def test_workers_start_only_for_the_planned_personas_within_the_cap(tmp_path: Path) -> None:
    names = many_personas(tmp_path)
    planned = names[:: PRESENT // PLANNED][:PLANNED]
    tasks = [spec(f"t{i}", name) for i, name in enumerate(planned)]
    plan = {"name": "submit_plan", "input": {"tasks": tasks}}
    steps: list[dict[str, Any]] = [{"match": "Call submit_plan", "tool_uses": [plan]}]
    steps += [{"match": f"Task id: t{i}", "text": f"done t{i}"} for i in range(PLANNED)]
    steps.append({"match": "## Results", "text": "all ten"})
    env = scripted_env(
        tmp_path,
        steps,
        CREWBOX_PROMPTS_DIR=str(tmp_path / "prompts"),
        CREWBOX_MAX_WORKERS=str(MAX_WORKERS),
    )
    request = "Work for " + ", ".join(planned)  # names the planned personas
    done = run_crewbox(["run", request], env, tmp_path, 180)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "results").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert sorted(p.stem for p in (run_dir / "logs").glob("*.log")) == sorted(planned)
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("*.log"))
    assert logs.count("stopped (idle) to make room") >= PLANNED - MAX_WORKERS
    assert not [a for tries in summary["attempts"].values() for a in tries if a["attempt"] > 1]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (offered,) = [e for e in events if e["kind"] == "personas_offered"]
    assert set(planned) <= set(offered["data"]["offered"]) and offered["data"]["of"] == PRESENT
    assert offered["message"] == f"24 of {PRESENT}; plan at most 20 tasks"
    assert f"planner offered 24 of {PRESENT}; plan at most 20 tasks: " in done.stderr
