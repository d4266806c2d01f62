"""Nothing lost when a process dies (embedded mode): workers and the CLI killed with SIGKILL,
Ctrl-C, leftovers of earlier runs, slow LLM calls, the dead-letter queue.

Every run goes through the real CLI as a subprocess, with one worker process per persona on
the files queue and ScriptedLLM (CREWBOX_PROVIDER=scripted) answering: it records every call
it answered to disk, our ledger of what a provider would bill. A call cut by a kill or a
timeout is not recorded (nothing billed). Each test checks summary.json against that ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.models import Event, RunSummary, Task, TaskSpec, Usage
from crewbox.queue.files import FileQueue
from crewbox.testing import recorded_calls
from tests.conftest import crewbox_env, run_crewbox, spec

pytestmark = pytest.mark.integration

WAIT_S = 60.0
"""Longest wait for a run to reach an observable state."""


class EmbeddedRun:
    """`crewbox run --plan` started as a subprocess in ``tmp``, with a scripted LLM."""

    def __init__(self, tmp: Path, plan: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
        self.tmp = tmp
        (tmp / "plan.yaml").write_text(yaml.safe_dump({"request": "req", "tasks": plan}))
        (tmp / "script.yaml").write_text(yaml.safe_dump(steps))
        self.env = crewbox_env(
            tmp,
            CREWBOX_PROVIDER="scripted",
            CREWBOX_SCRIPT_PATH=str(tmp / "script.yaml"),
            CREWBOX_SCRIPT_RECORD_DIR=str(tmp / "record"),
            CREWBOX_TASK_RETRIES="1",
        )
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *args: str) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crewbox", *args],
            env=self.env,
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def run_dir(self) -> Path:
        runs = sorted((self.tmp / "results").glob("*/request.json"))
        assert runs, "no run folder yet"
        return runs[-1].parent

    def events(self) -> list[Event]:
        path = self.run_dir() / "events.jsonl"
        if not path.exists():
            return []
        return [Event.model_validate_json(x) for x in path.read_text().splitlines() if x]

    def wait_for(self, what: Callable[[Event], bool]) -> Event:
        """The first event ``what`` accepts, waiting for it up to WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if list((self.tmp / "results").glob("*/request.json")):
                found = next((e for e in self.events() if what(e)), None)
                if found:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"no such event within {WAIT_S}s: {[e.kind for e in self.events()]}")

    def finish(self) -> tuple[int, str, str]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=WAIT_S * 2)
        return self.proc.returncode, out, err

    def summary(self) -> RunSummary:
        return RunSummary.model_validate_json((self.run_dir() / "summary.json").read_text())

    def ledger(self) -> Usage:
        return Usage.total(c.usage for c in recorded_calls(self.tmp / "record"))

    def calls_for(self, task_id: str) -> int:
        return sum(f"Task id: {task_id}\\n" in c.text for c in recorded_calls(self.tmp / "record"))


