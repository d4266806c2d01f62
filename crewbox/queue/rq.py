"""The ``rq`` TaskQueue backend: Redis + RQ, for the cluster.

Keys and queues (``<run>`` is a run_id)::

    RQ queue  <persona>                  tasks of that persona (high priority enqueued at front)
    RQ queue  requests                   requests for the orchestrator service
    list      crewbox:run:<run>:inbox    results and worker events, for the orchestrator
    stream    crewbox:run:<run>:events   every event of the run, for `crewbox submit` to follow
    string    crewbox:run:<run>:final    the synthesis (final.md)
    string    crewbox:run:<run>:summary  the RunSummary JSON
    zset      crewbox:runs               run ids by start time

Jobs carry JSON (RQ's JSONSerializer), never pickle. A worker is an RQ ``SimpleWorker``: it
runs jobs one at a time in its own process, no fork (one worker per container; scale
containers for concurrency); RQ enforces ``job_timeout`` (the task's ``timeout_s`` plus a
margin). Retries are the orchestrator's (as with the files backend): it re-dispatches failures
marked retryable and tasks whose result never came (a worker container died).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException, TimerDeathPenalty
from rq.worker.base import BaseWorker

from crewbox.config import Settings
from crewbox.errors import QueueError, RunNotFoundError
from crewbox.models import Event, Request, Result, RunSummary, Task
from crewbox.queue.base import (
    MESSAGE_ADAPTER,
    Message,
    TaskHandler,
    crashed_result,
    default_worker_id,
)

REQUESTS_QUEUE = "requests"
RUN_TTL_S = 7 * 24 * 3600
"""How long a run's keys stay in Redis after its last write (7 days)."""
JOB_TIMEOUT_MARGIN_S = 60
"""Added to a task's timeout_s for RQ's job_timeout: the agent loop stops itself first."""
REQUEST_TIMEOUT_S = 6 * 3600
"""RQ job_timeout of a whole request on the orchestrator (6 hours)."""
EVENTS_MAXLEN = 100_000
"""Cap on one run's event stream (approximate trimming)."""

RequestHandler = Callable[[Request], None]
_serving: dict[str, Any] = {}
"""What this process's RQ workers run: task handlers by persona, the request handler and
the Redis connection (set by serve and serve_requests)."""


def job_id(task: Task) -> str:
    """``<run_id>__<task_id>__<attempt>``; RQ job ids allow no ``.``, so a task id with dots
    has them replaced and a short hash of the original added (still unique in the run)."""
    tid = task.task_id
    if "." in tid:
        tid = tid.replace(".", "-") + "-" + hashlib.sha256(tid.encode()).hexdigest()[:8]
    return f"{task.run_id}__{tid}__{task.attempt}"


