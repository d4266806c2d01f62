"""The rq backend's services as processes against a real Redis: an orchestrator killed with
SIGKILL mid-run is replaced by another that takes the run over; a worker killed mid-task
has its task dispatched again; requests submitted together run at the same time.

Processes run the real CLI (`crewbox orchestrator`, `crewbox worker`, `crewbox submit`),
with ScriptedLLM answering and keeping the ledger of every call it answered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from crewbox.models import Event, RunSummary, Usage
from crewbox.queue.rq import RQQueue
from crewbox.runlog.redis import RedisRunLog
from crewbox.testing import recorded_calls
from tests.conftest import crewbox_env, run_crewbox, spec
from tests.integration.conftest import acl_denials, acl_password

pytestmark = pytest.mark.integration

WAIT_S = 60.0


class Services:
    """Crewbox service processes started by a test; each is killed by its PID at the end."""

    def __init__(self, tmp: Path, redis_url: str, steps: list[dict[str, Any]]) -> None:
        self.tmp = tmp
        (tmp / "script.yaml").write_text(yaml.safe_dump(steps))
        self.env = crewbox_env(
            tmp,
            CREWBOX_PROVIDER="scripted",
            CREWBOX_SCRIPT_PATH=str(tmp / "script.yaml"),
            CREWBOX_SCRIPT_RECORD_DIR=str(tmp / "record"),
            CREWBOX_QUEUE="rq",
            CREWBOX_REDIS_URL=redis_url,
            CREWBOX_WORK_DIR=str(tmp / "work"),
            CREWBOX_TASK_RETRIES="1",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = RedisRunLog(redis.Redis.from_url(redis_url))
        self.queue = RQQueue(redis.Redis.from_url(redis_url))

    def as_user(self, user: str) -> dict[str, str]:
        """The environment of a process that logs in to Redis as ACL user ``user``."""
        return {
            **self.env,
            "CREWBOX_REDIS_USERNAME": user,
            "CREWBOX_REDIS_PASSWORD": acl_password(user),
        }

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``crewbox ARGS`` in the background, as the service's own Redis user (the
        persona for ``worker --persona P``, else ``orchestrator``)."""
        name = "-".join(args[:3]).replace("/", "_")
        user = args[2] if args[:2] == ("worker", "--persona") else "orchestrator"
        with open(self.tmp / f"{name}-{len(self.procs)}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "crewbox", *args],
                env=self.as_user(user),
                cwd=self.tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        if user != "orchestrator":  # dispatching to a persona with no worker fails at once
            self.wait_registered(user)
        return proc

    def wait_registered(self, persona: str) -> None:
        """Wait until a worker of ``persona`` is registered on its RQ queue."""
        deadline = time.monotonic() + WAIT_S
        while not self.queue.registered_workers(persona):
            assert time.monotonic() < deadline, f"no worker of {persona} registered"
            time.sleep(0.05)

    def submit(self, plan: list[dict[str, Any]], name: str = "plan") -> str:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"request": name, "tasks": plan}))
        args = ["submit", "--plan", str(path), "--detach"]
        done = run_crewbox(args, self.as_user("client"), cwd=self.tmp)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def wait_for(self, run_id: str, what: Callable[[Event], bool]) -> Event:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = next((e for e in self.log.events(run_id) if what(e)), None)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"run {run_id}: {[e.kind for e in self.log.events(run_id)]}")

    def summary(self, run_id: str) -> RunSummary:
        self.wait_for(run_id, lambda e: e.kind in ("run_finished", "run_failed"))
        summary = self.log.summary(run_id)
        assert summary is not None
        return summary

    def ledger(self) -> list[Any]:
        return recorded_calls(self.tmp / "record")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def services(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> Iterator[Any]:
    """Make Services; afterwards, no service was refused anything by Redis's ACL."""
    made: list[Services] = []

    def make(steps: list[dict[str, Any]]) -> Services:
        made.append(Services(tmp_path, redis_url, steps))
        return made[-1]

    yield make
    for s in made:
        s.stop()
    assert acl_denials(redis_client) == []


def steps_for(task_ids: list[str], delay_s: float, spare: int = 1) -> list[dict[str, Any]]:
    """Per task: ``1 + spare`` answers taking ``delay_s`` each; then the synthesis."""
    steps = [
        {"match": f"Task id: {t}\\n", "delay_s": delay_s, "text": f"{t} done"}
        for t in task_ids
        for _ in range(1 + spare)
    ]
    return steps + [{"match": "## Results", "text": "answer"} for _ in range(3)]


def started(task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "task_started" and e.task_id == task_id


def assert_accounted(services: Services, summaries: list[RunSummary]) -> None:
    total = Usage.total(s.usage_total for s in summaries)
    assert total == Usage.total(c.usage for c in services.ledger())


def test_a_killed_orchestrator_is_replaced_and_the_run_completes(services: Any) -> None:
    s: Services = services(steps_for(["a", "b", "c"], delay_s=2))
    first = s.start("orchestrator")
    for persona in ("marie", "anga"):
        s.start("worker", "--persona", persona)
    run_id = s.submit([spec("a", "marie"), spec("b", "anga"), spec("c", "marie", ["a"])])
    s.wait_for(run_id, lambda e: e.kind == "task_succeeded" and e.task_id == "a")
    first.send_signal(signal.SIGKILL)
    first.wait()
    s.start("orchestrator")
    summary = s.summary(run_id)
    assert summary.status == "succeeded", summary
    assert len(s.ledger()) and sum("Task id: a\\n" in c.text for c in s.ledger()) == 1
    kinds = [e.kind for e in s.log.events(run_id)]
    assert kinds.count("run_resumed") == 1 and kinds.count("run_finished") == 1
    assert kinds.count("task_succeeded") == 3  # no task's result used twice
    assert_accounted(s, [summary])


def test_a_killed_worker_has_its_task_dispatched_again(services: Any) -> None:
    s: Services = services(steps_for(["slow"], delay_s=3))
    s.start("orchestrator")
    s.start("worker", "--persona", "marie")
    s.start("worker", "--persona", "marie")
    run_id = s.submit([spec("slow", "marie")])
    first = s.wait_for(run_id, started("slow"))
    pid = int(str(first.data["worker"]).rpartition(":")[2])  # the supervisor's child
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    summary = s.summary(run_id)
    assert summary.status == "succeeded"
    lost = next(e for e in s.log.events(run_id) if e.kind == "attempt_lost")
    assert lost.ts_s - killed_at < 15
    assert [a.status for a in summary.attempts["slow"]] == ["lost", "succeeded"]
    assert_accounted(s, [summary])


def test_requests_submitted_together_run_at_the_same_time(services: Any) -> None:
    together = {"match": "Task id: x\\n", "text": "x done", "barrier": "x", "parties": 3}
    synthesis = {"match": "## Results", "text": "answer"}
    s: Services = services([together] * 3 + [synthesis] * 3)
    s.start("orchestrator")
    for _ in range(3):
        s.start("worker", "--persona", "marie")
    runs = [s.submit([spec("x", "marie")], name=f"req{i}") for i in range(3)]
    summaries = [s.summary(r) for r in runs]
    # the three tasks' calls meet at a barrier: only runs driven at the same time get there
    assert all(x.status == "succeeded" for x in summaries), summaries
    assert max(x.started_at_s for x in summaries) < min(x.ended_at_s for x in summaries)
    assert_accounted(s, summaries)


def test_a_stopped_orchestrator_hands_its_runs_over_at_once(services: Any) -> None:
    s: Services = services(steps_for(["h1", "h2"], delay_s=2))
    first = s.start("orchestrator")
    s.start("worker", "--persona", "marie")
    run_id = s.submit([spec("h1", "marie"), spec("h2", "marie", ["h1"])])
    s.wait_for(run_id, started("h1"))
    first.send_signal(signal.SIGTERM)  # what `docker compose stop/restart` sends
    assert first.wait(timeout=10) == 0
    assert s.log.owner(run_id) is None  # released, not left to expire
    s.start("orchestrator")
    summary = s.summary(run_id)
    assert summary.status == "succeeded"
    kinds = [e.kind for e in s.log.events(run_id)]
    assert "run_failed" not in kinds and kinds.count("run_resumed") == 1
    assert_accounted(s, [summary])


def test_two_orchestrators_drive_each_run_exactly_once(services: Any) -> None:
    s: Services = services(steps_for([f"p{i}" for i in range(4)], delay_s=0.5, spare=0))
    s.start("orchestrator")
    s.start("orchestrator")
    for persona in ("marie", "anga"):
        s.start("worker", "--persona", persona)
    runs = [s.submit([spec(f"p{i}", ("marie", "anga")[i % 2])], name=f"two{i}") for i in range(4)]
    summaries = [s.summary(r) for r in runs]
    assert all(x.status == "succeeded" for x in summaries)
    for run_id in runs:
        kinds = [e.kind for e in s.log.events(run_id)]
        assert kinds.count("run_started") == 1 and "run_resumed" not in kinds
        assert kinds.count("task_dispatched") == 1 and kinds.count("run_finished") == 1
    assert_accounted(s, summaries)


def test_a_run_budget_holds_across_cluster_workers(services: Any) -> None:
    call = {"input_tokens": 1000, "output_tokens": 100}  # $0.0045 on claude-sonnet-4-6
    ids = [f"q{i}" for i in range(12)]
    steps = [{"match": f"Task id: {t}\\n", "text": f"{t} done", "usage": call} for t in ids]
    s: Services = services([*steps, {"match": "## Results", "text": "answer", "usage": call}])
    s.env["CREWBOX_MAX_TOKENS"] = "200"
    s.start("orchestrator")
    for persona in ("marie", "anga", "marie", "anga"):
        s.start("worker", "--persona", persona)
    path = s.tmp / "budget.yaml"
    plan = [spec(t, ("marie", "anga")[i % 2]) for i, t in enumerate(ids)]
    path.write_text(yaml.safe_dump({"request": "budget", "tasks": plan}))
    args = ["submit", "--plan", str(path), "--detach", "--budget-usd", "0.02"]
    done = run_crewbox(args, s.as_user("client"), cwd=s.tmp)
    assert done.returncode == 0, done.stderr
    summary = s.summary(done.stdout.strip())
    assert summary.usage_total.cost_usd <= Decimal("0.02") and summary.budget_exceeded
    statuses = {r.status for r in summary.tasks}
    assert "succeeded" in statuses and statuses & {"budget_exceeded", "skipped"}
    assert_accounted(s, [summary])
