"""Healthcheck of a cluster container (the orchestrator, a persona worker): ``python -m
crewbox.health``, the ``healthcheck`` of those services in docker-compose.yml.

Healthy (exit status 0, nothing printed) when this container's RQ worker is registered in
Redis and heartbeating: among the workers Redis knows (``rq:worker:<name>`` hashes), one has
``hostname`` equal to this container's hostname (its container id, so each scaled container
answers for its own worker), a ``pid`` that is still the process that registered it (read in
``/proc``: Linux), and a ``last_heartbeat`` younger than HEARTBEAT_MAX_AGE_S. Otherwise it
prints one line saying why on stderr (docker keeps it in the container's health log) and
exits with 1.

A worker whose process is gone is caught by its ``pid`` at once, even while its
registration and heartbeat are still in Redis.

Redis is reached as crewbox itself does (``CREWBOX_REDIS_URL``, ``CREWBOX_REDIS_PASSWORD_FILE``).
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.worker.base import BaseWorker

from crewbox.config import Settings
from crewbox.queue.rq import REQUESTS_QUEUE
from crewbox.queue.rq_worker import WORKER_TTL_S, container_of
from crewbox.redis_client import connect

HEARTBEAT_MAX_AGE_S = WORKER_TTL_S + 60
"""Oldest ``last_heartbeat`` of a healthy worker, in seconds (80): a crewbox worker
heartbeats every ``WORKER_TTL_S - 15`` s while idle (RQ's dequeue timeout) and every
second while it runs a task (crewbox.queue.rq.TaskJob); RQ lets the key of a worker that
missed its heartbeat expire after ``WORKER_TTL_S + 60`` s."""
PROCESS_START_SLACK_S = 2.0
"""How much later than a worker's registration (``birth``) its process may seem to have
started, in seconds (``/proc``'s boot time is whole seconds); later, it is another process."""


class Unhealthy(Exception):
    """Why this container is not healthy, as the one line the check prints."""


def process_started_s(pid: int) -> float | None:
    """When process ``pid`` of this PID namespace started, in seconds since the epoch, from
    ``/proc`` (Linux); None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/stat").read_text()
    except OSError:  # gone (or no /proc: not a Linux container)
        return None
    # Field 22 of /proc/<pid>/stat is the start time in clock ticks after boot; fields are
    # counted after the command name, which is in parentheses and may hold spaces.
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot_s = next(int(line.split()[1]) for line in boot.splitlines() if line.startswith("btime "))
    return boot_s + start_ticks / os.sysconf("SC_CLK_TCK")


def process_gone(worker: BaseWorker) -> str | None:
    """Why ``worker``'s process is not running here any more, or None when it is.

    Besides a ``pid`` with no process, a ``pid`` whose process started after the worker
    registered is a new process: a container restarted after its worker was killed (SIGKILL,
    the OOM killer) runs its new worker under the same pid, while the dead one's registration
    is still in Redis, heartbeat and all, until it expires.
    """
    pid = worker.pid or 0
    started = process_started_s(pid) if pid > 0 else None
    if started is None:
        return f"its process {worker.pid} is gone"
    birth = worker.birth_date
    if birth is not None and started > _utc(birth).timestamp() + PROCESS_START_SLACK_S:
        return (
            f"its process {worker.pid} is gone (pid {worker.pid} is now a process started "
            f"{started - _utc(birth).timestamp():.0f}s after that worker registered)"
        )
    return None


def _utc(moment: datetime) -> datetime:
    """``moment`` with UTC as its zone when it has none (RQ's datetimes are UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def own_queue(settings: Settings) -> str | None:
    """The RQ queue this container's worker serves, from its Redis user: ``requests`` for
    ``orchestrator``, the persona's own for a persona; None without a user (every queue).
    A persona's ACL user may read only its own queue's worker set (crewbox.acl)."""
    user = settings.redis_username
    if not user:
        return None
    return REQUESTS_QUEUE if user == "orchestrator" else user


def check(connection: redis.Redis, hostname: str, now: datetime, queue: str | None = None) -> str:
    """The name of a worker registered from ``hostname`` (among ``queue``'s workers, or
    all) whose process is alive here and whose last heartbeat is within its bound at
    ``now`` (an aware UTC datetime).

    Raises:
        Unhealthy: no such worker; the message says what was found instead.
        redis.exceptions.RedisError: Redis cannot be read (refused, unreachable, bad password).
    """
    if queue:
        found = Worker.all(queue=Queue(queue, connection=connection))
    else:
        found = Worker.all(connection=connection)
    mine = [w for w in found if container_of(w.hostname or "") == hostname]
    if not mine:
        raise Unhealthy(f"no RQ worker of this container (hostname {hostname}) in Redis")
    reasons = []
    for worker in mine:
        gone = process_gone(worker)
        if gone:
            reasons.append(f"{worker.name}: {gone}")
            continue
        if worker.last_heartbeat is None:
            reasons.append(f"{worker.name}: no heartbeat recorded")
            continue
        age_s = (now - _utc(worker.last_heartbeat)).total_seconds()
        bound_s = HEARTBEAT_MAX_AGE_S
        if age_s < bound_s:
            return worker.name
        reasons.append(f"{worker.name}: last heartbeat {age_s:.0f}s ago (bound {bound_s:.0f}s)")
    raise Unhealthy("; ".join(reasons))


def main() -> None:
    """Check this container's worker; exit 0 when healthy, else print why and exit 1.

    Raises:
        SystemExit: always; status 0 (healthy) or 1 (unhealthy, Redis unreachable or refusing
            the password, or the settings invalid).
    """
    try:
        settings = Settings()
        connection = connect(settings)
        check(connection, socket.gethostname(), datetime.now(UTC), own_queue(settings))
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
    except redis.exceptions.RedisError as exc:
        print(f"unhealthy: cannot read the workers from Redis: {exc}", file=sys.stderr)
        sys.exit(1)
    except ValueError as exc:  # pydantic's ValidationError: a bad CREWBOX_* value
        first = str(exc).splitlines()[:2]
        print(f"unhealthy: invalid setting: {' '.join(first)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
