"""Budgets that let work happen: a call's max_tokens is capped to what the budgets can still
pay (crewbox.budget), so small budgets on a 19-task plan each complete some tasks."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest

from crewbox.budget import MIN_OUTPUT_TOKENS, output_ladder
from crewbox.llm.pricing import cost_usd
from crewbox.models import Plan, Request
from crewbox.personas import load_personas
from crewbox.runlog.files import FileRunLog
from crewbox.testing import ScriptedLLM
from tests.conftest import scripted_settings, spec
from tests.unit.test_orchestrator import Cluster
from worker.service import TaskRunner

PERSONAS = ["marie", "anga", "fabien"]
CALL = {"input_tokens": 500, "output_tokens": 60}
CALL_USD = cost_usd("claude-sonnet-5-5", 500, 60)
"""One scripted call on the default model: $0.0016; the 19 tasks and the synthesis $0.032."""


def test_the_output_ladder_steps_down_to_the_floor() -> None:
    assert output_ladder(4096) == [4096, 2867, 2006, 1404, 1024]
    assert output_ladder(768) == [768]  # a cap already below the floor: as it is
    assert output_ladder(4096)[-1] == MIN_OUTPUT_TOKENS


@pytest.mark.parametrize("budget", ["0.02", "0.05", "0.10"])
def test_small_budgets_on_a_19_task_plan_complete_some_tasks_within_budget(
    tmp_path: Path, budget: str
) -> None:
    settings = scripted_settings(
        tmp_path,
        task_retries=0,
        model="claude-sonnet-5-5",
    )
    ids = [f"b{i}" for i in range(19)]
    steps = [{"match": f"Task id: {t}\\n", "text": f"{t} done", "usage": CALL} for t in ids]
    steps.append({"match": "## Results", "text": "answer", "usage": CALL})
    llm = ScriptedLLM(steps, model="claude-sonnet-5-5")
    cluster = Cluster(settings, llm)
    run_log = FileRunLog(settings.results_dir)  # the workers hold spend in the run's ledger
    cluster.threads = [
        threading.Thread(
            target=cluster.queue.serve,
            daemon=True,
            args=(name, TaskRunner(settings, p, llm, f"test:{name}", run_log=run_log)),
            kwargs={"worker_id": f"test-{name}", "stop": cluster.stop},
        )
        for name, p in load_personas(settings.prompts_dir).items()
    ]
    for thread in cluster.threads:
        thread.start()
    try:
        plan = Plan(tasks=[spec(t, PERSONAS[i % 3]) for i, t in enumerate(ids)])
        summary = cluster.orchestrator.run(
            Request(text="req", plan=plan, budget_usd=Decimal(budget))
        )
    finally:
        cluster.stop.set()
    done = [r for r in summary.tasks if r.status == "succeeded"]
    assert done, [(r.status, r.error) for r in summary.tasks][:3]
    assert summary.usage_total.cost_usd <= Decimal(budget) + CALL_USD
    if budget == "0.02":
        assert len(done) < 19 and summary.budget_exceeded
    smallest = min(c.max_tokens or 0 for c in llm.calls)
    assert smallest >= MIN_OUTPUT_TOKENS
    if budget != "0.10":  # a whole 4096-token call ($0.043 estimated) does not fit
        assert smallest < settings.max_tokens
