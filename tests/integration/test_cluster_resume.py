"""Going on with a cancelled or failed run in the cluster (issue 17.5): `crewbox resume` and
`crewbox dlq retry` as the client's Redis user, against a real Redis, the orchestrator
service and a worker as processes (the real CLI), ScriptedLLM answering."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crewbox.runlog.base import LEASE_TTL_S
from tests.conftest import run_crewbox, spec
from tests.integration.test_cluster_durability import (
    Services,
    services,  # noqa: F401 (fixture)
    started,
    steps_for,
)

pytestmark = pytest.mark.integration

TAKEOVER_WAIT_S = LEASE_TTL_S / 2 + 2
"""Longer than the orchestrator's takeover scan interval."""


def client(s: Services, *args: str) -> Any:
    """`crewbox ARGS` as the cluster's client (its Redis user), waiting for it to end."""
    return run_crewbox(list(args), s.as_user("client"), cwd=s.tmp, timeout_s=90)


def test_a_cancelled_run_stays_cancelled_until_crewbox_resume(services: Any) -> None:  # noqa: F811
    s: Services = services(steps_for(["a", "b"], delay_s=2))
    s.start("orchestrator")
    s.start("worker", "--persona", "marie")
    run_id = s.submit([spec("a", "marie"), spec("b", "marie", ["a"])])
    s.wait_for(run_id, started("a"))
    assert client(s, "cancel", run_id).returncode == 0
    assert s.summary(run_id).status == "cancelled"
    time.sleep(TAKEOVER_WAIT_S)  # a takeover scan must not undo the cancel
    assert "run_resumed" not in [e.kind for e in s.log.events(run_id)]
    followed = client(s, "follow", run_id)
    assert followed.returncode == 130, followed.stderr
    assert f"`crewbox resume {run_id}` (`make resume RUN={run_id}`)" in followed.stderr
    resumed = client(s, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "answer"
    summary = s.log.summary(run_id)
    assert summary is not None and summary.status == "succeeded"
    assert [e.kind for e in s.log.events(run_id)].count("run_resumed") == 1


def test_resume_of_a_finished_run_is_refused_in_one_line(services: Any) -> None:  # noqa: F811
    s: Services = services(steps_for(["a"], delay_s=0, spare=0))
    s.start("orchestrator")
    s.start("worker", "--persona", "marie")
    run_id = s.submit([spec("a", "marie")])
    assert s.summary(run_id).status == "succeeded"
    proc = client(s, "resume", run_id)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "has finished; nothing to resume" in line


def test_dlq_retry_runs_a_failed_task_again_in_the_cluster(services: Any) -> None:  # noqa: F811
    fail = {"match": "Task id: x\\n", "error": {"status": 400, "message": "bad request"}}
    ok = {"match": "Task id: x\\n", "text": "x done"}
    s: Services = services([fail, ok, {"match": "## Results", "text": "answer"}])
    s.start("orchestrator")
    s.start("worker", "--persona", "marie")
    run_id = s.submit([spec("x", "marie")])
    assert s.summary(run_id).status == "failed"
    listed = client(s, "dlq", "list", run_id)
    assert "x" in listed.stdout and "bad request" in listed.stdout, listed.stderr
    retried = client(s, "dlq", "retry", run_id, "x")
    assert retried.returncode == 0, retried.stderr
    summary = s.log.summary(run_id)
    assert summary is not None and summary.status == "succeeded"
    assert client(s, "dlq", "list", run_id).stdout.strip().startswith("no task")
