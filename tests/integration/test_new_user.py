"""What a new user meets first with `crewbox run` (issue 17): the CLI as a subprocess in
embedded mode, ScriptedLLM answering."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from crewbox.models import RunSummary
from tests.conftest import crewbox_env, run_crewbox, scripted_env, spec

REQUEST = "Write a short welcome note for the spring recital"


def one_task_script(final: str = "FINAL ANSWER") -> list[dict[str, Any]]:
    """Planner (one marie task writing note.md), the task, the synthesis."""
    plan = {"tasks": [{**spec("note", "marie"), "priority": "normal", "timeout_s": 60}]}
    return [
        {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": plan}]},
        {
            "match": "Task id: note",
            "tool_uses": [
                {"name": "Write", "input": {"file_path": "note.md", "content": "Welcome!\n"}}
            ],
        },
        {"match": "Task id: note", "text": "note.md written"},
        {"match": "## Results", "text": final},
    ]


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`crewbox run --format json` of a one-task request."""
    tmp = tmp_path_factory.mktemp("json")
    proc = run_crewbox(
        ["run", "--format", "json", REQUEST], scripted_env(tmp, one_task_script()), tmp
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in (tmp / "results").iterdir() if p.is_dir()]
    return {"proc": proc, "run_dir": run_dir}


def test_run_format_json_prints_the_run_summary(json_run: dict[str, Any]) -> None:
    summary = RunSummary.model_validate_json(json_run["proc"].stdout)
    assert summary.status == "succeeded" and summary.run_id == json_run["run_dir"].name
    assert "FINAL ANSWER" not in json_run["proc"].stdout


def test_the_run_id_is_announced_once(json_run: dict[str, Any]) -> None:
    run_id = json_run["run_dir"].name
    lines = json_run["proc"].stderr.splitlines()
    assert sum(line.startswith(f"run {run_id}") for line in lines) == 1, lines


def test_one_artifact_is_not_plural(json_run: dict[str, Any]) -> None:
    stderr = json_run["proc"].stderr
    assert "1 artifact " in stderr and "1 artifacts" not in stderr


def test_results_hold_paths_relative_to_the_run_folder(json_run: dict[str, Any]) -> None:
    run_dir: Path = json_run["run_dir"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_path"] == "final.md"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (written,) = [e for e in events if e["kind"] == "synthesis_written"]
    assert written["message"] == "final.md"
    assert str(run_dir.parent) not in (run_dir / "summary.json").read_text()


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "0", "-1"])
def test_a_budget_that_is_not_a_positive_number_is_bad_input(tmp_path: Path, budget: str) -> None:
    env = scripted_env(tmp_path, [])
    proc = run_crewbox(["run", "--budget-usd", budget, REQUEST], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("crewbox: error: --budget-usd must be a positive number"), line
    assert not (tmp_path / "results").exists()


def test_an_empty_dead_letter_queue_says_so(tmp_path: Path) -> None:
    proc = run_crewbox(["dlq", "list"], crewbox_env(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no task in the dead-letter queue"


def free_port() -> int:
    """A local TCP port nothing listens on (just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_key_and_no_local_server_is_one_line_and_no_run(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = crewbox_env(tmp_path, CREWBOX_LLM_BASE_URL=url)
    proc = run_crewbox(["run", REQUEST], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"crewbox: error: cannot reach the LLM server at {url}"), line
    assert "ANTHROPIC_API_KEY" in line
    assert not (tmp_path / "results").exists()


def test_a_failed_run_says_so_once_and_results_and_status_show_why(tmp_path: Path) -> None:
    why = "the model server refused the request"
    env = scripted_env(
        tmp_path, [{"match": "Call submit_plan", "error": {"status": 400, "message": why}}]
    )
    proc = run_crewbox(["run", REQUEST], env, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count(why) == 1, proc.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    results = run_crewbox(["results", run_dir.name], env, tmp_path)
    assert results.returncode == 1
    assert f"run {run_dir.name} failed: " in results.stderr and why in results.stderr
    assert "has not finished" not in results.stderr
    status = run_crewbox(["status", run_dir.name], env, tmp_path)
    assert status.returncode == 0, status.stderr
    (line,) = status.stdout.strip().splitlines()  # no empty task table
    assert line.startswith(f"run {run_dir.name}: failed: ") and why in line, line


def test_crewbox_resume_tries_a_failed_run_again(tmp_path: Path) -> None:
    refused = {"match": "Call submit_plan", "error": {"status": 400, "message": "refused"}}
    env = scripted_env(tmp_path, [refused, *one_task_script()])
    assert run_crewbox(["run", REQUEST], env, tmp_path).returncode == 1
    (run_dir,) = (tmp_path / "results").iterdir()
    resumed = run_crewbox(["resume", run_dir.name], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "FINAL ANSWER"
    assert RunSummary.model_validate_json((run_dir / "summary.json").read_text()).status == (
        "succeeded"
    )


def test_resume_with_no_local_server_is_one_line_too(tmp_path: Path) -> None:
    refused = {"match": "Call submit_plan", "error": {"status": 400, "message": "refused"}}
    assert (
        run_crewbox(["run", REQUEST], scripted_env(tmp_path, [refused]), tmp_path).returncode == 1
    )
    (run_dir,) = (tmp_path / "results").iterdir()
    env = crewbox_env(tmp_path, CREWBOX_LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    proc = run_crewbox(["resume", run_dir.name], env, tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot reach the LLM server" in line
