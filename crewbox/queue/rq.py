"""The ``rq`` TaskQueue backend: Redis + RQ, for the cluster.

Keys and queues (``<run>`` is a run_id; the run log's keys are in crewbox.runlog.redis)::

    RQ queue  <persona>                      tasks of that persona (high priority at front)
    RQ job    <persona>__<run>__<task>__<n>  one attempt (job ids name the persona first)
    RQ queue  requests                       requests for the orchestrator service
    list      crewbox:run:<run>:inbox        results and worker events, for the orchestrator
    hash      crewbox:run:<run>:heartbeats:<persona>
                                             attempt key -> last heartbeat (Unix s) of
                                             that persona's attempts (its ACL user may
                                             write only its own)

Jobs carry JSON (RQ's JSONSerializer), never pickle, and name ``crewbox:task``,
``crewbox:request`` or ``crewbox:resume``: a CrewboxWorker runs only those (see
crewbox.queue.rq_worker). A worker is an RQ SimpleWorker: one job at a time in its own
process, no fork (scale containers for concurrency). Retries are the orchestrator's: it
re-dispatches failures marked retryable and attempts whose heartbeat stopped (their worker
died).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Collection

import redis
from pydantic import BaseModel, Field
from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from crewbox.config import Settings
from crewbox.models import Request, Result, Task
from crewbox.queue.base import (
    Inbound,
    Message,
    TaskHandler,
    crashed_result,
    default_worker_id,
    heartbeat,
    parse_message,
    worker_event,
)
from crewbox.queue.rq_worker import (
    REQUEST_JOB,
    RESUME_JOB,
    TASK_JOB,
    CrewboxWorker,
    JobFunction,
    JobRefusedError,
    JobTimeoutError,
    WorkerInfo,
    parse_payload,
    registered_hostname,
    stop_when_set,
    worker_alive,
    worker_info,
    worker_name,
)
from crewbox.redis_client import CLIENT_RETRIES, SERVICE_RETRIES, call, connect, text
from crewbox.runlog.redis import RUN_TTL_S, run_key

REQUESTS_QUEUE = "requests"
JOB_TIMEOUT_MARGIN_S = 60
"""Added to a task's timeout_s for RQ's job_timeout: the agent loop stops itself first."""
REQUEST_TIMEOUT_S = 300
"""RQ job_timeout of accepting a request (the run itself goes on in the orchestrator)."""

RequestHandler = Callable[[Request], None]
ResumeHandler = Callable[[str], None]
"""Called with the run_id of a ``crewbox resume`` request."""


class ResumeRequest(BaseModel):
    """``crewbox resume RUN_ID`` in the cluster: a job on the requests queue."""

    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def job_id(task: Task) -> str:
    """``<persona>__<run_id>__<task_id>__<attempt>``; RQ job ids allow no ``.``, so a task id
    with dots has them replaced and a short hash of the original added."""
    tid = task.task_id
    if "." in tid:
        tid = tid.replace(".", "-") + "-" + hashlib.sha256(tid.encode()).hexdigest()[:8]
    return f"{task.persona}__{task.run_id}__{tid}__{task.attempt}"


def heartbeats_key(run_id: str, persona: str) -> str:
    """``crewbox:run:<run>:heartbeats:<persona>``: the heartbeats of one persona's attempts."""
    return run_key(run_id, f"heartbeats:{persona}")


