"""Nothing waits for ever, on the rq backend against a real Redis: a job Redis lost is
dispatched again, an attempt no worker of its persona starts ends in the DLQ."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis
from rq import Queue

from crewbox.dlq import dead_letters
from crewbox.models import AttemptInfo, Event, Plan, Request, RunSummary, Task
from crewbox.queue.rq import RQQueue, job_id
from crewbox.testing import ScriptedLLM
from tests.conftest import spec
from tests.integration.test_rq_queue import orchestrator_for, settings_for, start_workers

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(redis_url: str) -> str:
    """Database 1 of the test Redis: worker threads of these tests that are still stopping
    can never take a job of another module's tests (database 0)."""
    return redis_url.rsplit("/", 1)[0] + "/1"


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    """A client on database 1, flushed."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


def a_task(task_id: str = "a", persona: str = "marie") -> Task:
    plan = Plan.model_validate({"tasks": [spec(task_id, persona)]})
    return Task(run_id="r1", spec=plan.tasks[0], request_text="req", context="")


def wait_for(check: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_waiting_sees_a_job_on_its_queue_and_not_one_redis_lost(
    redis_client: redis.Redis,
) -> None:
    queue = RQQueue(redis_client)
    kept, lost = a_task("a"), a_task("b")
    queue.enqueue(kept)
    queue.enqueue(lost)
    Queue("marie", connection=redis_client).remove(job_id(lost))  # as a restart may
    assert queue.waiting([kept, lost]) == {kept.attempt_key}
    queue.beat(lost)  # a started attempt counts too
    assert queue.waiting([kept, lost]) == {kept.attempt_key, lost.attempt_key}


def test_live_workers_counts_the_personas_serving_workers(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = settings_for(tmp_path, redis_url)  # anga: no other test serves it
    queue = RQQueue(redis_client)
    assert queue.live_workers("anga") == 0
    stop = start_workers(settings, ScriptedLLM([]), ["anga"])
    try:
        wait_for(lambda: queue.live_workers("anga") == 1)
        assert queue.live_workers("fabien") == 0
    finally:
        stop.set()


def test_a_job_redis_lost_is_dispatched_again_once(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = settings_for(tmp_path, redis_url, heartbeat_timeout_s=3.0)
    settings = settings.model_copy(update={"task_retries": 1})
    llm = ScriptedLLM(
        [{"match": "Task id: a", "text": "done a"}, {"match": "## Results", "text": "answer"}]
    )
    events: list[Event] = []
    orchestrator = orchestrator_for(settings, llm, events)
    enqueue = orchestrator.queue.enqueue

    def lossy(task: Task) -> None:  # the first attempt's job vanishes, as in a Redis restart
        if task.attempt == 1:  # lost before any worker could take it (enqueue-then-remove
            return  # would race a waiting worker)
        enqueue(task)

    orchestrator.queue.enqueue = lossy  # type: ignore[method-assign]
    stop = start_workers(settings, llm, ["marie"])
    try:
        plan = Plan.model_validate({"tasks": [spec("a", "marie")]})
        summary = orchestrator.run(Request(text="req", plan=plan))
    finally:
        stop.set()
    assert summary.status == "succeeded"
    assert [e.kind for e in events].count("task_dispatched") == 2
    assert any("no longer on marie's queue" in e.message for e in events)


def test_no_live_worker_of_the_persona_ends_the_attempt_in_the_dlq(  # (fabien: no test starts one)
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = settings_for(tmp_path, redis_url, heartbeat_timeout_s=3.0, start_timeout_s=2.0)
    llm = ScriptedLLM([])
    events: list[Event] = []
    orchestrator = orchestrator_for(settings, llm, events)
    plan = Plan.model_validate({"tasks": [spec("a", "fabien")]})
    began = time.monotonic()
    summary = orchestrator.run(Request(text="req", plan=plan))
    assert time.monotonic() - began < 15
    assert summary.status == "failed"
    (letter,) = dead_letters(orchestrator.log.events(summary.run_id))
    assert "no worker of persona fabien is alive" in letter.error
    assert redis_client.llen("rq:queue:fabien") == 0  # withdrawn: a later worker never runs it


def test_a_started_attempt_whose_heartbeat_redis_lost_is_not_waited_for(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """A worker took the job and said so, then died while Redis lost its heartbeat: the
    attempt is lost and dispatched again, not waited for (fabien: no test starts one)."""
    settings = settings_for(tmp_path, redis_url, heartbeat_timeout_s=3.0, start_timeout_s=2.0)
    settings = settings.model_copy(update={"task_retries": 1})
    events: list[Event] = []
    orchestrator = orchestrator_for(settings, ScriptedLLM([]), events)
    plan = Plan.model_validate({"tasks": [spec("a", "fabien")]})
    done: list[RunSummary] = []
    driver = threading.Thread(
        target=lambda: done.append(orchestrator.run(Request(text="req", plan=plan))), daemon=True
    )
    driver.start()
    wait_for(lambda: redis_client.llen("rq:queue:fabien") == 1)
    ghost = redis_client.lpop("rq:queue:fabien")  # taken by a worker that then died
    assert ghost is not None
    run_id = next(e.run_id for e in events)
    started = Event.of(
        "task_started",
        run_id,
        AttemptInfo(attempt=1, worker="ghost:1"),
        task_id="a",
        persona="fabien",
    )
    RQQueue(redis_client).push(run_id, started)
    driver.join(30)
    assert not driver.is_alive(), [e.kind for e in events]
    lost = next(e for e in events if e.kind == "attempt_lost")
    assert "no longer on fabien's queue" in lost.message
    assert [a.status for a in done[0].attempts["a"]] == ["lost", "lost"]