def run_key(run_id: str, part: str) -> str:
    """The Redis key of one part of a run (inbox, events, final, summary)."""
    return f"crewbox:run:{run_id}:{part}"


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url``, with the password from its file if set."""
    password = None
    if settings.redis_password_file and settings.redis_password_file.is_file():
        password = settings.redis_password_file.read_text().strip() or None
    return redis.Redis.from_url(settings.redis_url, password=password, health_check_interval=30)


class RQQueue:
    """TaskQueue over Redis + RQ; also the requests queue and the run log of the cluster."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    @classmethod
    def from_settings(cls, settings: Settings) -> RQQueue:
        """Connect as configured (``CREWBOX_REDIS_URL``, ``CREWBOX_REDIS_PASSWORD_FILE``)."""
        return cls(connect(settings))

    def _queue(self, name: str) -> Queue:
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    # -- tasks -------------------------------------------------------------------------
    def enqueue(self, task: Task) -> None:
        """Put ``task`` on its persona's RQ queue; high priority goes to the front."""
        self._call(
            lambda: self._queue(task.persona).enqueue(
                "crewbox.queue.rq.perform_task",
                task.model_dump_json(),
                job_id=job_id(task),
                job_timeout=task.spec.timeout_s + JOB_TIMEOUT_MARGIN_S,
                result_ttl=RUN_TTL_S,
                failure_ttl=RUN_TTL_S,
                at_front=task.spec.priority == "high",
                description=f"{task.run_id}/{task.task_id}",
                meta={"run_id": task.run_id, "task_id": task.task_id, "persona": task.persona},
            )
        )

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
        _serving.setdefault("task_handlers", {})[persona] = handler
        _serving["redis"] = self.redis
        self._work(persona, worker_id, burst, stop)

    def receive(self, run_id: str, timeout_s: float) -> list[Message]:
        """Results and events of ``run_id`` (BLPOP on its inbox, then what else is there)."""
        key = run_key(run_id, "inbox")
        first = self._call(lambda: self.redis.blpop([key], timeout=max(timeout_s, 0.01)))
        if first is None:
            return []
        rest = self._call(lambda: self.redis.lpop(key, count=10_000)) or []
        raw = [first[1], *rest]
        return [MESSAGE_ADAPTER.validate_json(item) for item in raw]

    # -- requests ----------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Put ``request`` on the requests queue for the orchestrator service."""
        self._call(lambda: self.redis.zadd("crewbox:runs", {request.run_id: request.created_at_s}))
        self._call(
            lambda: self._queue(REQUESTS_QUEUE).enqueue(
                "crewbox.queue.rq.perform_request",
                request.model_dump_json(),
                job_id=f"{request.run_id}__request",
                job_timeout=REQUEST_TIMEOUT_S,
                result_ttl=RUN_TTL_S,
                failure_ttl=RUN_TTL_S,
                description=request.text[:100],
            )
        )

    def serve_requests(
        self,
        handler: RequestHandler,
        *,
        worker_id: str,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Run an RQ worker on the requests queue that calls ``handler`` for each request."""
        _serving.update(request_handler=handler, redis=self.redis)
        self._work(REQUESTS_QUEUE, worker_id, burst, stop)

    def _work(self, queue: str, worker_id: str, burst: bool, stop: threading.Event | None) -> None:
        name = f"{queue}.{worker_id}".replace(":", ".")
        worker = CrewboxWorker(
            [self._queue(queue)], connection=self.redis, name=name, serializer=JSONSerializer
        )
        if stop is not None:
            threading.Thread(target=_stop_when_set, args=(stop, worker), daemon=True).start()
        self._call(lambda: worker.work(burst=burst, logging_level="WARNING"))

    # -- run log -----------------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        """Add ``event`` to its run's stream (what `crewbox submit` follows)."""
        key = run_key(event.run_id, "events")
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"event": event.model_dump_json()}, maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.expire(key, RUN_TTL_S)
        self._call(pipe.execute)

    def follow(self, run_id: str, block_ms: int = 1000) -> Iterator[Event | None]:
        """The run's events from the first, then as they come; None after each idle wait."""
        key, last = run_key(run_id, "events"), "0"
        while True:
            batches = self._read_stream(key, last, block_ms)
            if not batches:
                yield None
                continue
            for entry_id, fields in batches[0][1]:
                last = entry_id
                yield Event.model_validate_json(fields[b"event"])

    def _read_stream(self, key: str, last: str, block_ms: int) -> Any:
        return self._call(lambda: self.redis.xread({key: last}, block=block_ms, count=100))

    def events(self, run_id: str) -> list[Event]:
        """Every event of the run so far (no waiting)."""
        entries = self._call(lambda: self.redis.xrange(run_key(run_id, "events")))
        return [Event.model_validate_json(fields[b"event"]) for _, fields in entries]

    def summary(self, run_id: str) -> RunSummary | None:
        """The run's summary, or None while it runs (or when Redis does not know it)."""
        raw = self._call(lambda: self.redis.get(run_key(run_id, "summary")))
        return RunSummary.model_validate_json(raw) if raw else None

    def finish(self, summary: RunSummary, final_text: str) -> None:
        """Store the run's summary and answer, for `crewbox submit` and `crewbox results`."""
        pipe = self.redis.pipeline()
        pipe.set(run_key(summary.run_id, "summary"), summary.model_dump_json(), ex=RUN_TTL_S)
        pipe.set(run_key(summary.run_id, "final"), final_text, ex=RUN_TTL_S)
        self._call(pipe.execute)

    def final(self, run_id: str) -> tuple[RunSummary, str]:
        """A finished run's summary and answer.

        Raises:
            RunNotFoundError: Redis has no summary for ``run_id`` (unknown or unfinished).
        """
        keys = run_key(run_id, "summary"), run_key(run_id, "final")
        summary, final = self._call(lambda: self.redis.mget(*keys))
        if summary is None:
            raise RunNotFoundError(
                f"no finished run {run_id!r} in Redis; `crewbox status` lists runs"
            )
        return RunSummary.model_validate_json(summary), _text(final)

    def latest_run(self) -> str | None:
        """The most recently submitted run id, or None."""
        ids = self._call(lambda: self.redis.zrevrange("crewbox:runs", 0, 0))
        return _text(ids[0]) if ids else None

    def workers(self) -> list[WorkerInfo]:
        """Every RQ worker registered in Redis, with its queue, state and current task."""
        found = self._call(
            lambda: CrewboxWorker.all(connection=self.redis, serializer=JSONSerializer)
        )
        return [worker_info(w) for w in found]

    @staticmethod
    def _call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except redis.exceptions.AuthenticationError as exc:
            raise QueueError(
                f"Redis refused the password ({exc}); check secrets/redis.password"
            ) from exc
        except redis.exceptions.ConnectionError as exc:
            raise QueueError(f"cannot reach Redis: {exc}; is the cluster up (`make up`)?") from exc


