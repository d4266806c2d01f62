"""The Redis client every cluster process uses: password from its secret file, and
reconnection with exponential backoff (redis-py's Retry) so a Redis restart is waited out
instead of ending the process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

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
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), retries)
    options: dict[str, Any] = {
        "username": settings.redis_username or None,
        "password": settings.redis_secret(),
        "health_check_interval": 30,
        "retry": retry,
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        **tls_options(settings),
    }
    if settings.redis_sentinels.strip():
        return sentinel_master(settings, options)
    return redis.Redis.from_url(settings.redis_url, **options)


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options for ``settings``: the CA file of a ``rediss://`` URL (the
    certificate and its host name are always checked: redis-py's defaults,
    ``ssl_cert_reqs="required"``, ``ssl_check_hostname=True``); none for ``redis://``."""
    if urlsplit(settings.redis_url).scheme != "rediss" or settings.redis_ca_file is None:
        return {}
    return {"ssl_ca_certs": str(settings.redis_ca_file)}


def sentinel_nodes(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs.

    Raises:
        QueueError: an entry is not ``host:port`` with a numeric port.
    """
    nodes = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise QueueError(
                f"CREWBOX_REDIS_SENTINELS: {entry!r} is not host:port (e.g. sentinel-1:26379)"
            )
        nodes.append((host, int(port)))
    return nodes


def sentinel_master(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    """A client of the master the Sentinels (``settings.redis_sentinels``) name for
    ``settings.redis_sentinel_master``, found again after a failover (redis-py's
    ``Sentinel.master_for``). ``redis_url`` gives the database and, with ``rediss://``, TLS
    to the Sentinels and the master alike; the Sentinels are asked without a password.

    Raises:
        QueueError: a Sentinel entry is not ``host:port``.
    """
    from redis.sentinel import Sentinel

    parts = urlsplit(settings.redis_url)
    tls = {"ssl": True, **tls_options(settings)} if parts.scheme == "rediss" else {}
    database = int(parts.path.strip("/") or 0)
    sentinel = Sentinel(sentinel_nodes(settings.redis_sentinels), sentinel_kwargs=tls)
    master = sentinel.master_for(settings.redis_sentinel_master, db=database, **{**options, **tls})
    return cast(redis.Redis, master)


def where(settings: Settings) -> str:
    """The Redis a service is configured for, without credentials: ``rediss://host:port``
    or ``sentinels a:1,b:2 (master mymaster)``."""
    if settings.redis_sentinels.strip():
        return f"sentinels {settings.redis_sentinels} (master {settings.redis_sentinel_master})"
    parts = urlsplit(settings.redis_url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}"


def connection_problem(exc: redis.exceptions.RedisError, settings: Settings) -> str | None:
    """What to tell the user about ``exc``, a failed first command, in one line; None when
    it may pass by itself (Redis starting, restarting, not yet reachable) and is worth
    waiting for. Only a wrong address, protocol, certificate or password is final."""
    text_ = " ".join(str(exc).split())
    at = where(settings)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return f"{at} refused the password of user {settings.redis_username or 'default'}: {text_}"
    if "WRONG_VERSION_NUMBER" in text_ or "wrong version number" in text_:
        return plain_text_problem(at)
    if "CERTIFICATE_VERIFY_FAILED" in text_:
        return (
            f"the TLS certificate of {at} is not trusted ({text_.rpartition('(')[0] or text_}): "
            "set CREWBOX_REDIS_CA_FILE to the cluster's CA (secrets/tls/ca.crt), or make the "
            "certificate name this host (REDIS_TLS_NAMES, then make certs)"
        )
    if "SSL" in text_ or "ssl" in text_:
        return f"TLS to {at} failed: {text_}"
    if urlsplit(settings.redis_url).scheme == "redis" and "closed by server" in text_:
        return f"{at} closed the connection at once: is it a TLS port? Then use rediss://"
    unreached = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    if isinstance(exc, unreached) and answers_plain_text(settings):
        return plain_text_problem(at)
    return None


def plain_text_problem(at: str) -> str:
    """The line for a ``rediss://`` URL that names a plain-text Redis port."""
    return (
        f"{at} does not speak TLS (it is a plain-text port): give the cluster's published "
        "TLS port (make up REDIS_TLS_PORT=...) or a redis:// URL"
    )


PROBE_TIMEOUT_S = 3.0
"""How long :func:`answers_plain_text` waits to connect and for an answer, in seconds."""


def answers_plain_text(settings: Settings) -> bool:
    """True when ``settings`` name a ``rediss://`` address that answers a plain-text PING
    in Redis's protocol: a Redis port without TLS. A TLS client's hello gets no answer
    there (Redis waits for the end of a line that never comes) and the handshake times out,
    which alone would look like an unreachable host."""
    import socket

    parts = urlsplit(settings.redis_url)
    if parts.scheme != "rediss" or settings.redis_sentinels.strip():
        return False
    address = (parts.hostname or "localhost", parts.port or 6379)
    try:
        with socket.create_connection(address, PROBE_TIMEOUT_S) as probe:
            probe.settimeout(PROBE_TIMEOUT_S)
            probe.sendall(b"PING\r\n")
            first = probe.recv(1)
    except OSError:
        return False
    return first in (b"+", b"-")


def check_redis(settings: Settings, timeout_s: float = 30.0) -> None:
    """Return once the configured Redis has answered PING as this service's user; waits up to
    ``timeout_s`` for a Redis that is starting or unreachable, but not for an answer that
    cannot change by waiting (not TLS, an untrusted certificate, a refused password).

    Raises:
        QueueError: one line naming the Redis, what went wrong and what to do.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        connection = connect(settings, retries=0)
        try:
            connection.ping()
            return
        except redis.exceptions.RedisError as exc:
            problem = connection_problem(exc, settings)
            if problem is None and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            detail = " ".join(str(exc).split())
            raise QueueError(
                problem
                or f"cannot reach Redis at {where(settings)} within {timeout_s:.0f}s: {detail}"
            ) from exc
        finally:
            connection.close()


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
