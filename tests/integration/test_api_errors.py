"""API errors in embedded runs, through ScriptedLLM's error steps on the production path:
retryable ones are retried by the one retry layer inside the call (the task keeps its one
attempt), others fail the task at once, and summary.json still equals the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crewbox.testing import recorded_calls
from tests.conftest import spec
from tests.integration.test_durability import EmbeddedRun, assert_accounted

pytestmark = pytest.mark.integration

SYNTHESIS = {"match": "## Results", "text": "answer"}


def failing(task_id: str, status: int | None, retry_after_s: float | None = 0) -> dict[str, Any]:
    error = {"status": status, "retry_after_s": retry_after_s}
    return {"match": f"Task id: {task_id}\\n", "error": error}


def test_a_storm_of_retryable_errors_is_ridden_out_within_each_call(tmp_path: Path) -> None:
    tasks = [f"s{i}" for i in range(6)]
    personas = ["marie", "anga", "fabien"]
    steps: list[dict[str, Any]] = []
    for i, t in enumerate(tasks):
        first = (429, 529, 500)[i % 3]
        steps += [failing(t, first), failing(t, None, None)]
        steps.append({"match": f"Task id: {t}\\n", "text": f"{t} done"})
    run = EmbeddedRun(tmp_path, [spec(t, personas[i % 3]) for i, t in enumerate(tasks)],
                      [*steps, SYNTHESIS])  # fmt: skip
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    code, _, err = run.finish()
    assert code == 0, err
    summary = run.summary()
    assert all(r.status == "succeeded" for r in summary.tasks)
    assert all(len(summary.attempts[t]) == 1 for t in tasks)  # no task attempt retried
    calls = recorded_calls(tmp_path / "record")
    assert sorted(c.error_status for c in calls if c.error_status is not None) == sorted(
        [429, 529, 500] * 2 + [0] * 6
    )
    assert len(calls) == 3 * len(tasks) + 1
    assert_accounted(run)


@pytest.mark.parametrize("status", [401, 413])
def test_an_error_that_cannot_pass_fails_the_task_after_one_call(
    tmp_path: Path, status: int
) -> None:
    run = EmbeddedRun(
        tmp_path,
        [spec("doomed", "marie"), spec("fine", "anga")],
        [failing("doomed", status), {"match": "Task id: doomed\\n", "text": "never"},
         {"match": "Task id: fine\\n", "text": "fine done"}, SYNTHESIS],
    )  # fmt: skip
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    run.finish()
    summary = run.summary()
    doomed = next(r for r in summary.tasks if r.task_id == "doomed")
    assert doomed.status == "failed" and f"HTTP {status}" in (doomed.error or "")
    assert len(summary.attempts["doomed"]) == 1
    assert run.calls_for("doomed") == 1
    assert_accounted(run)
