"""The claude-code engine with the real Claude Code CLI (from the claude-agent-sdk wheel)
against a scripted Messages endpoint over HTTP: Claude Code talks only to the worker's
gateway, which forwards through crewbox's own client stack with the real key.

The scripted model answers Claude Code's calls (recognised by the persona's marker in the
system prompt) from a list of steps; any other call (Claude Code's own side requests) gets a
one-word text answer. Every answer is billed in the endpoint's ledger, which the task's
usage must equal to the token. About 2 s a test on 2 cores (the timeout test 7 s, the
`crewbox run` one 6 s): ~20 s for the file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Event, Request, Task, TaskSpec
from crewbox.personas import load_personas
from crewbox.runlog.files import FileRunLog
from tests.conftest import ROOT, crewbox_env, run_crewbox
from tests.fakes.messages_server import ErrorReply, FakeLLMServer, RecordedRequest, Reply
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
SUB_MARKER = "You are Hal, Tess's helper."
MODEL = "claude-sonnet-4-6"
RUN_ID = "r1"


@dataclass
class ScriptedModel:
    """The endpoint's brain: ``steps`` (content blocks, stop reason) answer the persona's
    calls in order; ``ledger`` sums every token it billed."""

    steps: list[tuple[list[dict[str, Any]], str]]
    ledger: dict[str, int] = field(
        default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "calls": 0}
    )
    main_calls: int = 0
    sub_steps: list[tuple[list[dict[str, Any]], str]] = field(default_factory=list)
    sub_calls: int = 0
    input_tokens: int = 100
    """What each call bills as input, plus one per 100 bytes of its request."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.body
        system = json.dumps(body.get("system"))
        with self.lock:
            if SUB_MARKER in system and self.sub_steps:
                content, stop = self.sub_steps.pop(0)
                self.sub_calls += 1
            elif MARKER in system and self.steps:
                content, stop = self.steps.pop(0)
                self.main_calls += 1
            else:
                content, stop = [{"type": "text", "text": "Done."}], "end_turn"
            usage = {
                "input_tokens": self.input_tokens + len(json.dumps(body)) // 100,
                "output_tokens": 7,
            }
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
    server: FakeLLMServer,
    tmp_path: Path,
    prompts: Path,
    timeout_s: int = 60,
    budget_usd: Decimal | None = None,
    run_log: FileRunLog | None = None,
    **settings: Any,
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
        run_id=RUN_ID,
        spec=TaskSpec(id="t1", persona="tess", title="T", instructions="Go.", timeout_s=timeout_s),
        request_text="A test",
        budget_usd=budget_usd,
    )
    events: list[Event] = []
    llm = make_client(cfg, persona="tess")
    result = TaskRunner(cfg, tess, llm, "test:1", run_log=run_log)(task, events.append)
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
        assert KEY in request.headers.get("x-api-key", "") + request.headers.get(
            "authorization", ""
        )


def live_run_log(tmp_path: Path) -> tuple[FileRunLog, str]:
    """A run log with a live run owned by this test (budgets and cancel need one)."""
    log = FileRunLog(tmp_path / "results")
    request = Request(text="A test")
    log.create(request)
    assert log.acquire(request.run_id, "test-owner", ttl_s=300)
    return log, request.run_id


def wait_for_file(path: Path, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_max_turns_stops_it(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, brain = model_server
    brain.steps = [
        ([tool("Write", 1, file_path="a.md", content="a\n")], "tool_use"),
        ([tool("Write", 2, file_path="b.md", content="b\n")], "tool_use"),
        ([text("Never reached.")], "end_turn"),
    ]
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path, extra="maxTurns: 1\n"))

    assert result.status == "failed"
    assert "stopped after 1 turns" in (result.error or "")
    assert brain.main_calls == 1
    assert_ledger(result, brain)


