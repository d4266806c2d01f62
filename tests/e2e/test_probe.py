"""Isolation on the compose cluster (see tests/e2e/probe.py): everything marie tries from
inside her container, with her own credentials, is refused."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import compose_answers
from tests.e2e.probe import TRUST_ROWS, Attempt, run_probe, table

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EXPECTED = 19 + TRUST_ROWS
"""Attempts the probe makes: 9 on Redis, the egress tunnel, the forged result, the
networks, 2 secret files, the environment, /proc, 2 hosts, the Read tool; and the
untrusted messages' rows (tests/e2e/probe.py trust_attempts)."""


@pytest.fixture(scope="module")
def attempts(tmp_path_factory: pytest.TempPathFactory) -> list[Attempt]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    rows = run_probe(tmp_path_factory.mktemp("probe"))
    print(table(rows))
    return rows


ACL_ATTEMPTS = 7
"""Commands and keys marie's Redis user may not use (probe.ACL_INSIDE): EVAL, SCAN,
RANDOMKEY, INFO, PUBSUB CHANNELS, anga's limiter, anga's spend ledger."""


def test_every_attempt_from_marie_is_refused(attempts: list[Attempt]) -> None:
    allowed = [a for a in attempts if not a.refused]
    assert allowed == [], table(attempts)


def test_the_probe_made_every_attempt(attempts: list[Attempt]) -> None:
    assert len(attempts) == EXPECTED + ACL_ATTEMPTS, table(attempts)
