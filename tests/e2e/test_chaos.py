"""Chaos on the compose cluster (see tests/e2e/chaos.py): each scenario's runs complete with
no task lost and no result used twice, the summary equals the ledger of answered calls, the
runs are listed and readable through Redis afterwards (Redis restarted at submit, mid-run,
after the end, killed, restarted then the orchestrator killed), and a killed worker's task
is dispatched again within 15 s."""

from __future__ import annotations

import pytest

from tests.e2e.chaos import Outcome, run_all, table
from tests.e2e.cluster import compose_answers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REDISPATCH_MAX_S = 15.0
"""The issue's mark: a killed worker's task is dispatched again within 15 s."""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    found = run_all(tmp_path_factory.mktemp("chaos"))
    print(table(found))
    return {KEYS[o.scenario]: o for o in found}


KEYS = {
    "worker SIGKILL mid-task": "worker",
    "orchestrator SIGKILL mid-run": "orchestrator",
    "redis restart at submit (planning)": "redis-submit",
    "redis restart mid-run and after the end": "redis",
    "redis SIGKILL, started 5 s later": "redis-kill",
    "redis restart, then orchestrator SIGKILL": "redis-orchestrator",
    "3 requests at once (overlap s)": "3",
}
"""Scenario rows (chaos.py) by a short name."""


@pytest.mark.parametrize("scenario", sorted(KEYS.values()))
def test_every_run_completes_with_nothing_lost_or_duplicated_and_accounted(
    outcomes: dict[str, Outcome], scenario: str
) -> None:
    o = outcomes[scenario]
    assert (o.completed, o.lost, o.duplicated) == (o.tasks, 0, 0), o
    assert o.accounted, o
    assert o.in_redis, o


def test_a_killed_workers_task_is_dispatched_again_within_15_s(
    outcomes: dict[str, Outcome],
) -> None:
    assert 0 < outcomes["worker"].recovery_s < REDISPATCH_MAX_S


def test_requests_submitted_together_overlap(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["3"].recovery_s > 0
