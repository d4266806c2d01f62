"""The RQ worker of crewbox: it carries its own job functions and runs nothing else.

RQ runs whatever importable function a job names; a crewbox worker instead looks the job's
``func_name`` up in the job functions it was built with (an allow-list: ``crewbox:task`` on
a persona's queue, ``crewbox:request`` on the requests queue) and refuses any other job
before anything of it is imported or run: the job fails in RQ's FailedJobRegistry with the
reason, and the refusal is logged. Payloads are validated (a Task for this persona, or a
Request) before a handler sees them.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import TimerDeathPenalty
from rq.utils import now
from rq.worker.base import BaseWorker

from crewbox.procs import process_id

log = logging.getLogger("crewbox.rq")

TASK_JOB = "crewbox:task"
"""The job function name of a task on a persona's queue."""

REQUEST_JOB = "crewbox:request"
"""The job function name of a request on the requests queue."""

RESUME_JOB = "crewbox:resume"
"""The job function name of ``crewbox resume RUN_ID`` on the requests queue."""

WORKER_TTL_S = 20
"""RQ worker_ttl: an idle worker heartbeats every WORKER_TTL_S - 15 s (RQ's dequeue
timeout), and a busy one every HEARTBEAT_INTERVAL_S; one silent for longer is dead."""

RQ_SERVER_VERSION = (7, 0, 0)
"""The Redis version RQ is told, so it never sends INFO (which a persona's Redis user may
not run, crewbox.acl): RQ only compares it with 6.0.6 (for BLMOVE) and copies it into jobs.
The lowest of the images crewbox runs on (redis:7-alpine; Debian's redis-server 7.0)."""


def known_server_version(connection: Any) -> None:
    """Give RQ ``RQ_SERVER_VERSION`` for ``connection``, cached where rq.utils.get_version
    looks first, so no INFO is ever sent on it."""
    setattr(connection, "__rq_redis_server_version", RQ_SERVER_VERSION)


JobFunction = Callable[[str], str]
"""A job function a worker carries: the job's one JSON argument in, a short status out."""


class JobRefusedError(Exception):
    """A job that is not crewbox's (unknown function, bad payload): failed, never run."""


class CrewboxWorker(SimpleWorker):
    """An RQ SimpleWorker (no fork) that runs only the job functions it carries.

    SIGTERM/SIGINT: RQ's warm shutdown (stop after the current job; at once when idle),
    and ``stop`` is set first, so the rest of the service hears of it too (the orchestrator
    hands its runs over). In a thread (tests) it installs no signal handlers, and a timer
    replaces SIGALRM for job timeouts.
    """

    def __init__(
        self,
        *args: Any,
        job_functions: dict[str, JobFunction] | None = None,
        stop: threading.Event | None = None,
        shared_maintenance: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_S)
        super().__init__(*args, **kwargs)
        known_server_version(self.connection)
        self.redis_server_version = RQ_SERVER_VERSION  # type: ignore[assignment]
        self.job_functions = job_functions or {}
        self.stop = stop
        self.shared_maintenance = shared_maintenance
        if threading.current_thread() is not threading.main_thread():
            self.death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._install_signal_handlers()  # type: ignore[no-untyped-call]

    def clean_group_registries(self) -> None:
        """RQ's maintenance of job groups, which every queue shares: only the worker with
        ``shared_maintenance`` (the orchestrator's) does it; a persona's ACL user cannot
        reach other queues' keys (crewbox enqueues no groups anyway)."""
        if self.shared_maintenance:
            super().clean_group_registries()  # type: ignore[no-untyped-call]

    def request_stop(self, signum: Any, frame: Any) -> None:
        """Set ``stop``, then RQ's warm shutdown (raises StopRequested when idle)."""
        if self.stop is not None:
            self.stop.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job``, unless this worker was asked to stop while it waited for one: then
        the job goes back to the front of its queue unrun, for a worker that stays (a
        stopping worker never takes a task it might not finish)."""
        if self._stop_requested or (self.stop is not None and self.stop.is_set()):
            queue.push_job_id(job.id, at_front=True)
            self._stop_requested = True
            return
        super().execute_job(job, queue)

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's perform_job, with :meth:`run_job` instead of ``job.perform()``."""
        try:
            self.prepare_job_execution(job, len(self.queues) == 1)
            job.started_at = now()
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            with self.death_penalty_class(timeout, JobTimeoutError, job_id=job.id):
                return_value = self.run_job(job)
            self._finalize_success(job, queue, execution, return_value)
        except BaseException:
            self._finalize_failure(job, queue, execution, sys.exc_info())
            return False
        return True

    def run_job(self, job: Job) -> str:
        """Call the carried function ``job.func_name`` names with the job's one argument.

        Raises:
            JobRefusedError: the name is not carried, or the arguments are not one string.
        """
        function = self.job_functions.get(job.func_name or "")
        if function is None:
            log.warning("refused job %s: function %r is not crewbox's", job.id, job.func_name)
            raise JobRefusedError(f"refused: job function {job.func_name!r} is not crewbox's")
        args = job.args
        if len(args) != 1 or not isinstance(args[0], str) or job.kwargs:
            log.warning("refused job %s: arguments are not one JSON string", job.id)
            raise JobRefusedError("refused: a crewbox job takes one JSON string")
        return function(args[0])


