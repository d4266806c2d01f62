"""API errors in embedded runs, through ScriptedLLM's error steps on the production path:
retryable ones are retried by the one retry layer inside the call (the task keeps its one
attempt), others fail the task at once, and summary.json still equals the ledger."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from crewbox.llm.pricing import call_usage
from crewbox.testing import recorded_calls
from tests.conftest import spec
from tests.fakes.messages_server import DROP, ErrorReply, FakeLLMServer
from tests.integration.test_durability import EmbeddedRun, assert_accounted
from tests.unit.test_anthropic_client import message_reply

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


STORM_TASKS = 30
OK_USAGE = {"input_tokens": 1000, "output_tokens": 100}
FAULTS = {
    "429 with retry-after": ErrorReply(
        429, {"type": "error", "error": {"type": "rate_limit_error"}}, {"retry-after": "0"}
    ),
    "529 overloaded": ErrorReply(529, {"type": "error", "error": {"type": "overloaded_error"}}),
    "500": ErrorReply(500, {"type": "error", "error": {"type": "api_error"}}),
    "dropped connection": DROP,
}


def run_through_the_sdk(
    tmp_path: Path, server: FakeLLMServer, ids: list[str], **env: str
) -> tuple[EmbeddedRun, int, str]:
    """`crewbox run --plan --workers 2` of one task per id (personas in turn) on the real
    Anthropic SDK against ``server``, with ``env`` set; the run, its exit code and stderr."""
    plan = [spec(t, ("marie", "anga", "fabien")[i % 3]) for i, t in enumerate(ids)]
    run = EmbeddedRun(tmp_path, plan, [])
    run.env.update(
        CREWBOX_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="sk-storm",
        ANTHROPIC_BASE_URL=server.url,
        **env,
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"), "--workers", "2")
    code, _, err = run.finish()
    return run, code, err


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_on_every_third_call_through_the_sdk_loses_no_task(
    tmp_path: Path, fault: str
) -> None:
    """30 tasks through the real Anthropic SDK against a fake Messages endpoint whose every
    third reply is ``fault``: every task succeeds in its one attempt, the calls made are
    the answered ones plus one retry per fault, and summary.json equals the endpoint's
    ledger of answered calls."""
    ok = message_reply([{"type": "text", "text": "done"}], "end_turn", OK_USAGE)
    needed = STORM_TASKS + 1  # and the synthesis
    replies: list[Any] = []
    while sum(r is ok for r in replies) < needed:
        replies.append(FAULTS[fault] if len(replies) % 3 == 2 else ok)
    ids = [f"t{i}" for i in range(STORM_TASKS)]
    with FakeLLMServer() as server:
        server.reply(*replies)
        run, code, err = run_through_the_sdk(tmp_path, server, ids, CREWBOX_LLM_MAX_RETRIES="5")
        served = [r for r in server.requests]
    assert code == 0, err[-2000:]
    summary = run.summary()
    assert all(r.status == "succeeded" for r in summary.tasks)
    assert all(len(summary.attempts[t]) == 1 for t in ids)
    faults = sum(r is not ok for r in replies)
    assert len(served) == needed + faults and server.unexpected == 0
    per_call = call_usage("claude-sonnet-4-6", **OK_USAGE)
    assert summary.usage_total.input_tokens == needed * per_call.input_tokens
    assert summary.usage_total.cost_usd == needed * per_call.cost_usd


def test_in_embedded_mode_bash_finds_the_key_in_no_environment(tmp_path: Path) -> None:
    """The key is in the CLI's and the workers' environment; a Bash command (anga has Bash,
    --allow-bash) does not inherit it, and, for a user other than root (who reads every
    process), finds it in no /proc/<pid>/environ: crewbox's processes are non-dumpable."""
    probe = (
        "env | grep -c sk-embedded-secret; "
        "for p in /proc/[0-9]*; do grep -qa sk-embedded-secret $p/environ 2>/dev/null "
        "&& echo LEAK $p; done; echo PROBED"
    )
    bash = {"name": "Bash", "input": {"command": probe}}
    steps = [
        {"match": "Task id: b1\\n", "text": "probing", "tool_uses": [bash]},
        {"match": "Task id: b1\\n", "text": "b1 done"},
        SYNTHESIS,
    ]
    run = EmbeddedRun(tmp_path, [spec("b1", "anga")], steps)
    run.env["ANTHROPIC_API_KEY"] = "sk-embedded-secret"
    run.start("run", "--plan", str(tmp_path / "plan.yaml"), "--allow-bash")
    code, _, err = run.finish()
    assert code == 0, err
    answered = [c for c in recorded_calls(tmp_path / "record") if "PROBED" in c.text]
    output = json.dumps(answered[-1].messages[-1])
    assert '"0\\n' in output and "PROBED" in output, output  # not in its environment
    if os.geteuid() != 0:
        assert "LEAK" not in output, output


def test_a_401_on_the_planner_fails_the_run_after_one_call(tmp_path: Path) -> None:
    steps = [{"match": "submit_plan", "error": {"status": 401, "message": "invalid x-api-key"}},
             {"text": "never"}]  # fmt: skip
    run = EmbeddedRun(tmp_path, [spec("unused", "marie")], steps)
    run.start("run", "Plan a spring recital")
    code, _, err = run.finish()
    lines = [x for x in err.splitlines() if x.startswith("crewbox: error:")]
    assert code == 1 and len(lines) == 1 and "HTTP 401" in lines[0], err
    assert len(recorded_calls(tmp_path / "record")) == 1


def test_a_429_storm_lowers_the_concurrency_limit_and_it_recovers(tmp_path: Path) -> None:
    """Through the real SDK: the first calls all get 429; the credential's limit of calls
    in flight drops (events ``concurrency_changed``, in summary.json too), the circuit
    opens briefly, then successes grow the limit back; every task succeeds at once."""
    ok = message_reply([{"type": "text", "text": "done"}], "end_turn", OK_USAGE)
    ids = [f"c{i}" for i in range(12)]
    storm = [FAULTS["429 with retry-after"]] * 4
    with FakeLLMServer() as server:
        server.reply(*storm, *[ok] * (len(ids) + 1))
        run, code, err = run_through_the_sdk(
            tmp_path,
            server,
            ids,
            CREWBOX_LLM_MAX_RETRIES="6",
            CREWBOX_LLM_MAX_CONCURRENCY="4",
            CREWBOX_LLM_CIRCUIT_FAILURES="3",
            CREWBOX_LLM_CIRCUIT_COOLDOWN_S="1",
        )
    assert code == 0, err[-2000:]
    summary = run.summary()
    assert all(r.status == "succeeded" for r in summary.tasks)
    assert all(len(summary.attempts[t]) == 1 for t in ids)
    changes = summary.concurrency_changes
    assert any(c.new_limit < c.old_limit for c in changes), changes
    lowest = min(c.new_limit for c in changes)
    assert lowest < 4 and changes[-1].new_limit > lowest, changes
    events = [e for e in run.events() if e.kind == "concurrency_changed"]
    assert len(events) == len(changes)
