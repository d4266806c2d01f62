"""Hostile messages pushed into a run's inbox on a real Redis, mid-run, logged in as marie
(her ACL user), with real workers in-process and ScriptedLLM: the run completes, every
hostile message is a ``message_rejected``, usage equals what the provider billed, and the
secret an artifact path points at reaches no prompt (see tests/hostile.py)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import redis

from crewbox.models import Event, Task
from crewbox.queue.rq import job_id
from crewbox.runlog.redis import run_key
from crewbox.testing import ScriptedLLM
from tests.hostile import (
    OWN,
    SECRET,
    SECRET_FILE,
    assert_contained,
    hostile_messages,
    own_result,
    plan_request,
    script,
)
from tests.integration.conftest import acl_password
from tests.integration.test_rq_queue import orchestrator_for, settings_for, start_workers

pytestmark = pytest.mark.integration


def own_task(client: redis.Redis, run_id: str) -> Task:
    """marie's task as her worker holds it (token included): the data of its RQ job."""
    probe = Task.model_validate(
        {"run_id": run_id, "request_text": "x", "spec": plan_request().plan.tasks[1].model_dump()}  # type: ignore[union-attr]
    )
    raw = client.hget(f"rq:job:{job_id(probe)}", "data")
    assert raw is not None, "marie's job is not in Redis"
    _func, _instance, args, _kwargs = json.loads(zlib.decompress(raw))
    return Task.model_validate_json(args[0])


def test_hostile_inbox_messages_mid_run_are_dropped_and_the_run_completes(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    (tmp_path / SECRET_FILE).write_text(SECRET)
    settings = settings_for(tmp_path, redis_url)
    llm = ScriptedLLM(script())
    marie = redis.Redis.from_url(redis_url, username="marie", password=acl_password("marie"))
    request = plan_request()
    events: list[Event] = []
    sent: list[int] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if event.kind == "task_started" and event.task_id == OWN and not sent:
            own = own_task(redis_client, request.run_id)
            inbox = run_key(request.run_id, "inbox")
            hostile = hostile_messages(request.run_id, own)
            for _, raw in hostile:
                marie.rpush(inbox, raw)
            marie.rpush(inbox, own_result(request.run_id, own))
            sent.append(len(hostile))

    stop = start_workers(settings, llm, ["marie", "anga"])
    orchestrator = orchestrator_for(settings, llm, [])
    orchestrator.on_event = on_event
    try:
        summary = orchestrator.run(request)
    finally:
        stop.set()
    assert sent, "the hostile messages were never pushed"
    assert_contained(summary, events, llm, settings.results_dir, sent[0])
    assert summary == orchestrator.log.summary(request.run_id)
