"""Embedded mode's sandbox as the cluster's: `crewbox run --allow-bash` as a user runs it,
the scripted model behind the real worker processes.

With credentials in the environment `crewbox run` starts from, the model runs ``env`` and
``printenv`` through Bash (neither shows a credential or a ``CREWBOX_*`` secret path) and
tries to Write and Edit into the persona's workspace (both refused: the workspace is
read-only, deliverables go in the working directory). The run still delivers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.models import RunSummary
from crewbox.testing import RecordedCall, recorded_calls
from tests.conftest import ROOT, crewbox_env, run_crewbox

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-embedded-secret-1",
    "OPENAI_API_KEY": "sk-openai-secret-2",
    "CREWBOX_REDIS_PASSWORD": "redis-secret-3",
    "CREWBOX_LLM_API_KEY": "llm-secret-4",
    "CREWBOX_ANTHROPIC_API_KEY_FILE": "/run/secrets/anthropic-secret-5",
}

PRICING = "tickets/tickets/pricing.py"

PLAN = {
    "tasks": [
        {
            "id": "probe",
            "persona": "anga",
            "title": "Probe the sandbox",
            "instructions": "Look around, then write the report.",
            "timeout_s": 120,
        }
    ]
}


def bash(command: str) -> dict[str, Any]:
    return {"name": "Bash", "input": {"command": command}}


def script(workspace: Path) -> list[dict[str, Any]]:
    """Planner; the probe task's tool calls (results in this order), its report; synthesis."""
    probes = [
        bash("env"),
        bash("printenv ANTHROPIC_API_KEY"),
        {"name": "Write", "input": {"file_path": str(workspace / "NEW.md"), "content": "x"}},
        {
            "name": "Edit",
            "input": {
                "file_path": str(workspace / PRICING),
                "old_string": "def ",
                "new_string": "def broken_",
                "replace_all": True,
            },
        },
    ]
    report = {"name": "Write", "input": {"file_path": "report.md", "content": "# Report\n"}}
    return [
        {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": PLAN}]},
        {"match": "Task id: probe", "tool_uses": probes},
        {"match": "Task id: probe", "tool_uses": [report]},
        {"match": "Task id: probe", "text": "Report in report.md."},
        {"match": "## Results", "text": "Done."},
    ]


def tool_results(call: RecordedCall) -> list[dict[str, Any]]:
    """The tool_result blocks of the last message of ``call``, in call order."""
    last = call.messages[-1]["content"]
    return [b for b in last if b["type"] == "tool_result"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the probe once, secrets in the environment; the tests read what it left."""
    tmp = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(ROOT / "workspaces", tmp / "workspaces")
    workspace = tmp / "workspaces" / "code"
    (tmp / "script.yaml").write_text(yaml.safe_dump(script(workspace)))
    env = crewbox_env(
        tmp,
        CREWBOX_PROVIDER="scripted",
        CREWBOX_SCRIPT_PATH=str(tmp / "script.yaml"),
        CREWBOX_SCRIPT_RECORD_DIR=str(tmp / "record"),
        CREWBOX_WORKSPACES_DIR=str(tmp / "workspaces"),
        **SECRETS,
    )
    proc = run_crewbox(["run", "--allow-bash", "Probe the sandbox"], env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    calls = [c for c in recorded_calls(tmp / "record") if "Task id: probe" in c.text]
    (run_dir,) = [p for p in (tmp / "results").iterdir() if p.is_dir()]
    return {"results": tool_results(calls[1]), "workspace": workspace, "run_dir": run_dir}


def test_env_through_bash_shows_no_credential_and_no_secret_path(probe: dict[str, Any]) -> None:
    env_result = probe["results"][0]
    assert env_result["is_error"] is False
    names = {line.split("=", 1)[0] for line in env_result["content"].splitlines()}
    assert "PATH" in names  # env really ran
    assert not any(n.startswith(("CREWBOX_", "ANTHROPIC_", "OPENAI_")) for n in names), names
    for value in SECRETS.values():
        assert value not in env_result["content"]


def test_printenv_of_the_key_finds_nothing(probe: dict[str, Any]) -> None:
    assert probe["results"][1]["content"] == "(no output)\nExit code: 1"


def test_write_and_edit_into_the_workspace_are_refused(probe: dict[str, Any]) -> None:
    workspace: Path = probe["workspace"]
    out_dir = (probe["run_dir"] / "anga" / "probe").resolve()
    for result in probe["results"][2:]:
        assert result["is_error"] is True
        assert "read-only workspace" in result["content"]
        assert f"deliverables go in the working directory {out_dir}" in result["content"]
    assert not (workspace / "NEW.md").exists()
    assert (workspace / PRICING).read_text() == (ROOT / "workspaces" / "code" / PRICING).read_text()


def test_the_task_went_on_and_delivered(probe: dict[str, Any]) -> None:
    summary = RunSummary.model_validate_json((probe["run_dir"] / "summary.json").read_text())
    assert summary.status == "succeeded"
    (task,) = summary.tasks
    assert [a.path for a in task.artifacts] == ["report.md"]
