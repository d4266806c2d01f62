"""A Redis to measure on: ``REDIS_URL``, else a testcontainers Redis as the tests start one
(``CREWBOX_REDIS_IMAGE``), else none (the rq figures are then null, with the reason)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def redis_url() -> Iterator[tuple[str | None, str]]:
    """``(url, where)`` while in the block; ``url`` is None when no Redis can be had, and
    ``where`` then says why."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"], "REDIS_URL"
        return
    try:
        from testcontainers.community.redis import RedisContainer

        container = RedisContainer(os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine"))
        container.start()
    except Exception as exc:  # no Docker: the files figures still come
        yield None, f"no Redis: set REDIS_URL or start a Docker engine ({type(exc).__name__})"
        return
    try:
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0", "a testcontainers Redis"
    finally:
        container.stop()
