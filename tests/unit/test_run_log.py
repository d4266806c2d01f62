"""The run log and what is rebuilt from it: leases, replay, pending work, dead letters."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from crewbox.dlq import dead_letters
from crewbox.models import (
    AttemptInfo,
    Event,
    LLMCall,
    Plan,
    PlanReady,
    Request,
    Result,
    RunEnded,
    TaskEnded,
    Usage,
)
from crewbox.procs import process_id
from crewbox.runlog.base import RunLog, SpendHold
from crewbox.runlog.files import FileRunLog
from crewbox.store import RunStore
from orchestrator.run import pending_work, replay
from tests.conftest import spec

PLAN = Plan.model_validate(
    {"tasks": [spec("a", "marie"), spec("b", "anga", ["a"]), spec("c", "fabien", ["b"])]}
)


def ev(kind: str, payload: object = None, task: str | None = None, message: str = "") -> Event:
    persona = {"a": "marie", "b": "anga", "c": "fabien"}.get(task or "")
    return Event.of(kind, "r1", payload, task_id=task, persona=persona, message=message)  # type: ignore[arg-type]


def call(task: str, attempt: int, tokens: int) -> Event:
    usage = Usage(input_tokens=tokens, cost_usd=Decimal(tokens) / 1000, calls=1)
    return ev("llm_call", LLMCall(stage="tasks", usage=usage, attempt=attempt), task)


def history() -> list[Event]:
    """a succeeded; b's attempt 1 lost, attempt 2 in flight when the orchestrator died."""
    return [
        ev("run_started"),
        ev("plan_ready", PlanReady(plan=PLAN)),
        ev("task_dispatched", AttemptInfo(attempt=1), "a"),
        call("a", 1, 100),
        ev("task_succeeded", TaskEnded(attempt=1), "a"),
        ev("task_dispatched", AttemptInfo(attempt=1), "b"),
        call("b", 1, 50),
        ev("attempt_lost", AttemptInfo(attempt=1), "b"),
        ev("task_dispatched", AttemptInfo(attempt=2), "b"),
        call("b", 2, 70),
    ]


def store_with_a(tmp_path: Path, content: bytes = b"A") -> RunStore:
    store = RunStore(tmp_path, "r1")
    store.create(Request(run_id="r1", text="req"))
    folder = store.task_dir("marie", "a")
    folder.mkdir(parents=True)
    (folder / "a.md").write_bytes(b"A")
    from crewbox.store import list_artifacts

    result = Result(
        run_id="r1",
        task_id="a",
        persona="marie",
        status="succeeded",
        artifacts=list_artifacts(folder),
    )
    store.write_result(result)
    (folder / "a.md").write_bytes(content)
    return store


def test_replay_keeps_what_succeeded_and_counts_every_call(tmp_path: Path) -> None:
    run, notes = replay(Request(run_id="r1", text="req"), history(), store_with_a(tmp_path))
    assert set(run.kept) == {"a"} and notes == []
    assert run.spent().input_tokens == 220
    assert [a.status for a in run.attempts["b"]] == ["lost", "lost"]
    assert run.next_attempt("b") == 3
    assert run.persona_usage["anga"].input_tokens == 120


def test_replay_runs_again_a_task_whose_artifact_changed(tmp_path: Path) -> None:
    store = store_with_a(tmp_path, content=b"edited since")
    run, notes = replay(Request(run_id="r1", text="req"), history(), store)
    assert run.kept == {}
    assert "artifacts changed" in notes[0]


def test_pending_work_after_a_crash_a_finish_a_cancel_and_a_dlq_retry() -> None:
    usage = Usage()
    assert pending_work(history()) == (True, None)
    finished = [*history(), ev("run_finished", RunEnded(status="partial", usage=usage))]
    assert pending_work(finished) == (False, None)
    cancelled = [*history(), ev("run_finished", RunEnded(status="cancelled", usage=usage))]
    assert pending_work(cancelled, requested=True) == (True, None)
    retried = [*finished, ev("dlq_retried", task="b")]
    assert pending_work(retried) == (True, {"b", "c"})


def test_a_cancelled_or_failed_run_is_resumed_only_when_asked() -> None:
    cancelled = [*history(), ev("run_finished", RunEnded(status="cancelled", usage=Usage()))]
    failed = [*history(), ev("run_failed")]
    for ended in (cancelled, failed):
        assert pending_work(ended) == (False, None)  # a takeover leaves it alone
        assert pending_work(ended, requested=True) == (True, None)  # crewbox resume


def test_dead_letters_come_and_go() -> None:
    failed = [
        *history(),
        ev("task_failed", TaskEnded(attempt=2), "b", "boom"),
        ev("task_dead_lettered", AttemptInfo(attempt=2), "b", "boom"),
    ]
    (letter,) = dead_letters(failed)
    assert (letter.task_id, letter.attempts, letter.error) == ("b", 2, "boom")
    assert letter.cost_usd == Decimal("0.12")
    assert dead_letters([*failed, ev("dlq_dropped", task="b")]) == []
    assert dead_letters([*failed, ev("dlq_retried", task="b")]) == []
    again = [*failed, ev("dlq_retried", task="b"), ev("task_succeeded", TaskEnded(attempt=3), "b")]
    assert dead_letters(again) == []


def test_a_lease_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    log = FileRunLog(tmp_path)
    log.create(Request(run_id="r1", text="req"))
    me = f"{process_id()}:n1"
    assert log.acquire("r1", me) and log.owner("r1") == me
    assert not log.acquire("r1", f"{process_id()}:n2")
    log.release("r1", me)
    assert log.owner("r1") is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = process_id().split(":")[0]
    assert log.acquire("r1", f"{host}:{dead}:n3")
    assert log.owner("r1") is None  # its process is gone: expired at once
    assert log.acquire("r1", me)


def spend_holds_behave(log: RunLog) -> None:
    """The contract of RunLog.reserve_spend/settle_spend, on any implementation."""

    def hold(hold_id: str, nano: int, ttl_s: float = 60) -> SpendHold:
        return SpendHold("run", hold_id, nano, 100, ttl_s)

    assert log.reserve_spend("r", hold("h1", 60)) == "reserved"
    assert log.reserve_spend("r", hold("h2", 60)) == "busy"  # h1 in the way
    log.settle_spend("r", hold("h1", 60), 30)
    log.settle_spend("r", hold("h1", 60), 30)  # a retried settle changes nothing
    assert log.reserve_spend("r", hold("h2", 80)) == "over"  # 30 spent
    assert log.reserve_spend("r", hold("h3", 60, ttl_s=0.01)) == "reserved"
    time.sleep(0.05)  # h3's caller died: its hold expires
    assert log.reserve_spend("r", hold("h4", 60)) == "reserved"


def test_spend_holds_settle_once_and_a_dead_callers_hold_expires(tmp_path: Path) -> None:
    spend_holds_behave(FileRunLog(tmp_path))
