"""A worker task through the real AnthropicClient against a fake Messages endpoint:
the agent loop, the sandboxed tools and the usage accounting on the production code path."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Event, LLMCall, Task, TaskSpec, Usage
from crewbox.personas import load_personas
from tests.conftest import ROOT
from tests.fakes.messages_server import FakeLLMServer
from tests.unit.test_anthropic_client import message_reply
from worker.service import TaskRunner


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def usage(i: int, o: int, cw: int, cr: int) -> dict[str, int]:
    return {
        "input_tokens": i,
        "output_tokens": o,
        "cache_creation_input_tokens": cw,
        "cache_read_input_tokens": cr,
    }


def test_task_writes_its_artifact_refuses_an_escape_and_sums_usage(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    write = {
        "type": "tool_use",
        "id": "toolu_w",
        "name": "Write",
        "input": {"file_path": "plan.md", "content": "# Class plan\n"},
    }
    escape = {
        "type": "tool_use",
        "id": "toolu_x",
        "name": "Read",
        "input": {"file_path": "/etc/passwd"},
    }
    server.reply(
        message_reply([write, escape], "tool_use", usage(300, 40, 1500, 0)),
        message_reply(
            [{"type": "text", "text": "Wrote plan.md."}], "end_turn", usage(80, 10, 0, 1500)
        ),
    )
    settings = Settings(
        provider="anthropic",
        anthropic_api_key="k",
        anthropic_base_url=server.url,
        model="claude-sonnet-4-6",
        prompts_dir=ROOT / "prompts",
        workspaces_dir=ROOT / "workspaces",
        results_dir=tmp_path,
        llm_max_retries=0,
    )
    marie = load_personas(settings.prompts_dir)["marie"]
    task = Task(
        run_id="r1",
        spec=TaskSpec(id="plan", persona="marie", title="Plan", instructions="Plan a class."),
        request_text="A class",
    )
    events: list[Event] = []

    result = TaskRunner(settings, marie, make_client(settings), "test:1")(task, events.append)

    assert result.status == "succeeded", result.error
    assert [a.path for a in result.artifacts] == ["plan.md"]
    assert (tmp_path / "r1" / "marie" / "plan" / "plan.md").read_text() == "# Class plan\n"
    first, second = (r.body for r in server.requests)
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert marie.prompt in first["system"][0]["text"]
    tools = {t["name"]: t for t in first["tools"]}
    assert set(tools) == {"Read", "Write", "Edit", "Glob", "Grep", "Agent"}  # Agent: sub-agents
    assert "- choreography-analyzer: " in tools["Agent"]["description"]
    results = {b["tool_use_id"]: b for b in second["messages"][-1]["content"]}
    assert results["toolu_w"]["is_error"] is False
    assert results["toolu_x"]["is_error"] is True and "outside" in results["toolu_x"]["content"]
    # claude-sonnet-4-6: $3 in, $15 out, $3.75 cache write, $0.30 cache read per MTok
    expected = (
        380 * 3 + 50 * 15 + Decimal("1500") * Decimal("3.75") + 1500 * Decimal("0.30")
    ) / 10**6
    assert result.usage.cost_usd == expected
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.calls) == (
        380,
        50,
        2,
    )
    assert [e.kind for e in events] == ["task_started", "llm_call", "llm_call"]
    reported = [e.payload(LLMCall).usage for e in events if e.kind == "llm_call"]
    assert Usage.total(reported) == result.usage