class CrewboxWorker(SimpleWorker):
    """An RQ SimpleWorker that also runs in a thread (tests): no signal handlers there, and a
    timer instead of SIGALRM for job timeouts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            self.death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._install_signal_handlers()  # type: ignore[no-untyped-call]


def _stop_when_set(stop: threading.Event, worker: BaseWorker) -> None:
    stop.wait()
    worker._stop_requested = True


class WorkerInfo(BaseModel):
    """One worker as `crewbox workers` shows it.

    ``state``: RQ's worker state (``busy``, ``idle``, ``started``...); ``alive``: its last
    heartbeat is younger than its TTL; ``task``: ``<run_id>/<task_id>`` while busy;
    ``since``: when that task started (or when the worker started, when idle).
    """

    queue: str
    name: str
    hostname: str
    state: str
    alive: bool
    task: str
    since: datetime | None


def _text(value: Any) -> str:
    """A Redis reply as text (bytes decoded as UTF-8; None as empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def worker_info(worker: BaseWorker) -> WorkerInfo:
    """Describe an RQ worker: its queue, state (busy/idle), current task and since when."""
    job_id = worker.get_current_job_id()
    job = (
        Job.fetch(job_id, connection=worker.connection, serializer=JSONSerializer)
        if job_id
        else None
    )
    since = (job.started_at if job else None) or worker.birth_date
    heartbeat = worker.last_heartbeat
    alive = (
        heartbeat is not None
        and (datetime.now(UTC) - _aware(heartbeat)).total_seconds() < worker.worker_ttl
    )
    return WorkerInfo(
        queue=",".join(worker.queue_names()),
        name=worker.name,
        hostname=worker.hostname or "",
        state=str(getattr(worker.get_state(), "value", worker.get_state())),
        alive=alive,
        task=(job.description if job else ""),
        since=_aware(since) if since else None,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- job functions (run inside the RQ worker process) ------------------------------------
def perform_task(task_json: str) -> str:
    """RQ job: run the serving handler on a task and push its Result to the run's inbox."""
    task = Task.model_validate_json(task_json)
    connection: redis.Redis = _serving["redis"]
    worker_id = default_worker_id()
    result: Result
    try:
        result = _serving["task_handlers"][task.persona](
            task, lambda event: _push(connection, task.run_id, event)
        )
    except JobTimeoutException:
        timeout = TimeoutError(f"job timeout ({task.spec.timeout_s}s)")
        result = crashed_result(task, worker_id, timeout, retryable=False)
    except Exception as exc:  # report, never lose the task silently
        result = crashed_result(task, worker_id, exc)
    _push(connection, task.run_id, result)
    return result.status


def perform_request(request_json: str) -> str:
    """RQ job: run the orchestrator's handler on a request."""
    request = Request.model_validate_json(request_json)
    _serving["request_handler"](request)
    return request.run_id


def _push(connection: redis.Redis, run_id: str, message: Result | Event) -> None:
    key = run_key(run_id, "inbox")
    pipe = connection.pipeline()
    pipe.rpush(key, message.model_dump_json())
    pipe.expire(key, RUN_TTL_S)
    pipe.execute()


def wait_for_redis(connection: redis.Redis, timeout_s: float = 30.0) -> None:
    """Block until Redis answers PING.

    Raises:
        QueueError: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.ping()
            return
        except redis.exceptions.ConnectionError as exc:
            if time.monotonic() > deadline:
                raise QueueError(f"Redis did not answer within {timeout_s:.0f}s: {exc}") from exc
            time.sleep(0.5)
