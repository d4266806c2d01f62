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
    """Print each container's log lines prefixed with its name; with ``follow``, keep going."""
    containers = service_containers(service)
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_pump, args=(c, follow, tail, lock), daemon=True)
        for c in containers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _pump(container: Any, follow: bool, tail: str, lock: threading.Lock) -> None:
    count: int | str = int(tail) if tail.isdigit() else "all"
    stream = container.logs(stream=True, follow=follow, tail=count)
    pending = b""
    for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        with lock:
            for line in lines:
                sys.stdout.write(f"{container.name} | {line.decode(errors='replace')}\n")
            sys.stdout.flush()
