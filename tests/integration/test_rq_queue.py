"""The rq backend against a real Redis, workers in-process (RQ SimpleWorker in threads)."""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from crewbox.config import Settings
from crewbox.models import Event, Plan, Request, Result, Task, TaskSpec
from crewbox.personas import load_personas, load_role_prompt
from crewbox.queue.rq import JOB_TIMEOUT_MARGIN_S, RQQueue
from crewbox.redis_client import connect
from crewbox.runlog.files import FileRunLog
from crewbox.runlog.mirror import MirroredRunLog
from crewbox.runlog.redis import RedisRunLog
from crewbox.store import sha256_hex
from crewbox.testing import ScriptedLLM
from orchestrator.service import Orchestrator
from tests.conftest import ROOT, spec
from tests.integration.conftest import acl_password
from worker.service import TaskRunner

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, redis_url: str, **kw: Any) -> Settings:
    return Settings(
        provider="scripted",
        queue="rq",
        redis_url=redis_url,
        prompts_dir=ROOT / "prompts",
        workspaces_dir=ROOT / "workspaces",
        results_dir=tmp_path / "results",
        work_dir=tmp_path / "work",
        task_retries=0,
        **kw,
    )


def start_workers(settings: Settings, llm: ScriptedLLM, names: list[str]) -> threading.Event:
    """One in-process RQ worker thread per persona (daemon threads; stopped by the event)."""
    stop = threading.Event()
    personas = load_personas(settings.prompts_dir)
    for name in names:
        queue = RQQueue.from_settings(settings)
        runner = TaskRunner(
            settings, personas[name], llm, f"host-{name}:1", run_log=RedisRunLog(connect(settings))
        )
        threading.Thread(
            target=queue.serve,
            args=(name, runner),
            daemon=True,
            kwargs={"worker_id": f"host-{name}", "stop": stop},
        ).start()
    return stop


def orchestrator_for(settings: Settings, llm: ScriptedLLM, events: list[Event]) -> Orchestrator:
    return Orchestrator(
        settings,
        llm,
        RQQueue.from_settings(settings),
        load_personas(settings.prompts_dir),
        load_role_prompt(settings.prompts_dir, "orchestrator"),
        load_role_prompt(settings.prompts_dir, "synthesizer"),
        MirroredRunLog(RedisRunLog(connect(settings)), FileRunLog(settings.results_dir)),
        on_event=events.append,
    )


