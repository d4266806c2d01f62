"""The Redis client every cluster process uses: password from its secret file, and
reconnection with exponential backoff (redis-py's Retry) so a Redis restart is waited out
instead of ending the process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from crewbox.config import Settings
from crewbox.errors import QueueError

SERVICE_RETRIES = 30
"""Retries of one Redis command on a connection error in a service (orchestrator, worker):
with the backoff below (0.1 s doubling, capped at 2 s) about 55 s, enough for a Redis
restart."""

CLIENT_RETRIES = 3
"""The same for a command a user typed: about 0.7 s, then a one-line error."""

BACKOFF_CAP_S = 2.0
BACKOFF_BASE_S = 0.1

T = TypeVar("T")


def connect(settings: Settings, retries: int = CLIENT_RETRIES) -> redis.Redis:
    """A Redis client for ``settings.redis_url`` as ``settings.redis_username`` (password:
    ``settings.redis_password``, else the first line of ``settings.redis_password_file``),
    retrying each command ``retries`` times with exponential backoff (SERVICE_RETRIES rides
    out a Redis restart)."""
    password = settings.redis_secret()
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), retries)
    return redis.Redis.from_url(
        settings.redis_url,
        username=settings.redis_username or None,
        password=password,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def call(fn: Callable[[], T]) -> T:
    """Run a Redis operation; its connection and password errors become one-line QueueErrors.

    Raises:
        QueueError: Redis refused the password or stayed unreachable through the retries.
    """
    try:
        return fn()
    except redis.exceptions.AuthenticationError as exc:
        raise QueueError(
            f"Redis refused the password ({exc}); check secrets/redis.password"
        ) from exc
    except redis.exceptions.ConnectionError as exc:
        raise QueueError(f"cannot reach Redis: {exc}; is the cluster up (`make up`)?") from exc


def watched_update(
    connection: redis.Redis, key: str, ttl_s: int, fn: Callable[[str | None], tuple[str, T]]
) -> T:
    """Read-modify-write of the string ``key`` with optimistic locking (WATCH, GET, then
    MULTI/SET EX ``ttl_s``/EXEC; redis-py's ``transaction`` runs it again when another
    client wrote ``key`` in between). ``fn`` gets the stored text (None: no key) and returns
    (new text, result); it may run several times. Plain commands, no Lua: a persona's Redis
    user may run it on its own keys (crewbox.acl). Returns ``fn``'s result."""

    def attempt(pipe: Any) -> T:
        raw = pipe.get(key)
        new, result = fn(None if raw is None else text(raw))
        pipe.multi()
        pipe.set(key, new, ex=ttl_s)
        return result

    return cast(T, connection.transaction(cast(Any, attempt), key, value_from_callable=True))


def username_of(connection: redis.Redis, default: str = "orchestrator") -> str:
    """The ACL user ``connection`` logs in as (``default`` when it names none)."""
    user = connection.connection_pool.connection_kwargs.get("username")
    return str(user) if user and user != "default" else default


def text(value: Any) -> str:
    """A Redis reply as text (bytes decoded as UTF-8; None as empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


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
