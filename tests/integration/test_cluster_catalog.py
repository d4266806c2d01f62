"""A catalog larger than what runs: in the cluster, a task for a persona with no worker at
all fails at once, with the line that says how to start it; the others run."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crewbox.dlq import dead_letters
from tests.conftest import run_crewbox, spec
from tests.integration.test_cluster_durability import Services, services, steps_for  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_task_for_a_persona_with_no_worker_fails_at_once_saying_how_to_start_it(
    services: Any,  # noqa: F811
) -> None:
    s: Services = services(steps_for(["m"], delay_s=0))
    s.start("orchestrator")
    s.start("worker", "--persona", "marie")  # fabien's service is not started
    began = time.time()
    run_id = s.submit([spec("m", "marie"), spec("f", "fabien")])
    summary = s.summary(run_id)
    assert {t.task_id: t.status for t in summary.tasks} == {"m": "succeeded", "f": "failed"}
    failed = next(e for e in s.log.events(run_id) if e.kind == "task_failed")
    assert failed.ts_s - began < 30  # not CREWBOX_START_TIMEOUT_S (60 s): at once
    assert 'make up PERSONAS="fabien"' in failed.message
    assert "docker compose up -d fabien" in failed.message
    assert [letter.task_id for letter in dead_letters(s.log.events(run_id))] == ["f"]
    assert [a.status for a in summary.attempts["f"]] == ["failed"]
    assert "task_dispatched" not in [e.kind for e in s.log.events(run_id) if e.task_id == "f"]


def test_crewbox_workers_names_the_personas_with_no_live_worker(services: Any) -> None:  # noqa: F811
    s: Services = services([])
    s.start("worker", "--persona", "marie")
    done = run_crewbox(["workers"], s.as_user("client"), cwd=s.tmp)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "1 of 3 personas have live workers" in lines
    assert 'no live worker: anga fabien; start them: make up PERSONAS="anga fabien"' in lines
