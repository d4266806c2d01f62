"""The cluster's containers seen through the Docker SDK (on the host, never in a container)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from crewbox.errors import CrewboxError, UserError

PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "crewbox")
"""The compose project (``name:`` in docker-compose.yml)."""


def service_containers(service: str) -> list[Any]:
    """The running containers of a compose service of the crewbox project (scaled ones too).

    Raises:
        CrewboxError: no Docker engine answers.
        UserError: the service has no container (wrong name, or the cluster is down).
    """
    import docker

    try:
        client = docker.from_env()
        labels = [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]
        containers = client.containers.list(all=True, filters={"label": labels})
    except docker.errors.DockerException as exc:
        raise CrewboxError(f"cannot reach the Docker engine: {exc}") from exc
    if not containers:
        raise UserError(f"no container for {service!r} in project {PROJECT!r}; is the cluster up?")
    return sorted(containers, key=lambda c: c.name)


def print_service_logs(service: str, *, follow: bool, tail: str = "all") -> None:
    """Print each container's log lines prefixed with its name; with ``follow``, keep going.

    Raises:
        CrewboxError: a container's log could not be read (e.g. it was removed meanwhile).
    """
    containers = service_containers(service)
    lock = threading.Lock()
    failures: list[str] = []
    threads = [
        threading.Thread(target=_pump, args=(c, follow, tail, lock, failures), daemon=True)
        for c in containers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise CrewboxError("; ".join(failures))


def _pump(
    container: Any, follow: bool, tail: str, lock: threading.Lock, failures: list[str]
) -> None:
    import docker

    count: int | str = int(tail) if tail.isdigit() else "all"
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=follow, tail=count):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            _write(container.name, lines, lock)
    except docker.errors.DockerException as exc:
        failures.append(f"cannot read the log of {container.name}: {exc}")
    _write(container.name, [pending] if pending else [], lock)


def _write(name: str, lines: list[bytes], lock: threading.Lock) -> None:
    with lock:
        for line in lines:
            sys.stdout.write(f"{name} | {line.decode(errors='replace')}\n")
        sys.stdout.flush()
