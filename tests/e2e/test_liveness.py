"""`docker compose stop` of a persona mid-run, on a compose cluster of its own: the run ends
within CREWBOX_START_TIMEOUT_S plus the heartbeat timeout with the task in the dead-letter
queue and a line saying no worker of that persona is alive; after `compose start`,
`crewbox dlq retry` completes it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.chaos import ChaosCluster, task
from tests.e2e.cluster import compose_answers, copy_project, project_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

START_TIMEOUT_S = 20
HEARTBEAT_TIMEOUT_S = 10
SLACK_S = 15.0
"""Checks run every few seconds, and RQ calls a killed worker dead 20 s after its last
heartbeat (crewbox.queue.rq_worker.WORKER_TTL_S), which the heartbeat timeout mostly covers."""

PLAN = [task("slow", "marie"), task("quick", "anga")]
STEPS = [
    # the first attempt of slow is stopped mid-call; the dlq retry's answers at once
    {"match": "Task id: slow\\n", "delay_s": 120, "text": "slow done (never)"},
    {"match": "Task id: slow\\n", "text": "slow done"},
    {"match": "Task id: quick\\n", "text": "quick done"},
    *[{"match": "## Request\\n\\nchaos liveness", "text": "answer"}] * 2,
]


FROZEN_PLAN = [task("frozen", "marie")]
FROZEN_STEPS = [
    {"match": "Task id: frozen\\n", "delay_s": 120, "text": "frozen done (never)"},
    {"match": "Task id: frozen\\n", "text": "frozen done"},
    {"match": "## Request\\n\\nchaos frozen", "text": "answer"},
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    folder = copy_project(tmp_path_factory.mktemp("liveness"))
    made = ChaosCluster(folder, project_name("crewbox-liveness"))
    made.extra_env.update(
        CREWBOX_START_TIMEOUT_S=str(START_TIMEOUT_S),
        CREWBOX_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
    )
    try:
        made.up({"liveness": PLAN, "frozen": FROZEN_PLAN}, [*FROZEN_STEPS, *STEPS])
        yield made
    finally:
        made.make("clean")


def test_a_frozen_worker_is_killed_by_its_supervisor_and_its_container_restarted(
    cluster: ChaosCluster,
) -> None:
    run = cluster.submit("frozen")
    first = cluster.wait_for(run, lambda e: e.kind == "task_started" and e.task_id == "frozen")
    host, _, pid = str(first.data["worker"]).rpartition(":")
    container = next(c for c in cluster.containers() if host.startswith(c[:12]))
    status = cluster.docker("exec", container, "cat", f"/proc/{pid}/status")
    supervisor = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid"))
    as_tool = ["exec", "--user", "10001", container, "kill", "-STOP"]
    with pytest.raises(RuntimeError, match="not permitted"):  # a tool cannot stop it
        cluster.docker(*as_tool, supervisor)
    cluster.docker(*as_tool, pid)  # what a hostile tool did to its own worker
    summary = cluster.summary(run)
    assert [a.status for a in summary.attempts["frozen"]] == ["lost", "succeeded"]
    restarts = cluster.docker("inspect", "-f", "{{.RestartCount}}", container)
    assert int(restarts) >= 1


def test_a_stopped_persona_ends_the_run_with_its_task_in_the_dlq_and_dlq_retry_finishes_it(
    cluster: ChaosCluster,
) -> None:
    run = cluster.submit("liveness")
    cluster.wait_for(run, lambda e: e.kind == "task_started" and e.task_id == "slow")
    stop = cluster.compose("stop", "marie")
    assert stop.returncode == 0, stop.stderr
    stopped = time.time()
    ended = cluster.wait_for(run, lambda e: e.kind in ("run_finished", "run_failed"))
    print(f"the run ended {ended.ts_s - stopped:.1f}s after marie stopped")
    assert ended.ts_s - stopped < START_TIMEOUT_S + HEARTBEAT_TIMEOUT_S + SLACK_S
    seen = "\n".join(f"{e.kind} {e.task_id} {e.message[:300]}" for e in cluster.events(run))
    failed = [e for e in cluster.events(run) if e.kind == "task_failed"]
    assert [e.task_id for e in failed] == ["slow"], seen
    assert "no worker of persona marie is alive" in failed[0].message
    listed = client(cluster, "dlq", "list", run)
    assert "slow" in listed.stdout, listed.stdout + listed.stderr

    assert cluster.compose("start", "marie").returncode == 0
    retried = client(cluster, "dlq", "retry", run, "slow", timeout_s=300)
    assert retried.returncode == 0, retried.stdout[-2000:] + retried.stderr[-2000:]
    summary = cluster.summary(run)
    assert {t.task_id: t.status for t in summary.tasks} == {
        "slow": "succeeded",
        "quick": "succeeded",
    }
    assert "slow" not in client(cluster, "dlq", "list", run).stdout


def client(
    cluster: ChaosCluster, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``crewbox ARGS`` in a one-off client container (as `make` targets run it)."""
    return cluster.compose(
        "run", "--rm", "--no-deps", "-T", "client", "crewbox", *args, timeout_s=timeout_s
    )