def started(task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "task_started" and e.task_id == task_id


def ended(task_id: str, kind: str = "task_succeeded") -> Callable[[Event], bool]:
    return lambda e: e.kind == kind and e.task_id == task_id


def assert_accounted(run: EmbeddedRun) -> None:
    """summary.json's totals equal what the scripted provider answered, to the token."""
    summary = run.summary()
    assert summary.usage_total == run.ledger()
    attempts = Usage.total(a.usage for tries in summary.attempts.values() for a in tries)
    assert attempts == summary.usage_by_stage["tasks"]


def worker_pid(event: Event) -> int:
    return int(str(event.data["worker"]).rpartition(":")[2])


def test_a_killed_worker_is_replaced_and_its_task_finishes(tmp_path: Path) -> None:
    run = EmbeddedRun(
        tmp_path,
        [spec("slow", "marie"), spec("other", "anga")],
        [
            {"match": "Task id: slow\\n", "delay_s": 60, "text": "never returned"},
            {"match": "Task id: slow\\n", "text": "slow done", "usage": {"input_tokens": 7}},
            {"match": "Task id: other\\n", "text": "other done"},
            {"match": "## Results", "text": "answer"},
        ],
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    first = run.wait_for(started("slow"))
    os.kill(worker_pid(first), signal.SIGKILL)
    killed_at = time.time()
    code, _out, err = run.finish()
    assert code == 0, err
    lost = next(e for e in run.events() if e.kind == "attempt_lost" and e.task_id == "slow")
    assert lost.ts_s - killed_at < 15
    summary = run.summary()
    assert [r.status for r in summary.tasks] == ["succeeded", "succeeded"]
    assert [a.status for a in summary.attempts["slow"]] == ["lost", "succeeded"]
    assert summary.ended_at_s - killed_at < 15 + 5
    assert "starting another" in err  # the supervisor replaced the dead worker
    assert_accounted(run)


def test_a_killed_run_resumes_without_calling_the_llm_again_for_what_succeeded(
    tmp_path: Path,
) -> None:
    run = EmbeddedRun(
        tmp_path,
        [spec("quick", "marie"), spec("slow", "anga"), spec("after", "fabien", ["slow"])],
        [
            {
                "match": "Task id: quick\\n",
                "tool_uses": [{"name": "Write", "input": {"file_path": "q.md", "content": "Q"}}],
            },
            {"match": "Task id: quick\\n", "text": "quick done"},
            {"match": "Task id: slow\\n", "delay_s": 60, "text": "never returned"},
            {"match": "Task id: slow\\n", "text": "slow done"},
            {"match": "Task id: after\\n", "text": "after done"},
            {"match": "## Results", "text": "answer"},
        ],
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    run.wait_for(ended("quick"))
    run.wait_for(started("slow"))
    assert run.proc is not None
    run.proc.kill()
    run.finish()
    run_id = run.run_dir().name
    status = run_crewbox(["status", run_id], run.env, cwd=tmp_path)
    assert "crewbox resume" in status.stdout and "running" not in status.stdout

    resumed = run_crewbox(["resume", run_id], run.env, cwd=tmp_path, timeout_s=WAIT_S * 2)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "answer"
    assert run.calls_for("quick") == 2  # its two calls before the kill, none after
    summary = run.summary()
    assert [r.status for r in summary.tasks] == ["succeeded"] * 3
    assert [a.status for a in summary.attempts["slow"]] == ["lost", "succeeded"]
    assert len(summary.attempts["quick"]) == 1
    assert_accounted(run)


def test_one_ctrl_c_cancels_the_run_cleanly(tmp_path: Path) -> None:
    run = EmbeddedRun(
        tmp_path,
        [spec("long", "marie"), spec("next", "anga", ["long"])],
        [
            {
                "match": "Task id: long\\n",
                "delay_s": 2,
                "tool_uses": [
                    {"name": "Write", "input": {"file_path": "part.md", "content": "part"}}
                ],
            },
            {"match": "Task id: long\\n", "text": "never reached"},
        ],
    )
    proc = run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    run.wait_for(started("long"))
    proc.send_signal(signal.SIGINT)
    code, _out, err = run.finish()
    assert code == 130, err
    summary = run.summary()
    assert summary.status == "cancelled"
    assert {r.task_id: r.status for r in summary.tasks} == {
        "long": "cancelled",
        "next": "cancelled",
    }
    assert run.calls_for("long") == 1  # stopped at its next turn
    left = [p for p in (tmp_path / "tasks").rglob("*") if p.is_file()]
    assert [p for p in left if p.parent.name != "_limits"] == []  # _limits: per credential
    assert_accounted(run)


def test_a_later_run_runs_none_of_an_earlier_runs_leftovers(tmp_path: Path) -> None:
    leftover = Task(
        run_id="20260101-000000-dead00",
        spec=TaskSpec(**spec("old", "marie")),
        request_text="an old request",
    )
    FileQueue(tmp_path / "tasks").enqueue(leftover)
    run = EmbeddedRun(
        tmp_path,
        [spec("new", "marie")],
        [
            {"match": "Task id: old\\n", "text": "the old task ran"},
            {"match": "Task id: new\\n", "text": "new done"},
            {"match": "## Results", "text": "answer"},
        ],
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    code, _out, err = run.finish()
    assert code == 0, err
    assert run.calls_for("old") == 0 and run.calls_for("new") == 1
    assert list((tmp_path / "tasks" / "marie" / "pending").glob("*")) == []
    assert "discarded" in (run.run_dir() / "logs" / "marie.log").read_text()


def test_a_slow_call_is_cut_at_timeout_s_and_the_dlq_retries_it(tmp_path: Path) -> None:
    run = EmbeddedRun(
        tmp_path,
        [spec("stuck", "marie", timeout_s=2), spec("then", "anga", ["stuck"])],
        [
            {"match": "Task id: stuck\\n", "delay_s": 60, "text": "too late"},
            {"match": "Task id: stuck\\n", "text": "stuck done"},
            {"match": "Task id: then\\n", "text": "then done"},
            {"match": "## Results", "text": "answer"},
        ],
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"))
    code, _out, err = run.finish()
    assert code == 1, err
    summary = run.summary()
    stuck = summary.tasks[0]
    assert stuck.status == "failed" and "timed out after 2s" in (stuck.error or "")
    assert stuck.duration_ms < 5000
    assert summary.tasks[1].status == "skipped"
    assert_accounted(run)

    run_id = run.run_dir().name
    listed = run_crewbox(["dlq", "list"], run.env, cwd=tmp_path)
    assert "stuck" in listed.stdout and "timed out" in listed.stdout
    retried = run_crewbox(
        ["dlq", "retry", run_id, "stuck"], run.env, cwd=tmp_path, timeout_s=WAIT_S * 2
    )
    assert retried.returncode == 0, retried.stderr
    summary = run.summary()
    assert [r.status for r in summary.tasks] == ["succeeded", "succeeded"]
    assert "stuck" not in run_crewbox(["dlq", "list"], run.env, cwd=tmp_path).stdout
    assert_accounted(run)


def test_workers_option_runs_two_tasks_of_one_persona_at_the_same_time(tmp_path: Path) -> None:
    meet = {"barrier": "both", "parties": 2}
    run = EmbeddedRun(
        tmp_path,
        [spec("one", "marie"), spec("two", "marie")],
        [
            {"match": "Task id: one\\n", "text": "one done", **meet},
            {"match": "Task id: two\\n", "text": "two done", **meet},
            {"match": "## Results", "text": "answer"},
        ],
    )
    run.start("run", "--plan", str(tmp_path / "plan.yaml"), "--workers", "2")
    code, _out, err = run.finish()
    assert code == 0, err  # the barrier only opens when both calls run at once
    one, two = run.summary().tasks
    assert one.worker != two.worker
    assert max(one.started_at_s, two.started_at_s) < min(one.ended_at_s, two.ended_at_s)
