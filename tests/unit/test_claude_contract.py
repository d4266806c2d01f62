"""A whole run (planner, multi-turn worker tasks, a sub-agent, the synthesizer) through the
real AnthropicClient and SDK against a fake Messages endpoint that enforces the Claude 5.5
contract (tests/fakes/claude_contract.py), and the same run against 4.x behaviour."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import LLMAPIError
from crewbox.llm.anthropic import AnthropicClient
from crewbox.llm.base import Message, TextBlock, ToolDef, ToolResultBlock
from crewbox.llm.factory import make_client
from crewbox.models import Request
from crewbox.personas import load_personas, load_role_prompt
from crewbox.queue.files import FileQueue
from crewbox.runlog.files import FileRunLog
from orchestrator.service import Orchestrator
from tests.conftest import ROOT
from tests.fakes.claude_contract import THINKING_TOKENS, ClaudeContract
from tests.fakes.messages_server import FakeLLMServer
from worker.service import TaskRunner

PLAN = {
    "tasks": [
        {
            "id": "class-plan",
            "persona": "marie",
            "title": "Class plan",
            "instructions": "Write the class plan to plan.md and have it checked.",
            "depends_on": [],
        },
        {
            "id": "post",
            "persona": "fabien",
            "title": "Announcement",
            "instructions": "Write the announcement to post.md.",
            "depends_on": ["class-plan"],
        },
    ]
}


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body.get("tools") or []]


def brain(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The model: the planner calls submit_plan, the synthesizer writes, each task (and the
    sub-agent) calls a tool first, marie also starts her sub-agent, then each ends."""
    names = tool_names(body)
    if "submit_plan" in names:
        return [tool_use("plan", "submit_plan", PLAN)], "tool_use"
    if not names:
        return [{"type": "text", "text": "The final answer."}], "end_turn"
    turns = sum(m["role"] == "assistant" for m in body["messages"])
    steps: list[tuple[str, dict[str, Any]]] = []
    if "Agent" in names:
        steps.append(
            (
                "Agent",
                {
                    "description": "Check the plan",
                    "prompt": "Check plan.md",
                    "subagent_type": "choreography-analyzer",
                },
            )
        )
    if "Write" in names:
        steps.append(("Write", {"file_path": "out.md", "content": "done\n"}))
    else:
        steps.append(("Grep", {"pattern": "class"}))
    if turns < len(steps):
        name, args = steps[turns]
        return [tool_use(f"t{turns}", name, args)], "tool_use"
    return [{"type": "text", "text": f"Finished after {turns} tool turns."}], "end_turn"


def tool_use(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{call_id}", "name": name, "input": args}


GENERATIONS = [
    pytest.param("4.x", "claude-sonnet-4-6", "claude-haiku-4-5", id="4.x-sonnet-4-6"),
    pytest.param("5.5", "claude-sonnet-5-5", "claude-haiku-5-5", id="5.5-sonnet-5-5"),
    pytest.param("5.5", "claude-opus-5-5", "claude-haiku-5-5", id="5.5-opus-5-5"),
]


def run_on(
    generation: str, model: str, tmp_path: Path, effort: str | None = None
) -> tuple[ClaudeContract, Any]:
    """One run of PLAN's request against a fake endpoint of ``generation``."""
    contract = ClaudeContract(generation, brain)  # type: ignore[arg-type]
    with FakeLLMServer(contract) as server:
        settings = Settings(
            provider="anthropic",
            anthropic_api_key="k",
            anthropic_base_url=server.url,
            model=model,
            effort=effort,  # type: ignore[arg-type]
            prompts_dir=ROOT / "prompts",
            workspaces_dir=ROOT / "workspaces",
            tasks_dir=tmp_path / "tasks",
            results_dir=tmp_path / "results",
            task_retries=0,
            llm_max_retries=0,
        )
        llm = make_client(settings)
        personas = load_personas(settings.prompts_dir)
        queue = FileQueue(settings.tasks_dir)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=queue.serve,
                daemon=True,
                args=(name, TaskRunner(settings, p, llm, f"test:{name}")),
                kwargs={"worker_id": f"test-{name}", "stop": stop},
            )
            for name, p in personas.items()
        ]
        for thread in threads:
            thread.start()
        try:
            orchestrator = Orchestrator(
                settings,
                llm,
                queue,
                personas,
                load_role_prompt(settings.prompts_dir, "orchestrator"),
                load_role_prompt(settings.prompts_dir, "synthesizer"),
                FileRunLog(settings.results_dir),
            )
            summary = orchestrator.run(Request(text="A beginner class and its announcement"))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
    return contract, summary


@pytest.fixture(autouse=True)
def haiku_of_the_generation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """marie's sub-agent says ``model: haiku``: the generation's Haiku."""
    params = getattr(request.node, "callspec", None)
    if params is not None and "haiku" in params.params:
        monkeypatch.setenv("ANTHROPIC_DEFAULT_HAIKU_MODEL", params.params["haiku"])