def test_run_over_rq_carries_artifacts_back_and_checks_sha256(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = settings_for(tmp_path, redis_url)
    llm = ScriptedLLM(
        [
            {
                "match": "Task id: a",
                "tool_uses": [
                    {"name": "Write", "input": {"file_path": "out/a.md", "content": "A!"}}
                ],
            },
            {"match": "Task id: a", "text": "wrote a"},
            {"match": "Task id: b", "text": "b read: wrote a"},
            {"match": "## Results", "text": "final answer"},
        ]
    )
    stop = start_workers(settings, llm, ["marie", "anga"])
    events: list[Event] = []
    plan = Plan.model_validate({"tasks": [spec("a", "marie"), spec("b", "anga", ["a"])]})
    try:
        summary = orchestrator_for(settings, llm, events).run(Request(text="req", plan=plan))
    finally:
        stop.set()
    assert [r.status for r in summary.tasks] == ["succeeded", "succeeded"]
    run_dir = settings.results_dir / summary.run_id
    a = summary.tasks[0]
    assert a.worker == "host-marie:1"
    assert (run_dir / "marie" / "a" / "out" / "a.md").read_text() == "A!"
    assert a.artifacts[0].sha256 == sha256_hex(b"A!") and a.artifacts[0].content_b64 is None
    b_response = (run_dir / "anga" / "b" / "response.md").read_text()
    assert b_response.strip() == "b read: wrote a"
    assert not (settings.work_dir / summary.run_id / "marie" / "a").exists()  # worker cleaned up


def test_jobs_are_json_with_the_plans_timeout(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = RQQueue(redis_client)
    task = Task(run_id="r1", spec=TaskSpec(**spec("t", "marie", timeout_s=42)), request_text="req")
    queue.enqueue(task)
    job = Job.fetch("marie__r1__t__1", connection=redis_client, serializer=JSONSerializer)
    assert job.timeout == 42 + JOB_TIMEOUT_MARGIN_S
    assert job.origin == "marie"
    raw = redis_client.hget("rq:job:marie__r1__t__1", "data")
    assert raw is not None
    func, _instance, args, _kwargs = json.loads(zlib.decompress(raw))
    assert func == "crewbox:task"
    assert Task.model_validate_json(args[0]) == task


def test_task_ids_with_dots_get_valid_distinct_job_ids(redis_client: redis.Redis) -> None:
    queue = RQQueue(redis_client)
    for task_id in ("v1.2", "v1-2"):
        queue.enqueue(Task(run_id="r", spec=TaskSpec(**spec(task_id, "marie")), request_text="q"))
    ids = [j.decode() for j in redis_client.lrange("rq:queue:marie", 0, -1)]
    assert len(set(ids)) == 2 and "marie__r__v1-2__1" in ids
    assert all("." not in i for i in ids)


def test_high_priority_goes_to_the_front(redis_client: redis.Redis) -> None:
    queue = RQQueue(redis_client)
    for task_id, priority in (("n1", "normal"), ("n2", "normal"), ("h", "high")):
        queue.enqueue(
            Task(
                run_id="r",
                spec=TaskSpec(**spec(task_id, "marie", priority=priority)),
                request_text="req",
            )
        )
    order = [j.decode() for j in redis_client.lrange("rq:queue:marie", 0, -1)]
    assert order == ["marie__r__h__1", "marie__r__n1__1", "marie__r__n2__1"]


def test_oversized_artifacts_fail_the_task_with_a_clear_error(
    tmp_path: Path, redis_url: str
) -> None:
    settings = settings_for(tmp_path, redis_url, max_artifact_bytes=100)
    big = "x" * 500
    llm = ScriptedLLM(
        [
            {
                "match": "Task id: big",
                "tool_uses": [{"name": "Write", "input": {"file_path": "big.txt", "content": big}}],
            },
            {"match": "Task id: big", "text": "done"},
        ]
    )
    stop = start_workers(settings, llm, ["fabien"])
    try:
        summary = orchestrator_for(settings, llm, []).run(
            Request(text="req", plan=Plan.model_validate({"tasks": [spec("big", "fabien")]}))
        )
    finally:
        stop.set()
    (result,) = summary.tasks
    assert result.status == "failed"
    assert "CREWBOX_MAX_ARTIFACT_BYTES (100 bytes)" in (result.error or "")


def test_requests_queue_events_and_final_answer_round_trip(redis_client: redis.Redis) -> None:
    queue, log = RQQueue(redis_client), RedisRunLog(redis_client)
    request = Request(text="hello cluster")
    seen: list[str] = []

    def handle(req: Request) -> None:
        seen.append(req.text)
        log.append(Event(kind="run_started", run_id=req.run_id))
        log.append(Event(kind="run_finished", run_id=req.run_id, message="succeeded"))

    log.create(request)
    queue.submit(request)
    queue.serve_requests(handle, burst=True)
    assert seen == ["hello cluster"]
    kinds = []
    for event in log.follow(request.run_id, idle_s=0.1):
        assert event is not None
        kinds.append(event.kind)
        if event.kind == "run_finished":
            break
    assert kinds == ["run_started", "run_finished"]
    assert log.runs()[-1] == request.run_id


@pytest.mark.parametrize("queue_name", ["marie", "requests"])
def test_a_foreign_job_is_refused_before_anything_of_it_runs(
    tmp_path: Path, redis_client: redis.Redis, queue_name: str
) -> None:
    marker = tmp_path / "made-by-a-foreign-job"
    job = Queue(queue_name, connection=redis_client, serializer=JSONSerializer).enqueue(
        "os.mkdir", str(marker)
    )
    queue = RQQueue(redis_client)
    if queue_name == "requests":
        queue.serve_requests(lambda request: None, burst=True)
    else:
        queue.serve("marie", lambda task, emit: None, worker_id="w", burst=True)
    assert not marker.exists()
    job.refresh()
    assert job.get_status() == "failed"
    assert "is not crewbox's" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]


def test_a_task_for_another_persona_is_refused(redis_client: redis.Redis) -> None:
    anga_task = Task(run_id="r", spec=TaskSpec(**spec("t", "anga")), request_text="q")
    job = Queue("marie", connection=redis_client, serializer=JSONSerializer).enqueue(
        "crewbox:task", anga_task.model_dump_json()
    )
    ran: list[Task] = []
    RQQueue(redis_client).serve("marie", lambda t, e: ran.append(t), worker_id="w", burst=True)  # type: ignore[func-returns-value]
    job.refresh()
    assert ran == [] and job.get_status() == "failed"


def test_carried_artifact_with_a_wrong_sha256_is_refused(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    from crewbox.models import Artifact
    from crewbox.store import RunStore

    bad = Artifact(
        path="x.md", bytes=3, sha256="0" * 64, content_b64=base64.b64encode(b"abc").decode()
    )
    result = Result(run_id="r", task_id="t", persona="marie", status="succeeded", artifacts=[bad])
    redis_client.rpush("crewbox:run:r:inbox", result.model_dump_json())
    (received,) = RQQueue(redis_client).receive("r", timeout_s=1)
    with pytest.raises(Exception, match="does not match its sha256"):
        RunStore(tmp_path, "r").write_result(received)  # type: ignore[arg-type]


def as_user(redis_url: str, user: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, username=user, password=acl_password(user))


def test_a_personas_redis_user_reaches_only_its_own_work(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    anga_task = Task(run_id="r", spec=TaskSpec(**spec("t", "anga")), request_text="secret plan")
    RQQueue(redis_client).enqueue(anga_task)
    marie = as_user(redis_url, "marie")
    refused = [
        lambda: marie.lrange("rq:queue:anga", 0, -1),
        lambda: marie.hgetall("rq:job:anga__r__t__1"),
        lambda: marie.lrange("crewbox:run:r:inbox", 0, -1),
        lambda: marie.xrange("crewbox:run:r:events"),
        lambda: marie.keys("*"),
        lambda: Queue("requests", connection=marie, serializer=JSONSerializer).enqueue("os.getcwd"),
        lambda: Queue("anga", connection=marie, serializer=JSONSerializer).enqueue("os.getcwd"),
        lambda: marie.hset("crewbox:run:r:heartbeats:anga", "t:1", 1),
    ]
    for attempt in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert marie.rpush("crewbox:run:r:inbox", "{}") == 1  # may push; the token decides


def test_the_clients_redis_user_cannot_enqueue_tasks(redis_url: str, acl_users: list[str]) -> None:
    client = as_user(redis_url, "client")
    with pytest.raises(redis.exceptions.NoPermissionError):
        Queue("marie", connection=client, serializer=JSONSerializer).enqueue("os.getcwd")
    request = Request(text="hello", run_id="r2")
    RQQueue(client).submit(request)  # what `crewbox submit` does


def test_spend_holds_in_redis_keep_the_same_contract(redis_client: redis.Redis) -> None:
    from tests.unit.test_run_log import spend_holds_behave

    spend_holds_behave(RedisRunLog(redis_client))


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check`` every 50 ms until it is true; fail after ``timeout_s``."""
    deadline_m = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline_m, f"not true within {timeout_s}s: {check}"
        time.sleep(0.05)


def test_a_worker_asked_to_stop_puts_a_job_it_took_back_unrun(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = settings_for(tmp_path, redis_url)
    llm = ScriptedLLM([])  # any call would fail the test: the job must not run here
    stop = start_workers(settings, llm, ["marie"])
    queue = RQQueue.from_settings(settings)
    worker_waits = lambda: any(w.queue == "marie" for w in queue.workers())  # noqa: E731
    wait_until(worker_waits)
    stop.set()  # the worker is blocked waiting for a job; the next one it takes goes back
    task = Task(run_id="r1", spec=spec("a", "marie"), request_text="req", attempt=1)
    queue.enqueue(task)
    wait_until(lambda: not any(w.queue == "marie" for w in queue.workers()))
    queued = Queue("marie", connection=redis_client).job_ids
    assert queued == ["marie__r1__a__1"], "the job is queued again, for a worker that stays"
    assert llm.calls == []
