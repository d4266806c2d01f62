"""The orchestrator over the files queue, with in-process workers and the scripted LLM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import PlanError, QueueError
from crewbox.models import Event, Plan, PlanProblems, Request
from crewbox.personas import load_personas, load_role_prompt
from crewbox.queue.files import FileQueue
from crewbox.runlog.files import FileRunLog
from crewbox.testing import ScriptedLLM
from orchestrator.service import Orchestrator
from tests.conftest import scripted_settings, spec
from worker.service import TaskRunner


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return scripted_settings(
        tmp_path,
        task_retries=0,
    )


class Cluster:
    """An orchestrator and one in-process worker thread per persona, sharing one ScriptedLLM."""

    def __init__(self, settings: Settings, llm: ScriptedLLM) -> None:
        self.llm = llm
        self.events: list[Event] = []
        personas = load_personas(settings.prompts_dir)
        self.queue = FileQueue(settings.tasks_dir)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(
                target=self.queue.serve,
                daemon=True,
                args=(name, TaskRunner(settings, p, llm, f"test:{name}")),
                kwargs={"worker_id": f"test-{name}", "stop": self.stop},
            )
            for name, p in personas.items()
        ]
        self.orchestrator = Orchestrator(
            settings,
            llm,
            self.queue,
            personas,
            load_role_prompt(settings.prompts_dir, "orchestrator"),
            load_role_prompt(settings.prompts_dir, "synthesizer"),
            FileRunLog(settings.results_dir),
            on_event=self.events.append,
        )

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def cluster_of(settings: Settings) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(steps: list[dict[str, Any]], **update: Any) -> Cluster:
        """A started cluster on ``steps``, with ``update`` applied to the settings."""
        cluster = Cluster(settings.model_copy(update=update), ScriptedLLM(steps))
        for t in cluster.threads:
            t.start()
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop.set()
        for t in cluster.threads:
            t.join(5)


def test_invalid_plan_is_repaired_with_the_validation_errors(cluster_of: Any) -> None:
    bad = {"tasks": [spec("a", "bob")]}
    good = {"tasks": [spec("a", "marie")]}
    cluster = cluster_of(
        [
            {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": bad}]},
            {
                "match": "unknown persona 'bob'",
                "tool_uses": [{"name": "submit_plan", "input": good}],
            },
            {"match": "Task id: a", "text": "done a"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    summary = cluster.orchestrator.run(Request(text="req"))
    assert summary.status == "succeeded"
    assert summary.usage_by_stage["planner"].calls == 2
    assert "plan_invalid" not in cluster.kinds()


def test_plan_still_invalid_after_repairs_fails_with_plan_error_and_dispatches_nothing(
    cluster_of: Any, settings: Settings
) -> None:
    cycle = {"tasks": [spec("a", "marie", ["b"]), spec("b", "anga", ["a"])]}
    step = {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": cycle}]}
    cluster = cluster_of([step] * (settings.plan_repairs + 1))
    with pytest.raises(PlanError, match="dependency cycle: a -> b -> a"):
        cluster.orchestrator.run(Request(text="req"))
    assert "task_dispatched" not in cluster.kinds()
    assert cluster.kinds()[-2:] == ["plan_invalid", "run_failed"]


def test_the_planner_cap_is_crewbox_max_planned_tasks(cluster_of: Any) -> None:
    three = {"tasks": [spec("a", "marie"), spec("b", "marie"), spec("c", "marie")]}
    two = {"tasks": [spec("a", "marie"), spec("b", "marie")]}
    plan = "submit_plan"
    steps = [
        {"match": "Plan at most 2 tasks", "tool_uses": [{"name": plan, "input": three}]},
        {"match": "at most 2 tasks, not 3", "tool_uses": [{"name": plan, "input": two}]},
        {"match": "Task id: a", "text": "done a"},
        {"match": "Task id: b", "text": "done b"},
        {"match": "## Results", "text": "answer"},
    ]
    cluster = cluster_of(steps, max_planned_tasks=2)
    summary = cluster.orchestrator.run(Request(text="req"))
    assert [r.task_id for r in summary.tasks] == ["a", "b"]
    assert summary.usage_by_stage["planner"].calls == 2
    cluster.llm.assert_all_used()


def test_a_plan_over_the_cap_is_asked_again_once_then_cut_never_refused(cluster_of: Any) -> None:
    """Issue 18: a plan over the cap failed the whole run after three tries."""
    three = {"tasks": [spec("a", "marie"), spec("b", "marie", ["c"]), spec("c", "anga")]}
    steps = [{"match": "Plan at most 2", "tool_uses": [{"name": "submit_plan", "input": three}]}]
    steps *= 2  # the first answer, and the one asked again
    steps += [
        {"match": "Task id: a", "text": "done a"},
        {"match": "Task id: c", "text": "done c"},
        {"match": "## Results", "text": "answer"},
    ]
    cluster = cluster_of(steps, max_planned_tasks=2)
    summary = cluster.orchestrator.run(Request(text="req"))
    assert [r.task_id for r in summary.tasks] == ["a", "c"]  # b, over the cap: cut
    assert summary.usage_by_stage["planner"].calls == 2
    (adjusted,) = [e for e in cluster.events if e.kind == "plan_adjusted"]
    assert "over the planner's cap of 2: cut b" in adjusted.message
    cluster.llm.assert_all_used()


def test_max_planned_tasks_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREWBOX_MAX_PLANNED_TASKS", "100")
    assert Settings().max_planned_tasks == 100
    monkeypatch.setenv("CREWBOX_MAX_PLANNED_TASKS", "0")
    with pytest.raises(ValueError, match="max_planned_tasks"):
        Settings()


def test_failed_dependency_skips_its_dependents(cluster_of: Any) -> None:
    plan = Plan.model_validate(
        {"tasks": [spec("a", "marie"), spec("b", "anga", ["a"]), spec("c", "fabien")]}
    )
    cluster = cluster_of(
        [
            {
                "match": "Task id: a",
                "tool_uses": [{"name": "Read", "input": {"file_path": "missing.md"}}],
            },
            # no second step for a: the scripted model fails a's next call
            {"match": "Task id: c", "text": "done c"},
            {"match": "## Results", "text": "partial answer"},
        ]
    )
    summary = cluster.orchestrator.run(Request(text="req", plan=plan))
    status = {r.task_id: r.status for r in summary.tasks}
    assert status == {"a": "failed", "b": "skipped", "c": "succeeded"}
    assert summary.status == "partial"
    assert "no scripted step" in (summary.tasks[0].error or "")


def test_budget_stops_dispatching_and_says_so(cluster_of: Any) -> None:
    plan = Plan.model_validate({"tasks": [spec("a", "marie"), spec("b", "anga", ["a"])]})
    cluster = cluster_of(
        [
            {
                "match": "Task id: a",
                "text": "done a",
                "usage": {"input_tokens": 10_000, "output_tokens": 1000},
            },
            {"match": "## Results", "text": "answer"},
        ]
    )
    summary = cluster.orchestrator.run(Request(text="req", plan=plan, budget_usd=Decimal("0.01")))
    assert [r.status for r in summary.tasks] == ["succeeded", "skipped"]
    assert summary.budget_exceeded
    assert summary.usage_by_stage["tasks"].cost_usd == Decimal("0.03")  # 10k*$2/M + 1k*$10/M
    (budget,) = [e for e in cluster.events if e.kind == "budget_exceeded"]
    assert "dispatching nothing more" in budget.message


def test_priorities_order_ready_tasks(cluster_of: Any, settings: Settings) -> None:
    plan = Plan.model_validate(
        {"tasks": [spec("low1", "marie", priority="low"), spec("high1", "marie", priority="high")]}
    )
    cluster = cluster_of(
        [
            {"match": "Task id: ", "text": "ok"},
            {"match": "Task id: ", "text": "ok"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    cluster.orchestrator.run(Request(text="req", plan=plan))
    dispatched = [e.task_id for e in cluster.events if e.kind == "task_dispatched"]
    started = [e.task_id for e in cluster.events if e.kind == "task_started"]
    assert dispatched == ["high1", "low1"]
    assert started == ["high1", "low1"]


def test_dangling_references_left_after_the_repairs_are_pruned_and_reported(
    cluster_of: Any, settings: Settings
) -> None:
    sloppy = {"tasks": [spec("a", "marie", ["marie"]), spec("a", "anga", ["a", "ghost"])]}
    step = {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": sloppy}]}
    cluster = cluster_of(
        [step] * (settings.plan_repairs + 1)
        + [
            {"match": "Task id: a-2", "text": "done a-2"},
            {"match": "Task id: a", "text": "done a"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    summary = cluster.orchestrator.run(Request(text="req"))
    assert [(r.task_id, r.status) for r in summary.tasks] == [
        ("a", "succeeded"),
        ("a-2", "succeeded"),
    ]
    (adjusted,) = [e for e in cluster.events if e.kind == "plan_adjusted"]
    assert adjusted.payload(PlanProblems).problems == [
        "renamed repeated task id 'a' to 'a-2'",
        "dropped dependency of 'a' on 'marie' (not another task)",
        "dropped dependency of 'a-2' on 'ghost' (not another task)",
    ]


def test_a_failure_after_planning_ends_the_run_with_run_failed(settings: Settings) -> None:
    pending = settings.tasks_dir / "marie" / "pending"
    pending.parent.mkdir(parents=True)
    pending.write_text("a file where marie's queue folder should be")
    events: list[Event] = []
    orchestrator = Orchestrator(
        settings,
        ScriptedLLM([]),
        FileQueue(settings.tasks_dir),
        load_personas(settings.prompts_dir),
        load_role_prompt(settings.prompts_dir, "orchestrator"),
        load_role_prompt(settings.prompts_dir, "synthesizer"),
        FileRunLog(settings.results_dir),
        on_event=events.append,
    )
    plan = Plan.model_validate({"tasks": [spec("a", "marie")]})
    with pytest.raises(QueueError, match="cannot write to the task queue"):
        orchestrator.run(Request(text="req", plan=plan))
    assert events[-1].kind == "run_failed"
    assert "cannot write to the task queue" in events[-1].message
