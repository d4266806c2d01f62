"""Bad input gets one clear line on stderr, a non-zero exit, and nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, crewbox_env, run_crewbox


def task(
    task_id: str, persona: str = "marie", depends_on: list[str] | None = None
) -> dict[str, object]:
    return {
        "id": task_id,
        "persona": persona,
        "title": f"Task {task_id}",
        "instructions": "Do it.",
        "depends_on": depends_on or [],
    }


def run_plan(tmp_path: Path, tasks: list[dict[str, object]]) -> tuple[int, list[str]]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"request": "A request", "tasks": tasks}))
    env = crewbox_env(
        tmp_path, CREWBOX_PROVIDER="scripted", CREWBOX_SCRIPT_PATH=str(tmp_path / "none.yaml")
    )
    proc = run_crewbox(["run", "--plan", str(plan)], env, cwd=tmp_path)
    return proc.returncode, proc.stderr.strip().splitlines()


def assert_nothing_written(tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert not results.exists() or not any(results.iterdir())
    tasks = tmp_path / "tasks"
    assert not tasks.exists() or not list(tasks.rglob("*.json"))


def test_unknown_persona_in_plan_file(tmp_path: Path) -> None:
    code, lines = run_plan(tmp_path, [task("a"), task("b", persona="bob")])
    assert code == 2
    assert len(lines) == 1
    assert "unknown persona 'bob'" in lines[0] and "anga, fabien, marie" in lines[0]
    assert lines[0].startswith("crewbox: error:")
    assert_nothing_written(tmp_path)


def test_dependency_cycle_in_plan_file(tmp_path: Path) -> None:
    code, lines = run_plan(
        tmp_path,
        [task("a", depends_on=["c"]), task("b", depends_on=["a"]), task("c", depends_on=["b"])],
    )
    assert code == 2
    assert len(lines) == 1
    assert "dependency cycle: a -> c -> b -> a" in lines[0]
    assert_nothing_written(tmp_path)


def test_unknown_dependency_and_duplicate_id_reported_together(tmp_path: Path) -> None:
    code, lines = run_plan(tmp_path, [task("a"), task("a", depends_on=["zz"])])
    assert code == 2 and len(lines) == 1
    assert "task id 'a' is used more than once" in lines[0]
    assert "depends on unknown task 'zz'" in lines[0]


def test_plan_file_with_a_missing_field(tmp_path: Path) -> None:
    bad = task("a")
    del bad["instructions"]
    code, lines = run_plan(tmp_path, [bad])
    assert code == 2 and len(lines) == 1
    assert "tasks[0].instructions: Field required" in lines[0]


def with_ghost(tmp_path: Path) -> dict[str, str]:
    """The project's prompts plus ghost.md, a persona file with no name; the env using it."""
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    (prompts / "ghost.md").write_text("---\ndescription: Has no name.\n---\nYou are a ghost.\n")
    return crewbox_env(tmp_path, CREWBOX_PROMPTS_DIR=str(prompts))


