"""Chaos scenarios on the compose cluster: processes killed as an OOM kill would, Redis
restarted (at submit, mid-run, after the run ended, then the orchestrator killed) and killed,
requests submitted together. Besides results/ on the host, every run is checked in Redis
afterwards: listed, its event stream as long as events.jsonl, its summary there, and
`crewbox status` answering (:func:`redis_readable`). `make chaos` prints their table;
tests/e2e/test_chaos.py asserts on the same figures.

The cluster is a copy of the project under its own compose project name, with ScriptedLLM as
every service's LLM (the edge we do not own): each task's call takes TASK_S seconds, and
every call answered is recorded in ``chaos/record/`` on the host, the ledger that each run's
summary.json must equal, lost and superseded attempts included.

Usage: ``python -m tests.e2e.chaos`` (needs Docker with Compose v2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crewbox.models import Event, RunSummary, Usage
from crewbox.testing import recorded_calls
from tests.e2e.cluster import Cluster, compose_answers, copy_project, project_name

PROJECT = project_name("crewbox-chaos")
TASK_S = 6.0
"""How long each task's LLM call takes: long enough for a kill to land mid-task."""
SPARE_STEPS = 3
"""Scripted answers per task beyond the first, for the attempts that replace lost ones."""
WAIT_S = 180.0
"""Longest wait for one observable state of a run."""
PERSONAS = ("marie", "anga", "fabien")


def scripted_override(services: tuple[str, ...]) -> dict[str, Any]:
    """A compose override putting ``services`` on the scripted LLM: the script and the
    record of calls in the project's ``chaos/`` folder, mounted at /chaos."""
    environment = {
        "CREWBOX_PROVIDER": "scripted",
        "CREWBOX_SCRIPT_PATH": "/chaos/script.yaml",
        "CREWBOX_SCRIPT_RECORD_DIR": "/chaos/record",
    }
    return {
        "services": {
            name: {"environment": dict(environment), "volumes": ["./chaos:/chaos"]}
            for name in services
        }
    }


OVERRIDE = scripted_override(("orchestrator", *PERSONAS))


@dataclass
class Outcome:
    """One scenario's row: tasks planned, completed (succeeded), lost (did not succeed),
    duplicated (results used more than once), recovery_s (the scenario's recovery delay),
    accounted (every run's summary equals the ledger of answered calls), in_redis."""

    scenario: str
    tasks: int
    completed: int
    lost: int
    duplicated: int
    recovery_s: float
    accounted: bool
    in_redis: bool = True
    """Every run listed and readable through Redis afterwards (redis_readable)."""


