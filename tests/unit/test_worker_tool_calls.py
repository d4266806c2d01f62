"""Tool calls on the worker's production path (TaskRunner, the real AnthropicClient, a fake
Messages endpoint): the schemas sent are the input models', bad inputs come back to the
model as one-line errors and the task goes on, and the workspace is read-only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Result, Task, TaskSpec
from crewbox.personas import load_personas
from tests.conftest import ROOT
from tests.fakes.messages_server import FakeLLMServer
from tests.unit.test_anthropic_client import message_reply
from worker.service import TaskRunner
from worker.tools import ALL_TOOLS
from worker.tools.base import input_schema

USAGE = {"input_tokens": 100, "output_tokens": 10}

PRICING = "tickets/tickets/pricing.py"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def tool_use(tool_id: str, name: str, **input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": input}


def run_anga(server: FakeLLMServer, tmp_path: Path, *turns: list[dict[str, Any]]) -> Result:
    """Run one task of anga (workspace ``code``, copied to tmp_path) with Bash allowed; the
    model calls the tools of each turn in order, then ends its turn."""
    shutil.copytree(ROOT / "workspaces" / "code", tmp_path / "workspaces" / "code")
    server.reply(
        *(message_reply(turn, "tool_use", USAGE) for turn in turns),
        message_reply([{"type": "text", "text": "Done."}], "end_turn", USAGE),
    )
    settings = Settings(
        provider="anthropic",
        anthropic_api_key="k",
        anthropic_base_url=server.url,
        prompts_dir=ROOT / "prompts",
        workspaces_dir=tmp_path / "workspaces",
        results_dir=tmp_path / "results",
        llm_max_retries=0,
        allow_bash=True,
    )
    anga = load_personas(settings.prompts_dir)["anga"]
    spec = TaskSpec(id="fix", persona="anga", title="Fix", instructions="Fix the pricing.")
    task = Task(run_id="r1", spec=spec, request_text="Fix it")
    return TaskRunner(settings, anga, make_client(settings), "test:1")(task, lambda e: None)


def tool_results(server: FakeLLMServer, request: int) -> dict[str, dict[str, Any]]:
    """The tool_result blocks of request number ``request`` (0-based), by tool_use_id."""
    body = server.requests[request].body
    return {b["tool_use_id"]: b for b in body["messages"][-1]["content"]}


def test_the_schemas_sent_are_the_input_models(server: FakeLLMServer, tmp_path: Path) -> None:
    result = run_anga(server, tmp_path)
    assert result.status == "succeeded", result.error
    sent = server.requests[0].body["tools"]
    assert [t["name"] for t in sent] == ["Read", "Write", "Edit", "Glob", "Grep", "Bash"]
    for tool in sent:
        assert tool["input_schema"] == input_schema(ALL_TOOLS[tool["name"]].input_model)
        assert tool["description"] == ALL_TOOLS[tool["name"]].description


def test_bad_inputs_are_one_line_errors_and_the_task_goes_on(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    bad = [
        tool_use("missing", "Read"),
        tool_use("type", "Read", file_path=3),
        tool_use("unknown", "Glob", pattern="*", color="red"),
        tool_use("bool", "Read", file_path="a.txt", limit=True),
        tool_use("alias", "Grep", pattern="x", **{"-A": 2}),
    ]
    good = [tool_use("write", "Write", file_path="report.md", content="# Report\n")]

    result = run_anga(server, tmp_path, bad, good)

    assert result.status == "succeeded", result.error
    assert [a.path for a in result.artifacts] == ["report.md"]
    errors = tool_results(server, 1)
    expected = {
        "missing": "Read: missing parameter 'file_path'; parameters: file_path (required), "
        "offset, limit",
        "type": "Read: parameter 'file_path': input should be a valid string, got 3; "
        "parameters: file_path (required), offset, limit",
        "unknown": "Glob: unknown parameter 'color'; parameters: pattern (required), path",
        "bool": "Read: parameter 'limit': input should be a valid integer, got True; "
        "parameters: file_path (required), offset, limit",
        "alias": "Grep: unknown parameter '-A'; parameters: pattern (required), path, glob, "
        "output_mode, -i, -n",
    }
    assert {k: (b["is_error"], b["content"]) for k, b in errors.items()} == {
        k: (True, v) for k, v in expected.items()
    }
    assert tool_results(server, 2)["write"]["is_error"] is False


def test_write_and_edit_into_the_workspace_are_refused(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspaces" / "code"
    calls = [
        tool_use("write", "Write", file_path=str(workspace / "NEW.md"), content="x"),
        tool_use(
            "edit",
            "Edit",
            file_path=str(workspace / PRICING),
            old_string="def ",
            new_string="def broken_",
            replace_all=True,
        ),
        tool_use("read", "Read", file_path=str(workspace / PRICING), limit=1),
    ]

    result = run_anga(server, tmp_path, calls)

    assert result.status == "succeeded", result.error
    results = tool_results(server, 1)
    out_dir = (tmp_path / "results" / "r1" / "anga" / "fix").resolve()
    for key in ("write", "edit"):
        assert results[key]["is_error"] is True
        assert "read-only workspace" in results[key]["content"]
        assert f"deliverables go in the working directory {out_dir}" in results[key]["content"]
    assert results["read"]["is_error"] is False
    assert not (workspace / "NEW.md").exists()
    original = (ROOT / "workspaces" / "code" / PRICING).read_text()
    assert (workspace / PRICING).read_text() == original
    first_message = server.requests[0].body["messages"][0]["content"][0]["text"]
    assert f"Your workspace with reference material is {workspace} (read-only)" in first_message