def test_a_persona_file_without_name_is_listed_as_invalid_with_its_reason(
    tmp_path: Path,
) -> None:
    proc = run_crewbox(["personas"], with_ghost(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip() for line in proc.stdout.splitlines() if "│" in line}
    assert {"marie", "anga", "fabien"} <= rows and "ghost" not in rows
    invalid = [line for line in proc.stdout.splitlines() if line.startswith("invalid ")]
    assert len(invalid) == 1 and invalid[0].startswith("invalid ghost: ")
    assert "ghost.md: front matter has no 'name'" in invalid[0]
    assert "ghost.md" not in proc.stderr  # said once, on stdout


def test_a_broken_persona_file_fails_only_the_plan_that_names_it(tmp_path: Path) -> None:
    env = with_ghost(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"request": "A request", "tasks": [task("a", "ghost")]}))
    proc = run_crewbox(["run", "--plan", str(plan)], env, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("crewbox: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "persona 'ghost' cannot be used:" in errors[0]
    assert "ghost.md: front matter has no 'name'" in errors[0]
    assert_nothing_written(tmp_path)
    plan.write_text(yaml.safe_dump({"request": "A request", "tasks": [task("a", "marie")]}))
    estimate = run_crewbox(["run", "--estimate", "--plan", str(plan)], env, cwd=tmp_path)
    assert estimate.returncode == 0, estimate.stderr
    assert "marie" in estimate.stdout


def test_missing_request_text(tmp_path: Path) -> None:
    proc = run_crewbox(["run"], crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'crewbox: error: no request: give TEXT, e.g. crewbox run "Plan a spring recital"'
    ]


def test_unknown_run_id(tmp_path: Path) -> None:
    proc = run_crewbox(["status", "nope"], crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no run 'nope'" in proc.stderr


def test_personas_lists_every_persona(tmp_path: Path) -> None:
    proc = run_crewbox(["personas", "--long"], crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, workspace in (("marie", "dance"), ("anga", "code"), ("fabien", "marketing")):
        assert name in proc.stdout and workspace in proc.stdout


def test_cluster_command_without_a_cluster(tmp_path: Path) -> None:
    proc = run_crewbox(["workers"], crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "needs the cluster (CREWBOX_QUEUE=rq)" in proc.stderr


def test_unreachable_redis(tmp_path: Path) -> None:
    env = crewbox_env(tmp_path, CREWBOX_QUEUE="rq", CREWBOX_REDIS_URL="redis://127.0.0.1:1/0")
    proc = run_crewbox(["submit", "hello"], env, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert "cannot reach Redis" in lines[0] and "make up" in lines[0]


@pytest.mark.parametrize(
    "args", [["follow", "nosuch"], ["cancel", "nosuch"], ["dlq", "list", "nosuch"],
             ["dlq", "retry", "nosuch", "t"]],
)  # fmt: skip
def test_commands_on_an_unknown_run_say_so_and_write_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    proc = run_crewbox(args, crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"crewbox: error: no run 'nosuch' under {tmp_path / 'results'}/; "
        f"`ls {tmp_path / 'results'}` lists the runs"
    ]
    assert_nothing_written(tmp_path)


def test_personas_says_which_models_have_no_price(tmp_path: Path) -> None:
    env = crewbox_env(
        tmp_path, CREWBOX_PROVIDER="anthropic", ANTHROPIC_API_KEY="k", CREWBOX_MODEL="claude-x-9"
    )
    proc = run_crewbox(["personas", "--long"], env, cwd=tmp_path)
    assert proc.returncode == 0
    assert "claude-x-9" in proc.stdout and " NO " in proc.stdout
    assert "warning: no price" in proc.stderr and "marie" in proc.stderr


def test_personas_lists_sub_agents_and_warns_of_a_sub_agent_file_skipped(tmp_path: Path) -> None:
    env = with_ghost(tmp_path)
    (tmp_path / "prompts" / "marie" / "agents" / "broken.md").write_text("---\nname: b\n---\n")
    proc = run_crewbox(["personas", "--long"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    marie = next(line for line in proc.stdout.splitlines() if line.startswith("│ marie"))
    assert "choreography-analyzer" in marie
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning marie:")]
    assert len(warnings) == 1 and "broken.md: front matter has no 'description'" in warnings[0]


def test_unknown_log_format_is_one_line(tmp_path: Path) -> None:
    env = crewbox_env(tmp_path, CREWBOX_LOG_FORMAT="xml")
    proc = run_crewbox(["worker", "--persona", "marie", "--burst"], env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "crewbox: error: CREWBOX_LOG_FORMAT='xml': use text or json"
    ]


def test_json_log_lines_of_a_worker(tmp_path: Path) -> None:
    env = crewbox_env(tmp_path, CREWBOX_LOG_FORMAT="json", CREWBOX_QUEUE="files")
    proc = run_crewbox(["worker", "--persona", "marie", "--burst"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.strip().splitlines()]
    assert lines and all(line["logger"].startswith("crewbox") for line in lines)
    assert {"run_id", "task_id", "attempt", "trace_id"} <= set(lines[0])