class ChaosCluster(Cluster):
    """The cluster of the scenarios (see the module docstring)."""

    def __init__(self, folder: Path, project: str = PROJECT) -> None:
        super().__init__(
            folder,
            project,
            env={
                "COMPOSE_FILE": "docker-compose.yml:docker-compose.override.yml:chaos.yml",
                # A key, so `make up` does not start the local model: ScriptedLLM answers.
                "ANTHROPIC_API_KEY": "sk-chaos-unused",
            },
        )
        self.chaos = folder / "chaos"

    def up(
        self,
        plans: dict[str, list[dict[str, Any]]],
        steps: list[dict[str, Any]] | None = None,
        make_args: tuple[str, ...] = (),
    ) -> None:
        """Write ``steps`` (default: script(plans)) as the script, ``plans`` as workflows,
        and start the cluster (`make up MAKE_ARGS`, e.g. ``PERSONAS=anga``).

        Raises:
            RuntimeError: `make up` failed (its output's tail in the message).
        """
        (self.folder / "chaos.yml").write_text(yaml.safe_dump(OVERRIDE))
        for sub in ("record/steps", "record/calls"):
            (self.chaos / sub).mkdir(parents=True, exist_ok=True)
        for path in [self.chaos, *self.chaos.rglob("*")]:
            path.chmod(0o777)
        (self.chaos / "script.yaml").write_text(yaml.safe_dump(steps or script(plans)))
        for name, tasks in plans.items():
            plan = {"request": f"chaos {name}", "tasks": tasks}
            (self.folder / "workflows" / f"{name}.yaml").write_text(yaml.safe_dump(plan))
        done = self.make("up", *make_args)
        if done.returncode != 0:
            raise RuntimeError(f"make up failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def submit(self, plan_name: str) -> str:
        """Submit ``workflows/<plan_name>.yaml`` detached (as `make submit` does, in a
        one-off client container); returns the run id."""
        done = self.compose(
            "run", "--rm", "--no-deps", "-T", "client",
            "crewbox", "submit", "--plan", f"workflows/{plan_name}.yaml", "--detach",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"submit failed: {done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def events(self, run_id: str) -> list[Event]:
        """The run's events as mirrored into results/ on the host."""
        path = self.folder / "results" / run_id / "events.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Event.model_validate_json(line) for line in lines if line.strip()]

    def wait_for(self, run_id: str, what: Callable[[Event], bool]) -> Event:
        """The first event of the run ``what`` accepts.

        Raises:
            TimeoutError: none within WAIT_S.
        """
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = next((e for e in self.events(run_id) if what(e)), None)
            if found is not None:
                return found
            time.sleep(0.2)
        kinds = [e.kind for e in self.events(run_id)]
        raise TimeoutError(f"run {run_id}: no such event within {WAIT_S:.0f}s; saw {kinds}")

    def summary(self, run_id: str) -> RunSummary:
        """The run's summary once it has finished."""
        self.wait_for(run_id, lambda e: e.kind in ("run_finished", "run_failed"))
        path = self.folder / "results" / run_id / "summary.json"
        return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))

    def kill_process(self, service: str, worker: str) -> None:
        """SIGKILL the crewbox process ``worker`` (``<container host>:<pid>``) names, inside
        its container, as the kernel's OOM killer would: compose restarts the container
        (a `docker kill` would be a manual stop that compose does not restart)."""
        host, _, pid = worker.rpartition(":")
        container = next(c for c in self.containers() if host.startswith(c[:12]))
        done = subprocess.run(
            # as the worker's own uid: root in the container has no CAP_KILL
            ["docker", "exec", "--user", "10001", container, "kill", "-9", pid],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 137):
            raise RuntimeError(f"kill in {service} failed: {done.stderr}")

    def redis_cli(self, *args: str) -> str:
        """``redis-cli`` in the Redis container as the orchestrator's user; its output."""
        password = (self.folder / "secrets" / "redis" / "orchestrator.password").read_text()
        done = self.compose(
            "exec", "-T", "redis", "redis-cli", "--user", "orchestrator",
            "--pass", password.strip(), "--no-auth-warning", *args,
        )  # fmt: skip
        return done.stdout.strip()

    def wait_redis_healthy(self) -> None:
        """Until Redis answers PONG (after a restart or a start).

        Raises:
            TimeoutError: not within WAIT_S.
        """
        deadline = time.monotonic() + WAIT_S
        while self.redis_cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise TimeoutError("Redis did not come back")
            time.sleep(0.5)

    def ledger_for(self, run_id: str, request: str) -> Usage:
        """Usage of every call answered for the run: its tasks' calls name the run id, its
        synthesis names the request."""
        calls = recorded_calls(self.chaos / "record")
        synthesis = f"## Request\\n\\n{request}"
        mine = [c for c in calls if f"Run: {run_id}" in c.text or synthesis in c.text]
        return Usage.total(c.usage for c in mine)