def test_timeout_cuts_it_and_ends_its_process_group(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, brain = model_server
    brain.steps = [([tool("Bash", 1, command="echo $$ > shell.pid; sleep 120")], "tool_use")]
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path), timeout_s=6, allow_bash=True)

    assert result.status == "failed"
    assert "timed out after 6s" in (result.error or "")
    shell_pid = int((tmp_path / "results/r1/tess/t1/shell.pid").read_text())
    assert gone(shell_pid)  # the CLI's whole process group ended with it
    assert_ledger(result, brain)


def test_cancel_interrupts_it(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path, monkeypatch: Any
) -> None:
    import tests.integration.test_claude_code_engine as me

    server, brain = model_server
    brain.steps = [([tool("Bash", 1, command="echo $$ > shell.pid; sleep 120")], "tool_use")]
    log, run_id = live_run_log(tmp_path)
    monkeypatch.setattr(me, "RUN_ID", run_id)
    pid_file = tmp_path / "results" / run_id / "tess/t1/shell.pid"

    def cancel_once_running() -> None:
        wait_for_file(pid_file)
        log.request_cancel(run_id)

    canceller = threading.Thread(target=cancel_once_running, daemon=True)
    canceller.start()
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path), run_log=log, allow_bash=True)

    assert result.status == "cancelled", result.error
    assert gone(int(pid_file.read_text()))
    assert_ledger(result, brain)


def test_a_run_budget_stops_it_within_one_call(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path, monkeypatch: Any
) -> None:
    import tests.integration.test_claude_code_engine as me

    server, brain = model_server
    brain.input_tokens = 30_000  # $0.09 a call at $3 per million input tokens
    brain.steps = [
        ([tool("Write", 1, file_path="a.md", content="a\n")], "tool_use"),
        ([tool("Write", 2, file_path="b.md", content="b\n")], "tool_use"),
        ([text("Never reached.")], "end_turn"),
    ]
    log, run_id = live_run_log(tmp_path)
    monkeypatch.setattr(me, "RUN_ID", run_id)
    result, _ = run_task(
        server, tmp_path, persona_dir(tmp_path), budget_usd=Decimal("0.095"), run_log=log
    )

    assert result.status == "budget_exceeded", result.error
    assert result.budget_scope == "run"
    assert brain.main_calls == 1  # the second call was refused before it reached the endpoint
    assert_ledger(result, brain)
    assert result.usage.cost_usd <= Decimal("0.095")


def test_bash_sees_no_key(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path, monkeypatch: Any
) -> None:
    server, brain = model_server
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # the worker's own environment has it
    monkeypatch.setenv("CREWBOX_ANTHROPIC_API_KEY", KEY)
    probe = (
        f"env; tr '\\0' '\\n' < /proc/$PPID/environ; tr '\\0' '\\n' < /proc/{os.getpid()}/environ; "
        "cat /run/secrets/* 2>&1; cat ~/.claude.json ~/.claude/*.json 2>&1"
    )
    brain.steps = [
        ([tool("Bash", 1, command=probe)], "tool_use"),
        ([text("Looked.")], "end_turn"),
    ]
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path), allow_bash=True)

    assert result.status == "succeeded", result.error
    seen = json.dumps(server.bodies())
    assert "CLAUDE_CONFIG_DIR" in seen  # the probe ran and its output went back to the model
    assert KEY not in seen
    assert_ledger(result, brain)