@pytest.mark.parametrize(("generation", "model", "haiku"), GENERATIONS)
def test_a_whole_run_keeps_the_contract(
    generation: str, model: str, haiku: str, tmp_path: Path
) -> None:
    contract, summary = run_on(generation, model, tmp_path)

    assert contract.errors == []
    assert [r.status for r in summary.tasks] == ["succeeded", "succeeded"], summary.tasks
    bodies = contract.requests
    planner = [b for b in bodies if "submit_plan" in tool_names(b)]
    subagent = [b for b in bodies if b["model"] == haiku]
    assert len(planner) == 1 and len(subagent) == 2  # the sub-agent's two turns
    assert sum(not tool_names(b) for b in bodies) == 1  # the synthesizer
    if generation == "5.5":
        assert planner[0]["tool_choice"] == {"type": "auto"}
        assert all(b.get("thinking") in (None, {"type": "adaptive"}) for b in bodies)
        loops = [b for b in bodies if len(b["messages"]) > 1]
        assert loops and all(b["messages"][-2]["content"][0]["type"] == "thinking" for b in loops)
        assert summary.usage_total.thinking_tokens == THINKING_TOKENS * len(bodies)
    else:
        assert planner[0]["tool_choice"] == {"type": "tool", "name": "submit_plan"}
        assert all("thinking" not in b and "output_config" not in b for b in bodies)


def test_effort_from_crewbox_effort_is_sent_where_the_model_takes_it(tmp_path: Path) -> None:
    contract, summary = run_on("5.5", "claude-sonnet-5-5", tmp_path, effort="low")
    assert contract.errors == [] and summary.tasks
    assert {b.get("output_config", {}).get("effort") for b in contract.requests} == {"low"}


@pytest.fixture
def endpoint() -> Iterator[tuple[ClaudeContract, FakeLLMServer]]:
    contract = ClaudeContract("5.5", brain)
    with FakeLLMServer(contract) as server:
        yield contract, server


READ = ToolDef(name="Read", description="Read a file", input_schema={"type": "object"})


def test_the_fake_refuses_what_the_5_5_api_refuses(
    endpoint: tuple[ClaudeContract, FakeLLMServer],
) -> None:
    """The checks the whole-run test relies on do fire: a forced tool_choice, thinking
    disabled, and a tool-loop turn with its thinking block dropped are 400s."""
    import anthropic

    contract, server = endpoint
    raw = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    ask = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError, match="forced tool use is not supported"):
        raw.messages.create(
            model="claude-opus-5-5",
            max_tokens=10,
            messages=ask,  # type: ignore[arg-type]
            tools=[READ.model_dump()],
            tool_choice={"type": "tool", "name": "Read"},
        )  # type: ignore[list-item]
    with pytest.raises(
        anthropic.BadRequestError, match=re.escape('"thinking.type.disabled" is not supported')
    ):
        raw.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=10,
            messages=ask,  # type: ignore[arg-type]
            thinking={"type": "disabled"},
        )
    client = AnthropicClient(api_key="k", model="claude-opus-5-5", base_url=server.url)
    first = client.complete(
        system=[], messages=[Message(role="user", content="Read a")], tools=[READ]
    )
    dropped = [b for b in first.content if b.type != "thinking"]
    result = ToolResultBlock(tool_use_id=first.tool_uses[0].id, content="a")
    with pytest.raises(LLMAPIError, match="Expected `thinking` or `redacted_thinking`, but found"):
        client.complete(
            system=[],
            tools=[READ],
            messages=[
                Message(role="user", content="Read a"),
                Message(role="assistant", content=list(dropped) or [TextBlock(text="x")]),
                Message(role="user", content=[result]),
            ],
        )
    assert len(contract.errors) == 3


def test_a_persona_with_effort_high_sends_it(
    endpoint: tuple[ClaudeContract, FakeLLMServer], tmp_path: Path
) -> None:
    import time

    from crewbox.personas import parse_persona
    from worker.agent import AgentSetup, LoopLimits, run_loop
    from worker.tools import select_tools
    from worker.tools.sandbox import Sandbox

    contract, server = endpoint
    persona = parse_persona("---\nname: t\ndescription: d\neffort: high\ntools: Write\n---\nx", "t")
    setup = AgentSetup(
        persona=persona,
        llm=AnthropicClient(api_key="k", model="claude-opus-5-5", base_url=server.url),
        model="claude-opus-5-5",
        tools=select_tools(persona.tools, allow_bash=False),
        sandbox=Sandbox(cwd=tmp_path),
        workspace=None,
    )
    outcome = run_loop([], "Write it", setup, LoopLimits(time.monotonic() + 30, "timed out"))
    assert outcome.error is None and outcome.turns == 2
    assert [b["output_config"] for b in contract.requests] == [{"effort": "high"}] * 2
    assert contract.errors == []


def test_the_planner_repairs_on_5_5_without_forcing_the_tool(tmp_path: Path) -> None:
    """A first plan naming an unknown persona, then a JSON plan in text: repaired through
    a tool result (thinking passed back) and read from text, with no contract error."""
    from orchestrator.plan import Planner

    answers = iter(
        [
            (
                [
                    tool_use(
                        "p1", "submit_plan", {"tasks": [{**PLAN["tasks"][0], "persona": "zed"}]}
                    )
                ],
                "tool_use",
            ),
            ([{"type": "text", "text": json.dumps({"tasks": [PLAN["tasks"][0]]})}], "end_turn"),
        ]
    )
    contract = ClaudeContract("5.5", lambda body: next(answers))
    with FakeLLMServer(contract) as server:
        llm = AnthropicClient(api_key="k", model="claude-opus-5-5", base_url=server.url)
        personas = load_personas(ROOT / "prompts")
        planner = Planner(
            llm,
            load_role_prompt(ROOT / "prompts", "orchestrator"),
            personas,
            model="claude-opus-5-5",
        )
        plan = planner.plan(Request(text="A class"), on_call=lambda usage: None)
    assert [t.id for t in plan.tasks] == ["class-plan"]
    assert contract.errors == []
    assert [b["tool_choice"] for b in contract.requests] == [{"type": "auto"}] * 2
    assert contract.requests[1]["messages"][1]["content"][0]["type"] == "thinking"
