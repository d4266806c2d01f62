"""The claude-code engine with the real Claude Code CLI (from the claude-agent-sdk wheel)
against a scripted Messages endpoint over HTTP: Claude Code talks only to the worker's
gateway, which forwards through crewbox's own client stack with the real key.

The scripted model answers Claude Code's calls (recognised by the persona's marker in the
system prompt) from a list of steps; any other call (Claude Code's own side requests) gets a
one-word text answer. Every answer is billed in the endpoint's ledger, which the task's
usage must equal to the token. About 1-2 s per test on 2 cores.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Event, Task, TaskSpec
from crewbox.personas import load_personas
from tests.fakes.messages_server import FakeLLMServer, RecordedRequest, Reply
from worker.engines.claude_code import cli_path
from worker.service import TaskRunner

try:
    CLI: Path | None = cli_path()
except Exception:  # the CLI is not installed: `pip install '.[claude-code]'`
    CLI = None

pytestmark = pytest.mark.skipif(
    CLI is None, reason="the Claude Code CLI is not installed (pip install '.[dev]' has it)"
)

KEY = "sk-ant-real-key-that-must-not-leak-0123456789"
MARKER = "You are Tess, the test persona."
MODEL = "claude-sonnet-4-6"


@dataclass
class ScriptedModel:
    """The endpoint's brain: ``steps`` (content blocks, stop reason) answer the persona's
    calls in order; ``ledger`` sums every token it billed."""

    steps: list[tuple[list[dict[str, Any]], str]]
    ledger: dict[str, int] = field(
        default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "calls": 0}
    )
    main_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.body
        system = json.dumps(body.get("system"))
        with self.lock:
            if MARKER in system and self.steps:
                content, stop = self.steps.pop(0)
                self.main_calls += 1
            else:
                content, stop = [{"type": "text", "text": "Done."}], "end_turn"
            usage = {"input_tokens": 100 + len(json.dumps(body)) // 100, "output_tokens": 7}
            self.ledger["input_tokens"] += usage["input_tokens"]
            self.ledger["output_tokens"] += usage["output_tokens"]
            self.ledger["calls"] += 1
        return {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", MODEL),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }


def tool(name: str, n: int, **args: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{n:02d}", "name": name, "input": args}


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


def persona_dir(tmp_path: Path, tools: str = "Read, Write, Edit, Bash", extra: str = "") -> Path:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "tess.md").write_text(
        f"---\nname: tess\ndescription: Writes files for tests\ntools: {tools}\n"
        f"engine: claude-code\n{extra}---\n{MARKER} Write what you are asked to.\n"
    )
    return prompts


@pytest.fixture
def model_server() -> Iterator[tuple[FakeLLMServer, ScriptedModel]]:
    brain = ScriptedModel(steps=[])
    with FakeLLMServer(brain) as server:
        yield server, brain


def run_task(
    server: FakeLLMServer, tmp_path: Path, prompts: Path, timeout_s: int = 60, **settings: Any
) -> tuple[Any, list[Event]]:
    cfg = Settings(
        provider="anthropic",
        anthropic_api_key=KEY,
        anthropic_base_url=server.url,
        model=MODEL,
        prompts_dir=prompts,
        workspaces_dir=tmp_path / "workspaces",
        results_dir=tmp_path / "results",
        tasks_dir=tmp_path / "tasks",
        llm_max_retries=0,
        **settings,
    )
    tess = load_personas(prompts)["tess"]
    task = Task(
        run_id="r1",
        spec=TaskSpec(id="t1", persona="tess", title="T", instructions="Go.", timeout_s=timeout_s),
        request_text="A test",
    )
    events: list[Event] = []
    result = TaskRunner(cfg, tess, make_client(cfg, persona="tess"), "test:1")(task, events.append)
    assert result is not None
    return result, events


def assert_ledger(result: Any, brain: ScriptedModel) -> None:
    assert result.usage.input_tokens == brain.ledger["input_tokens"]
    assert result.usage.output_tokens == brain.ledger["output_tokens"]
    assert result.usage.calls == brain.ledger["calls"]


def test_write_round_trip_leaves_the_artifact_and_usage_equals_the_ledger(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, brain = model_server
    brain.steps = [
        ([text("Writing."), tool("Write", 1, file_path="notes.md", content="hello\n")], "tool_use"),
        ([text("Wrote notes.md.")], "end_turn"),
    ]
    result, events = run_task(server, tmp_path, persona_dir(tmp_path))

    assert result.status == "succeeded", result.error
    assert [a.path for a in result.artifacts] == ["notes.md"]
    assert (tmp_path / "results/r1/tess/t1/notes.md").read_text() == "hello\n"
    assert result.summary == "Wrote notes.md."
    assert_ledger(result, brain)
    assert sum(1 for e in events if e.kind == "llm_call") == brain.ledger["calls"]
    assert result.usage.cost_usd > Decimal(0)
    # Claude Code reached the endpoint only through the gateway, which used the real key
    for request in server.requests:
        assert KEY in request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