class JobTimeoutError(Exception):
    """RQ's job_timeout ran out (the agent loop's own timeout_s should have come first)."""


M = TypeVar("M", bound=BaseModel)


def parse_payload(model: type[M], raw: str) -> M:
    """``raw`` validated as ``model``.

    Raises:
        JobRefusedError: it does not validate.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise JobRefusedError(f"refused: payload is not a {model.__name__}: {exc}") from exc


def worker_name(queue: str) -> str:
    """``<queue>.<host>.<pid>.<random>``: unique per process start, so a restarted container
    (same host name, often the same pid) never meets its previous registration."""
    return f"{queue}.{process_id().replace(':', '.')}.{secrets.token_hex(3)}"


def registered_hostname(host_name: str, hostname: str | None) -> str | None:
    """What a worker registers as its RQ ``hostname``: ``<host_name>/<hostname>`` (the
    machine, then the container or process host), or ``hostname`` when no machine name is
    set. crewbox.health finds its container's worker by the part after the ``/``."""
    if not host_name:
        return hostname
    return f"{host_name}/{hostname or ''}"


def container_of(hostname: str) -> str:
    """The container (or process host) part of a registered hostname."""
    return hostname.rpartition("/")[2]


def stop_when_set(stop: threading.Event, worker: BaseWorker) -> None:
    """Ask ``worker`` to stop after its current job once ``stop`` is set (run in a thread)."""
    stop.wait()
    worker._stop_requested = True


class WorkerInfo(BaseModel):
    """One worker as `crewbox workers` shows it.

    ``state``: RQ's worker state (``busy``, ``idle``, ``started``...); ``alive``: its last
    heartbeat is younger than WORKER_TTL_S; ``task``: ``<run_id>/<task_id>`` while busy;
    ``since``: when that task started (or when the worker started, when idle).
    """

    queue: str
    name: str
    hostname: str
    state: str
    alive: bool
    task: str
    since: datetime | None


def worker_info(worker: BaseWorker, serializer: Any) -> WorkerInfo:
    """Describe an RQ worker: its queue, state (busy/idle), current task and since when."""
    job_id = worker.get_current_job_id()
    job = Job.fetch(job_id, connection=worker.connection, serializer=serializer) if job_id else None
    since = (job.started_at if job else None) or worker.birth_date
    return WorkerInfo(
        queue=",".join(worker.queue_names()),
        name=worker.name,
        hostname=worker.hostname or "",
        state=str(getattr(worker.get_state(), "value", worker.get_state())),
        alive=worker_alive(worker),
        task=(job.description if job else ""),
        since=_aware(since) if since else None,
    )


def worker_alive(worker: BaseWorker) -> bool:
    """True when the worker's last RQ heartbeat is younger than WORKER_TTL_S."""
    heartbeat = worker.last_heartbeat
    return (
        heartbeat is not None
        and (datetime.now(UTC) - _aware(heartbeat)).total_seconds() < WORKER_TTL_S
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