def test_a_subagent_runs_through_agent_and_its_calls_are_tagged(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, brain = model_server
    prompts = persona_dir(tmp_path, tools="Read, Write, Agent")
    (prompts / "tess/agents").mkdir(parents=True)
    (prompts / "tess/agents/hal.md").write_text(
        f"---\nname: hal\ndescription: Writes the notes\ntools: Write\n---\n{SUB_MARKER}\n"
    )
    ask = {"subagent_type": "hal", "description": "notes", "prompt": "Write hal.md"}
    brain.steps = [
        ([tool("Agent", 1, **ask)], "tool_use"),
        ([text("Hal wrote it.")], "end_turn"),
    ]
    brain.sub_steps = [
        ([tool("Write", 2, file_path="hal.md", content="from hal\n")], "tool_use"),
        ([text("Wrote hal.md.")], "end_turn"),
    ]
    result, events = run_task(server, tmp_path, prompts)

    assert result.status == "succeeded", result.error
    assert [a.path for a in result.artifacts] == ["hal.md"]
    assert brain.sub_calls == 2
    assert result.usage_by_subagent["hal"].calls == 2
    tagged = [e for e in events if e.kind == "llm_call" and "tasks/hal" in e.message]
    assert len(tagged) == 2
    assert_ledger(result, brain)


def test_an_overloaded_api_fails_the_attempt_retryable_without_claude_code_retrying(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, _ = model_server
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    server.reply(ErrorReply(529, overloaded))
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path))

    assert result.status == "failed"
    assert result.retryable  # a new attempt may succeed, as with builtin
    assert len(server.requests) == 1  # neither crewbox (retries 0 here) nor Claude Code retried
    assert result.usage.calls == 0


def test_crewbox_run_with_a_claude_code_persona_end_to_end(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    """`crewbox run --plan` as a user runs it (the key in its environment): the worker
    process runs the task with Claude Code; summary.json equals the endpoint's ledger."""
    server, brain = model_server
    brain.steps = [
        ([tool("Write", 1, file_path="notes.md", content="hello\n")], "tool_use"),
        ([text("Wrote notes.md.")], "end_turn"),
    ]
    prompts = persona_dir(tmp_path)
    for role in ("orchestrator.md", "synthesizer.md"):  # the run's role prompts
        shutil.copy(ROOT / "prompts" / role, prompts)
    task = {"id": "t1", "persona": "tess", "title": "T", "instructions": "Write notes.md."}
    plan = {"request": "A test", "tasks": [task]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = crewbox_env(
        tmp_path,
        CREWBOX_PROMPTS_DIR=str(prompts),
        CREWBOX_PROVIDER="anthropic",
        ANTHROPIC_API_KEY=KEY,
        CREWBOX_ANTHROPIC_BASE_URL=server.url,
        CREWBOX_MODEL=MODEL,
        CREWBOX_LLM_MAX_RETRIES="0",
    )
    done = run_crewbox(["run", "--plan", str(tmp_path / "plan.json")], env, tmp_path)

    assert done.returncode == 0, done.stderr[-2000:]
    (summary_path,) = (tmp_path / "results").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert (summary_path.parent / "tess/t1/notes.md").read_text() == "hello\n"
    assert summary["usage_total"]["input_tokens"] == brain.ledger["input_tokens"]
    assert summary["usage_total"]["output_tokens"] == brain.ledger["output_tokens"]
    assert summary["usage_total"]["calls"] == brain.ledger["calls"]  # the synthesis's call too


def test_file_tools_stay_in_the_output_folder_and_the_workspace(
    model_server: tuple[FakeLLMServer, ScriptedModel], tmp_path: Path
) -> None:
    server, brain = model_server
    workspace = tmp_path / "workspaces/ws"
    workspace.mkdir(parents=True)
    (workspace / "brief.md").write_text("the brief\n")
    outside = tmp_path / "outside.md"
    brain.steps = [
        ([tool("Write", 1, file_path=str(outside), content="x\n")], "tool_use"),
        ([tool("Read", 2, file_path="/etc/hostname")], "tool_use"),
        ([tool("Read", 3, file_path=str(workspace / "brief.md"))], "tool_use"),
        ([tool("Write", 4, file_path="in.md", content="x\n")], "tool_use"),
        ([text("Done.")], "end_turn"),
    ]
    result, _ = run_task(server, tmp_path, persona_dir(tmp_path, extra="workspace: ws\n"))

    assert result.status == "succeeded", result.error
    assert not outside.exists()
    assert [a.path for a in result.artifacts] == ["in.md"]
    results = [json.dumps(b["messages"][-1]) for b in server.bodies()[1:]]
    assert "Permission to use Write has been denied" in results[0]
    assert "Permission to use Read has been denied" in results[1]
    assert "the brief" in results[2]