class RQQueue:
    """TaskQueue over Redis + RQ; also the requests queue of the cluster."""

    def __init__(self, connection: redis.Redis, host_name: str = "") -> None:
        self.redis = connection
        self.host_name = host_name
        """The machine's name its workers register with (RQ's ``hostname`` becomes
        ``<host_name>/<container hostname>``); empty: the container's hostname alone."""

    @classmethod
    def from_settings(cls, settings: Settings, service: bool = False) -> RQQueue:
        """Connect as configured (``CREWBOX_REDIS_URL``, ``CREWBOX_REDIS_PASSWORD_FILE``,
        TLS and Sentinel settings: crewbox.redis_client.connect); ``service``: retry through
        a Redis restart (SERVICE_RETRIES)."""
        connection = connect(settings, SERVICE_RETRIES if service else CLIENT_RETRIES)
        return cls(connection, settings.host_name)

    def _queue(self, name: str) -> Queue:
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    # -- orchestrator side -------------------------------------------------------------
    def enqueue(self, task: Task) -> None:
        """Put ``task`` on its persona's RQ queue; high priority goes to the front."""
        call(
            lambda: self._queue(task.persona).enqueue(
                TASK_JOB,
                task.model_dump_json(),
                job_id=job_id(task),
                job_timeout=task.spec.timeout_s + JOB_TIMEOUT_MARGIN_S,
                result_ttl=RUN_TTL_S,
                failure_ttl=RUN_TTL_S,
                at_front=task.spec.priority == "high",
                description=f"{task.run_id}/{task.task_id}",
            )
        )

    def receive(self, run_id: str, timeout_s: float) -> list[Inbound]:
        """Results and events of ``run_id`` (BLPOP on its inbox, then what else is there),
        each parsed on its own (a bad one is a RejectedMessage, never an error)."""
        key = run_key(run_id, "inbox")
        first = call(lambda: self.redis.blpop([key], timeout=max(timeout_s, 0.01)))
        if first is None:
            return []
        rest = call(lambda: self.redis.lpop(key, count=10_000)) or []
        return [parse_message(item) for item in [first[1], *rest]]

    def heartbeats(self, run_id: str, personas: Collection[str]) -> dict[str, float]:
        """HGETALL of the run's heartbeats hash of each persona, merged."""
        pipe = self.redis.pipeline()
        for persona in sorted(set(personas)):
            pipe.hgetall(heartbeats_key(run_id, persona))
        replies = call(pipe.execute)
        return {text(k): float(v) for raw in replies for k, v in raw.items()}

    def waiting(self, tasks: list[Task]) -> set[str]:
        """Attempts whose job id is still on its persona's queue (LPOS) or whose attempt has
        a heartbeat; one round trip for all of them."""
        if not tasks:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for task in tasks:
            pipe.lpos(self._queue(task.persona).key, job_id(task))
            pipe.hexists(heartbeats_key(task.run_id, task.persona), task.attempt_key)
        replies = call(pipe.execute)
        return {
            task.attempt_key
            for task, queued, beating in zip(tasks, replies[::2], replies[1::2], strict=True)
            if queued is not None or beating
        }

    def live_workers(self, persona: str) -> int:
        """RQ workers of ``persona``'s queue whose RQ heartbeat is younger than WORKER_TTL_S
        (a stopped container's worker unregisters; a killed or frozen one goes silent)."""
        return sum(1 for w in self._workers_of(persona) if worker_alive(w))

    def registered_workers(self, persona: str) -> int:
        """RQ workers of ``persona``'s queue registered in Redis, alive or not: 0 when none
        was started, or the last one stopped cleanly (a killed one stays registered until
        its key expires)."""
        return len(self._workers_of(persona))

    def _workers_of(self, persona: str) -> list[BaseWorker]:
        return call(
            lambda: CrewboxWorker.all(
                queue=self._queue(persona), connection=self.redis, serializer=JSONSerializer
            )
        )

    def withdraw(self, tasks: list[Task]) -> list[str]:
        """LREM each attempt's job id from its queue; removed ones never started."""
        withdrawn = []
        for task in tasks:
            if call(lambda t=task: self._queue(t.persona).remove(job_id(t))):  # type: ignore[misc]
                withdrawn.append(task.attempt_key)
        return withdrawn

    def close_run(self, run_id: str, personas: Collection[str]) -> None:
        """DEL the run's inbox and its personas' heartbeats."""
        keys = [run_key(run_id, "inbox"), *(heartbeats_key(run_id, p) for p in set(personas))]
        call(lambda: self.redis.delete(*keys))

    def submit(self, request: Request) -> None:
        """Put ``request`` on the requests queue for the orchestrator service."""
        call(
            lambda: self._queue(REQUESTS_QUEUE).enqueue(
                REQUEST_JOB,
                request.model_dump_json(),
                job_id=f"request__{request.run_id}",
                job_timeout=REQUEST_TIMEOUT_S,
                result_ttl=RUN_TTL_S,
                failure_ttl=RUN_TTL_S,
                description=request.text[:100],
            )
        )

    def request_resume(self, run_id: str) -> None:
        """Ask the orchestrator service to go on with ``run_id`` (``crewbox resume``): a
        job on the requests queue (the client's Redis user may enqueue only there)."""
        call(
            lambda: self._queue(REQUESTS_QUEUE).enqueue(
                RESUME_JOB,
                ResumeRequest(run_id=run_id).model_dump_json(),
                job_id=f"request__{run_id}__resume__{secrets.token_hex(4)}",
                job_timeout=REQUEST_TIMEOUT_S,
                result_ttl=RUN_TTL_S,
                failure_ttl=RUN_TTL_S,
                description=f"resume {run_id}",
            )
        )

    # -- worker side -------------------------------------------------------------------
    def serve(
        self,
        persona: str,
        handler: TaskHandler,
        *,
        worker_id: str,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Run an RQ worker on ``persona``'s queue that calls ``handler`` for each task."""
        task_job = TaskJob(self, persona, handler, worker_id)
        worker = self._worker(persona, {TASK_JOB: task_job}, stop)
        task_job.worker = worker
        self._work(worker, burst, stop)

    def serve_requests(
        self,
        handler: RequestHandler,
        *,
        resume: ResumeHandler | None = None,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Run an RQ worker on the requests queue that calls ``handler`` for each request
        and ``resume`` (when given) with the run_id of each resume request."""

        def request_job(raw: str) -> str:
            request = parse_payload(Request, raw)
            handler(request)
            return request.run_id

        functions: dict[str, JobFunction] = {REQUEST_JOB: request_job}
        if resume is not None:

            def resume_job(raw: str) -> str:
                run_id = parse_payload(ResumeRequest, raw).run_id
                resume(run_id)
                return run_id

            functions[RESUME_JOB] = resume_job
        worker = self._worker(REQUESTS_QUEUE, functions, stop, shared=True)
        self._work(worker, burst, stop)

    def _worker(
        self,
        queue: str,
        functions: dict[str, JobFunction],
        stop: threading.Event | None,
        shared: bool = False,
    ) -> CrewboxWorker:
        worker = CrewboxWorker(
            [self._queue(queue)],
            connection=self.redis,
            name=worker_name(queue),
            serializer=JSONSerializer,
            job_functions=functions,
            stop=stop,
            shared_maintenance=shared,
        )
        worker.hostname = registered_hostname(self.host_name, worker.hostname)
        return worker

    def _work(self, worker: CrewboxWorker, burst: bool, stop: threading.Event | None) -> None:
        if stop is not None:
            threading.Thread(target=stop_when_set, args=(stop, worker), daemon=True).start()
        call(lambda: worker.work(burst=burst, logging_level="WARNING"))

    def push(self, run_id: str, message: Message) -> None:
        """RPUSH a message to the run's inbox."""
        key = run_key(run_id, "inbox")
        pipe = self.redis.pipeline()
        pipe.rpush(key, message.model_dump_json())
        pipe.expire(key, RUN_TTL_S)
        call(pipe.execute)

    def beat(self, task: Task) -> None:
        """HSET the attempt's heartbeat (errors are ignored: the next beat retries)."""
        key = heartbeats_key(task.run_id, task.persona)
        with contextlib.suppress(Exception):
            pipe = self.redis.pipeline()
            pipe.hset(key, task.attempt_key, f"{time.time():.3f}")
            pipe.expire(key, RUN_TTL_S)
            pipe.execute()

    def workers(self) -> list[WorkerInfo]:
        """Every RQ worker registered in Redis, with its queue, state and current task."""
        found = call(lambda: CrewboxWorker.all(connection=self.redis, serializer=JSONSerializer))
        return [worker_info(w, JSONSerializer) for w in found]


class TaskJob:
    """The ``crewbox:task`` job function a persona's worker carries. While a task runs it
    renews the attempt's heartbeat and, when ``worker`` is set, the RQ worker's own (RQ's
    SimpleWorker does not heartbeat during a job, so `crewbox workers` would call it dead)."""

    def __init__(self, queue: RQQueue, persona: str, handler: TaskHandler, worker_id: str) -> None:
        self.queue = queue
        self.persona = persona
        self.handler = handler
        self.worker_id = worker_id or default_worker_id()
        self.worker: CrewboxWorker | None = None

    def __call__(self, raw: str) -> str:
        """Validate the task, run the handler under a heartbeat, push the Result.

        Raises:
            JobRefusedError: the payload is not a Task of this worker's persona.
        """
        task = parse_payload(Task, raw)
        if task.persona != self.persona:
            raise JobRefusedError(f"refused: a task of {task.persona!r} on {self.persona}'s queue")
        beats = itertools.count()
        with heartbeat(lambda: self._beat(task, first=next(beats) == 0)):
            result = self._run(task)
            if result is not None:
                result = self._deliver(task, result)
        return result.status if result else "discarded"

    def _deliver(self, task: Task, result: Result) -> Result:
        """Push ``result``; when Redis refuses it (past its ``maxmemory``: OOM), push a
        failed result that says so instead (small: it fits where the big one did not), so
        the task fails with the reason instead of being waited for. Returns what was
        pushed."""
        try:
            self.queue.push(task.run_id, result)
            return result
        except redis.exceptions.ResponseError as exc:
            size = len(result.model_dump_json())
            refused = RuntimeError(f"Redis refused the result of {size} bytes ({exc})")
            failed = crashed_result(task, self.worker_id, refused, retryable=False)
            self.queue.push(task.run_id, failed)
            return failed

    def _beat(self, task: Task, first: bool) -> None:
        """The attempt's heartbeat; from the second on, the RQ worker's too (RQ itself
        heartbeats when a job starts: one Redis round trip less per task)."""
        self.queue.beat(task)
        if self.worker is not None and not first:
            with contextlib.suppress(Exception):
                self.worker.heartbeat()

    def _run(self, task: Task) -> Result | None:
        try:
            return self.handler(
                task, lambda event: self.queue.push(task.run_id, worker_event(task, event))
            )
        except JobTimeoutError:
            timeout = TimeoutError(f"job timeout ({task.spec.timeout_s}s)")
            return crashed_result(task, self.worker_id, timeout, retryable=False)
        except Exception as exc:  # report, never lose the task silently
            return crashed_result(task, self.worker_id, exc)
