"""`docker compose stop` of a persona mid-run, on a compose cluster of its own: the run ends
within CREWBOX_START_TIMEOUT_S plus the heartbeat timeout with the task in the dead-letter
queue and a line saying no worker of that persona is alive; after `compose start`,
`crewbox dlq retry` completes it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ChaosCluster]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    made = ChaosCluster(copy_project(tmp_path), project_name("crewbox-liveness"))
    made.extra_env.update(
        CREWBOX_START_TIMEOUT_S=str(START_TIMEOUT_S),
        CREWBOX_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
    )
    try:
        made.up({"liveness": PLAN}, STEPS)
        yield made
    finally:
        made.make("clean")


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
