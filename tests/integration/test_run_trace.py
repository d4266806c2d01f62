"""One trace per run: `crewbox run` (a subprocess, a worker process per persona, ScriptedLLM
behind CREWBOX_PROVIDER=scripted) exports over OTLP/HTTP, from every process, to an
in-test receiver (tests/fakes/otlp.py) named by OTEL_EXPORTER_OTLP_ENDPOINT: the production
setup path (crewbox.telemetry.setup_tracing), nothing patched.

The plan is planned (a scripted planner call), marie's task writes a file and runs two
sub-agent checks at once, anga's writes a file; the trace must be run -> plan, attempts,
synthesize; chat and tool spans under their attempt; each sub-agent's spans under its
``execute_tool Agent`` call; and the ``gen_ai.usage.*`` of the chat spans must add up to
summary.json's total. With the endpoint unreachable the same run still succeeds.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from crewbox import telemetry
from crewbox.models import RunSummary
from tests.conftest import run_crewbox, scripted_env, spec
from tests.fakes.otlp import OTLPReceiver, ReceivedSpan
from tests.integration.test_subagent_run import analyzer_steps, check

pytestmark = pytest.mark.integration

PLAN = {"tasks": [spec("choreo", "marie"), spec("tickets", "anga")]}


def script() -> list[dict[str, Any]]:
    """Planner, marie (a Write and two sub-agent checks, then her answer), anga, synthesis."""
    draft = {"file_path": "choreography.md", "content": "# Pieces\n\nkids-piece, teens-piece\n"}
    page = {"file_path": "tickets.html", "content": "<h1>Tickets</h1>\n"}
    return [
        {
            "match": "Call submit_plan",
            "usage": {"input_tokens": 900, "output_tokens": 300, "cache_write_tokens": 1200},
            "tool_uses": [{"name": "submit_plan", "input": PLAN}],
        },
        {
            "match": "Task id: choreo",
            "usage": {"input_tokens": 1200, "output_tokens": 200, "cache_read_tokens": 1200},
            "tool_uses": [
                {"name": "Write", "input": draft},
                check("kids-piece"),
                check("teens-piece"),
            ],
        },
        {"match": "Task id: choreo", "usage": {"input_tokens": 1500}, "text": "Two pieces."},
        *analyzer_steps("kids-piece", "Kids: Sami is missing."),
        *analyzer_steps("teens-piece", "Teens: Yanis jumps early."),
        {
            "match": "Task id: tickets",
            "usage": {"input_tokens": 400, "output_tokens": 50},
            "tool_uses": [{"name": "Write", "input": page}],
        },
        {"match": "Task id: tickets", "usage": {"input_tokens": 450}, "text": "Page written."},
        {
            "match": "## Results",
            "usage": {"input_tokens": 1500, "output_tokens": 200},
            "text": "ok",
        },
    ]


def run(tmp_path: Path, endpoint: str) -> RunSummary:
    env = scripted_env(tmp_path, script(), OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    proc = run_crewbox(["run", "Two recital pieces and a ticket page"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "results").iterdir()
    return RunSummary.model_validate_json((folder / "summary.json").read_text())


def by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    named: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def parent(span: ReceivedSpan, spans: list[ReceivedSpan]) -> ReceivedSpan:
    (found,) = [s for s in spans if s.span_id == span.parent_id]
    return found


def test_a_run_is_one_trace_run_plan_attempts_chat_and_tools(tmp_path: Path) -> None:
    with OTLPReceiver() as receiver:
        summary = run(tmp_path, receiver.endpoint)
        spans = list(receiver.spans)

    assert summary.status == "succeeded"
    assert len({s.trace_id for s in spans}) == 1, Counter(s.name for s in spans)
    named = by_name(spans)
    (root,) = named["invoke_workflow crewbox"]
    assert root.parent_id == "" and root.attributes[telemetry.RUN_ID] == summary.run_id
    assert root.service == "crewbox-orchestrator"
    assert parent(named["plan"][0], spans) == root
    assert parent(named["synthesize"][0], spans) == root
    for persona, task_id in (("marie", "choreo"), ("anga", "tickets")):
        (attempt,) = named[f"invoke_agent {persona}"]
        assert parent(attempt, spans) == root
        assert attempt.service == f"crewbox-worker-{persona}"
        assert attempt.attributes[telemetry.TASK_ID] == task_id
        assert attempt.attributes[telemetry.ATTEMPT] == 1
        assert attempt.attributes[telemetry.STATUS] == "succeeded"
        assert attempt.attributes[gen_ai.GEN_AI_AGENT_NAME] == persona
    marie = named["invoke_agent marie"][0]
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert {parent(c, spans).name for c in chats} == {
        "plan",
        "synthesize",
        "invoke_agent marie",
        "invoke_agent anga",
        "invoke_agent choreography-analyzer",
    }
    assert [parent(w, spans).name for w in named["execute_tool Write"]].count(marie.name) == 1
    agents = named["execute_tool Agent"]  # called by its legacy name, Task
    assert len(agents) == 2 and {parent(a, spans).span_id for a in agents} == {marie.span_id}
    subs = named["invoke_agent choreography-analyzer"]
    assert sorted(parent(s, spans).span_id for s in subs) == sorted(a.span_id for a in agents)
    for sub in subs:  # each sub-agent: its Grep and its two calls under it
        children = Counter(s.name.split(" ")[0] for s in spans if s.parent_id == sub.span_id)
        assert children == {"chat": 2, "execute_tool": 1}

    total = summary.usage_total
    sums = Counter[str]()
    for chat in chats:
        assert chat.attributes[gen_ai.GEN_AI_OPERATION_NAME] == "chat"
        for key in (
            gen_ai.GEN_AI_USAGE_INPUT_TOKENS,
            gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS,
            gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        ):
            sums[key] += chat.attributes[key]
    assert len(chats) == total.calls
    assert sums[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == (
        total.input_tokens + total.cache_read_tokens + total.cache_write_tokens
    )
    assert sums[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == total.output_tokens
    assert sums[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == total.cache_read_tokens
    assert sums[gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == total.cache_write_tokens
    cost = sum(c.attributes[telemetry.COST_USD] for c in chats)
    assert cost == pytest.approx(float(total.cost_usd))
    assert json.dumps(summary.model_dump(mode="json"))  # summary.json read whole


def test_an_unreachable_endpoint_neither_fails_nor_holds_the_run(tmp_path: Path) -> None:
    """A listening socket nobody accepts from: every export hangs until its timeout. The
    run ends succeeded all the same (export is in the background; exit waits for it at
    most crewbox.telemetry.EXIT_FLUSH_S, so run_crewbox's own timeout is never reached)."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        summary = run(tmp_path, endpoint)
    assert summary.status == "succeeded"
    assert summary.usage_total.calls == len(script())
