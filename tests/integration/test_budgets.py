"""Budgets that hold (crewbox.budget), embedded: run and persona budgets at several sizes,
many tasks at once; spend stays within the budget, ``budget_exceeded`` says so whenever
something was stopped or skipped, and summary.json still equals the ledger."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from crewbox.models import RunSummary
from tests.conftest import ROOT, spec
from tests.integration.test_durability import EmbeddedRun, assert_accounted

pytestmark = pytest.mark.integration

PERSONAS = ["marie", "anga", "fabien"]
CALL = {"input_tokens": 1000, "output_tokens": 100}
"""Each scripted call: $0.0045 on claude-sonnet-4-6 ($3 in, $15 out per MTok)."""
CALL_USD = Decimal("0.0045")


def budget_run(tmp_path: Path, tasks: int, *args: str) -> tuple[EmbeddedRun, RunSummary]:
    ids = [f"b{i}" for i in range(tasks)]
    steps = [{"match": f"Task id: {t}\\n", "text": f"{t} done", "usage": CALL} for t in ids]
    steps.append({"match": "## Results", "text": "answer", "usage": CALL})
    plan = [spec(t, PERSONAS[i % 3]) for i, t in enumerate(ids)]
    run = EmbeddedRun(tmp_path, plan, steps)
    run.env["CREWBOX_MAX_TOKENS"] = "200"  # the estimate's output part: 200 x $15/MTok
    run.env["CREWBOX_MODEL"] = "claude-sonnet-4-6"  # the prices CALL_USD is figured at
    run.start("run", "--plan", str(tmp_path / "plan.yaml"), "--workers", "2", *args)
    run.finish()
    return run, run.summary()


@pytest.mark.parametrize("budget", ["0.02", "0.03", "0.05"])
def test_a_run_budget_holds_across_parallel_workers(tmp_path: Path, budget: str) -> None:
    run, summary = budget_run(tmp_path, 24, "--budget-usd", budget)
    assert summary.usage_total.cost_usd <= Decimal(budget)
    assert summary.budget_exceeded
    statuses = {r.status for r in summary.tasks}
    assert "succeeded" in statuses and statuses & {"budget_exceeded", "skipped"}
    assert_accounted(run)


def test_a_persona_budget_stops_that_persona_only(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    marie = prompts / "marie.md"
    marie.write_text(
        marie.read_text().replace("\nname: marie\n", "\nname: marie\nbudget_usd: 0.02\n")
    )
    run = EmbeddedRun(tmp_path, [], [])
    run.env["CREWBOX_PROMPTS_DIR"] = str(prompts)
    ids = [f"p{i}" for i in range(9)]
    steps = [{"match": f"Task id: {t}\\n", "text": f"{t} done", "usage": CALL} for t in ids]
    steps.append({"match": "## Results", "text": "answer", "usage": CALL})
    plan = [spec(t, PERSONAS[i % 3]) for i, t in enumerate(ids)]
    plan.append(spec("late", "anga", ["p1"]))  # dispatched after marie's budget is reached
    steps.insert(0, {"match": "Task id: late\\n", "text": "late done", "usage": CALL})
    run = EmbeddedRun(tmp_path, plan, steps)
    run.env.update(
        CREWBOX_PROMPTS_DIR=str(prompts),
        CREWBOX_MAX_TOKENS="200",
        CREWBOX_MODEL="claude-sonnet-4-6",
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    run.finish()
    summary = run.summary()
    by_persona = summary.usage_by_persona
    assert by_persona["marie"].cost_usd <= Decimal("0.02")
    mine = [r for r in summary.tasks if r.persona == "marie"]
    others = [r for r in summary.tasks if r.persona != "marie"]
    assert any(r.status == "budget_exceeded" for r in mine)
    assert all(r.status == "succeeded" for r in others)
    assert not summary.budget_exceeded  # the run's own budget was never the limit
    assert_accounted(run)


def test_a_budget_on_a_model_without_a_price_refuses_to_start(tmp_path: Path) -> None:
    run = EmbeddedRun(tmp_path, [spec("u1", "marie")], [{"text": "never"}])
    run.env["CREWBOX_MODEL"] = "claude-unknown-9"
    run.start("run", "--plan", str(tmp_path / "plan.yaml"), "--budget-usd", "1")
    code, _, err = run.finish()
    lines = [x for x in err.splitlines() if "error" in x]
    assert code == 2 and len(lines) == 1, err
    assert "claude-unknown-9" in lines[0] and "pricing.json" in lines[0] and "budget" in lines[0]
    assert not (tmp_path / "record" / "calls").exists() or not any(
        (tmp_path / "record" / "calls").iterdir()
    )