def script(plans: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Scripted answers: per task, 1 + SPARE_STEPS answers of TASK_S each; per plan, the
    synthesis."""
    steps: list[dict[str, Any]] = []
    for tasks in plans.values():
        for task in tasks:
            answer = {
                "match": f"Task id: {task['id']}\\n",
                "delay_s": TASK_S,
                "text": f"{task['id']} done",
                "usage": {"input_tokens": 1000, "output_tokens": 100},
            }
            steps += [answer] * (1 + SPARE_STEPS)
    for name in plans:
        steps += [{"match": f"## Request\\n\\nchaos {name}", "text": f"answer of {name}"}] * 2
    return steps


def task(task_id: str, persona: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    """A plan task that takes one scripted call."""
    return {
        "id": task_id,
        "persona": persona,
        "title": task_id,
        "instructions": f"Do {task_id}.",
        "depends_on": depends_on or [],
        "timeout_s": 120,
    }


PLANS: dict[str, list[dict[str, Any]]] = {
    "chaos-worker": [task("w1", "marie"), task("w2", "anga"), task("w3", "marie", ["w1"])],
    "chaos-orchestrator": [task("o1", "marie"), task("o2", "anga"), task("o3", "fabien", ["o1"])],
    "chaos-redis": [task("r1", "marie"), task("r2", "anga"), task("r3", "fabien", ["r2"])],
    # no plan name may start another's: the ledger finds a run's synthesis by its request
    "chaos-submit": [task("s1", "marie"), task("s2", "anga", ["s1"])],
    "chaos-kill": [task("k1", "marie"), task("k2", "anga"), task("k3", "fabien", ["k1"])],
    "chaos-restart-kill": [task("x1", "marie"), task("x2", "anga"), task("x3", "fabien", ["x2"])],
    **{f"chaos-together-{i}": [task(f"t{i}", PERSONAS[i])] for i in range(3)},
}


def redis_readable(cluster: ChaosCluster, run_id: str) -> bool:
    """True when Redis lists the finished run, its stream holds as many events as its
    events.jsonl, its summary is there, and `crewbox status RUN` answers with it."""
    listed = cluster.redis_cli("ZSCORE", "crewbox:runs", run_id) != ""
    stream = cluster.redis_cli("XLEN", f"crewbox:run:{run_id}:events")
    summary = cluster.redis_cli("EXISTS", f"crewbox:run:{run_id}:summary") == "1"
    status = cluster.compose(
        "run", "--rm", "--no-deps", "-T", "client", "crewbox", "status", run_id
    )
    answered = status.returncode == 0 and f"run {run_id}: succeeded" in status.stdout
    return listed and stream == str(len(cluster.events(run_id))) and summary and answered


def outcome(cluster: ChaosCluster, scenario: str, runs: list[str], recovery_s: float) -> Outcome:
    """The row of a scenario whose runs have finished."""
    summaries = [cluster.summary(r) for r in runs]
    tasks = sum(len(s.tasks) for s in summaries)
    completed = sum(r.status == "succeeded" for s in summaries for r in s.tasks)
    ends = [
        e
        for r in runs
        for e in cluster.events(r)
        if e.kind in ("task_succeeded", "task_failed", "task_skipped", "task_cancelled")
    ]
    accounted = all(s.usage_total == cluster.ledger_for(s.run_id, s.request) for s in summaries)
    return Outcome(
        scenario=scenario,
        tasks=tasks,
        completed=completed,
        lost=tasks - completed,
        duplicated=len(ends) - tasks,
        recovery_s=round(recovery_s, 1),
        accounted=accounted,
        in_redis=all(redis_readable(cluster, r) for r in runs),
    )


FIND_ORCHESTRATOR = (
    "python -c \"import os; print(min(int(p) for p in os.listdir('/proc') if p.isdigit() "
    "and int(p) > 1 and b'crewbox\\0orchestrator' in open(f'/proc/{p}/cmdline', 'rb').read()))\""
)
"""Prints the pid of the crewbox orchestrator process inside its container (PID 1 is
docker-init; the image has no pgrep)."""


def started(task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "task_started" and e.task_id == task_id


def worker_killed(cluster: ChaosCluster) -> Outcome:
    """SIGKILL marie's worker process mid-task; recovery: kill → the task dispatched again."""
    run = cluster.submit("chaos-worker")
    first = cluster.wait_for(run, started("w1"))
    cluster.kill_process("marie", str(first.data["worker"]))
    killed = time.time()
    again = cluster.wait_for(
        run, lambda e: e.kind == "task_dispatched" and e.task_id == "w1" and e.data["attempt"] > 1
    )
    return outcome(cluster, "worker SIGKILL mid-task", [run], again.ts_s - killed)


def orchestrator_killed(cluster: ChaosCluster) -> Outcome:
    """SIGKILL the orchestrator mid-run; recovery: kill → the run taken over."""
    run = cluster.submit("chaos-orchestrator")
    cluster.wait_for(run, started("o1"))
    owner = cluster.compose("exec", "-T", "orchestrator", "sh", "-c", FIND_ORCHESTRATOR)
    cluster.compose("exec", "-T", "orchestrator", "kill", "-9", owner.stdout.split()[0])
    killed = time.time()
    resumed = cluster.wait_for(run, lambda e: e.kind == "run_resumed")
    return outcome(cluster, "orchestrator SIGKILL mid-run", [run], resumed.ts_s - killed)


def restart_redis(cluster: ChaosCluster) -> None:
    """`docker compose restart redis`, then wait for it to answer again.

    Raises:
        RuntimeError: the restart failed.
    """
    done = cluster.compose("restart", "redis")
    if done.returncode != 0:
        raise RuntimeError(f"restart redis failed: {done.stderr}")
    cluster.wait_redis_healthy()


def redis_restarted(cluster: ChaosCluster) -> Outcome:
    """`docker compose restart redis` mid-run, and again once the run ended (its events,
    summary and place in the runs list must survive both); recovery: how long the first
    restart took (Redis away), after which the run goes on where it was."""
    run = cluster.submit("chaos-redis")
    cluster.wait_for(run, started("r1"))
    began = time.time()
    restart_redis(cluster)
    recovery_s = time.time() - began
    cluster.summary(run)
    restart_redis(cluster)
    return outcome(cluster, "redis restart mid-run and after the end", [run], recovery_s)


def redis_restarted_at_submit(cluster: ChaosCluster) -> Outcome:
    """`docker compose restart redis` right after the request is submitted, while the
    orchestrator takes it and plans; recovery: the restart's duration."""
    run = cluster.submit("chaos-submit")
    began = time.time()
    restart_redis(cluster)
    return outcome(cluster, "redis restart at submit (planning)", [run], time.time() - began)


def redis_killed(cluster: ChaosCluster) -> Outcome:
    """SIGKILL Redis mid-run and start it 5 s later; recovery: kill → Redis answers."""
    run = cluster.submit("chaos-kill")
    cluster.wait_for(run, started("k1"))
    began = time.time()
    cluster.compose("kill", "-s", "SIGKILL", "redis")
    time.sleep(5)
    done = cluster.compose("start", "redis")
    if done.returncode != 0:
        raise RuntimeError(f"start redis failed: {done.stderr}")
    cluster.wait_redis_healthy()
    return outcome(cluster, "redis SIGKILL, started 5 s later", [run], time.time() - began)


def redis_restarted_then_orchestrator_killed(cluster: ChaosCluster) -> Outcome:
    """Restart Redis mid-run, then SIGKILL the orchestrator; recovery: kill → taken over."""
    run = cluster.submit("chaos-restart-kill")
    cluster.wait_for(run, started("x1"))
    restart_redis(cluster)
    owner = cluster.compose("exec", "-T", "orchestrator", "sh", "-c", FIND_ORCHESTRATOR)
    cluster.compose("exec", "-T", "orchestrator", "kill", "-9", owner.stdout.split()[0])
    killed = time.time()
    resumed = cluster.wait_for(run, lambda e: e.kind == "run_resumed")
    scenario = "redis restart, then orchestrator SIGKILL"
    return outcome(cluster, scenario, [run], resumed.ts_s - killed)


def submitted_together(cluster: ChaosCluster) -> Outcome:
    """Three requests at once; recovery column: how long the three runs overlapped."""
    with ThreadPoolExecutor(3) as pool:  # one `compose run` each: seconds on a busy host
        runs = list(pool.map(cluster.submit, [f"chaos-together-{i}" for i in range(3)]))
    summaries = [cluster.summary(r) for r in runs]
    overlap = min(s.ended_at_s for s in summaries) - max(s.started_at_s for s in summaries)
    return outcome(cluster, "3 requests at once (overlap s)", runs, overlap)


SCENARIOS = [
    worker_killed,
    orchestrator_killed,
    redis_restarted_at_submit,
    redis_restarted,
    redis_killed,
    redis_restarted_then_orchestrator_killed,
    submitted_together,
]


def run_all(folder: Path) -> list[Outcome]:
    """Copy the project to ``folder``, bring the chaos cluster up, run every scenario,
    bring it down. Returns one Outcome per scenario."""
    cluster = ChaosCluster(copy_project(folder))
    try:
        cluster.up(PLANS)
        return [scenario(cluster) for scenario in SCENARIOS]
    finally:
        cluster.make("clean")


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a Markdown table."""
    head = (
        "| scenario | tasks | completed | lost | duplicated | recovery s | accounted | in Redis |"
    )
    rows = [head, "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for o in outcomes:
        rows.append(
            f"| {o.scenario} | {o.tasks} | {o.completed} | {o.lost} | {o.duplicated} "
            f"| {o.recovery_s} | {'yes' if o.accounted else 'NO'} "
            f"| {'yes' if o.in_redis else 'NO'} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Run the scenarios and print their table (`make chaos`)."""
    if not compose_answers():
        sys.exit("chaos: needs a Docker engine with Compose v2")
    with tempfile.TemporaryDirectory(prefix="crewbox-chaos-") as tmp:
        outcomes = run_all(Path(tmp))
    print(table(outcomes))
    print(json.dumps([o.__dict__ for o in outcomes], default=str), file=sys.stderr)
    failed = any(o.lost or o.duplicated or not o.in_redis for o in outcomes)
    if os.environ.get("CHAOS_STRICT") and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
