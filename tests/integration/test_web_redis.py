"""The run view over the cluster's run log: Redis, read as the ``web`` ACL user (its rules
from crewbox.acl), which may read runs and write nothing."""

from __future__ import annotations

import pytest
import redis
from starlette.testclient import TestClient

from crewbox.runlog.redis import RedisRunLog
from crewbox.web.app import create_app
from tests.integration.test_rq_queue import as_user
from tests.unit.test_web import RUN, T0, write_run

pytestmark = pytest.mark.integration


def test_the_web_user_sees_a_running_run_and_its_dead_letters(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    orchestrator = RedisRunLog(as_user(redis_url, "orchestrator"))
    write_run(orchestrator)
    assert orchestrator.acquire(RUN, "host:1:x")
    web = TestClient(create_app(lambda: RedisRunLog(as_user(redis_url, "web")), lambda: T0 + 10))
    runs = web.get("/")
    assert runs.status_code == 200 and f'data-run="{RUN}"' in runs.text
    page = web.get(f"/runs/{RUN}")
    assert page.status_code == 200, page.text
    assert 'id="run-status" class="status s-running">running' in page.text
    assert 'data-task="a"' in page.text and "$0.5000" in page.text
    assert "No task in the dead-letter queue" not in page.text
    assert web.get("/runs/20990101-000000-000000").status_code == 404
    assert redis_client.acl_log() == []  # the view asked for nothing it may not have
