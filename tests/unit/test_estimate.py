"""`crewbox run --estimate`: the cost range of a plan before it runs (crewbox.estimate)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import yaml

from crewbox.estimate import synthesis_estimate, task_estimate, total
from tests.conftest import crewbox_env, run_crewbox, spec


def test_a_tasks_range_spans_one_silent_turn_to_every_turn_at_max_tokens() -> None:
    # claude-sonnet-4-6: $3 in, $15 out per MTok; 4,000 characters = 1,000 tokens
    row = task_estimate("t", "marie", "claude-sonnet-4-6", 4000, max_tokens=100, max_turns=3)
    assert row.input_tokens == 1000
    assert row.low_usd == Decimal(1000 * 3) / 10**6
    read = 1000 + 1100 + 1200
    assert row.high_usd == Decimal(read * 3 + 300 * 15) / 10**6


def test_a_model_without_a_price_costs_nothing_both_ways() -> None:
    row = task_estimate("t", "marie", "smollm2-135m-instruct", 4000, 100, 3)
    assert (row.low_usd, row.high_usd) == (0, 0) and row.input_tokens == 1000


def test_the_total_adds_the_synthesis() -> None:
    rows = [task_estimate("a", "m", "claude-sonnet-4-6", 400, 10, 1), synthesis_estimate(
        "claude-sonnet-4-6", 1000, 10)]  # fmt: skip
    assert total(rows).high_usd == rows[0].high_usd + rows[1].high_usd


def test_in_a_pipe_it_only_prints_and_with_yes_it_runs(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"request": "r", "tasks": [spec("e1", "marie")]}))
    steps = [{"match": "Task id: e1", "text": "done"}, {"match": "## Results", "text": "answer"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(steps))
    env = crewbox_env(
        tmp_path, CREWBOX_PROVIDER="scripted", CREWBOX_SCRIPT_PATH=str(tmp_path / "s.yaml")
    )
    shown = run_crewbox(["run", "--estimate", "--plan", str(plan)], env, cwd=tmp_path)
    assert shown.returncode == 0 and "e1" in shown.stdout and "total" in shown.stdout
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
    ran = run_crewbox(["run", "--estimate", "-y", "--plan", str(plan)], env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "e1" in ran.stderr and "answer" in ran.stdout


def test_submit_estimate_prices_the_plan_on_claude_without_touching_redis(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"request": "r", "tasks": [spec("s1", "fabien")]}))
    env = crewbox_env(tmp_path, CREWBOX_QUEUE="rq", CREWBOX_REDIS_URL="redis://127.0.0.1:1/0")
    shown = run_crewbox(["submit", "--estimate", "--plan", str(plan)], env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "s1" in shown.stdout and "claude-sonnet-5-5" in shown.stdout
    assert "as if every service used Claude" in shown.stderr
