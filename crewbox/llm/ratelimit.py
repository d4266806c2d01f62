"""Per-persona rate limits: requests per minute and input tokens per minute.

A persona's limits come from its front matter (``requests_per_minute``,
``input_tokens_per_minute``), else from ``CREWBOX_REQUESTS_PER_MINUTE`` and
``CREWBOX_INPUT_TOKENS_PER_MINUTE`` (unset: no limit). Before each call,
:class:`RateLimitedLLM` takes one request and the call's estimated input tokens
(:func:`crewbox.budget.estimate_input_tokens`) from moving one-minute windows (the ``limits``
library's MovingWindowRateLimiter); when a window is full the call waits for room, within its
``timeout_s``, and logs that it waits. A call whose estimate alone exceeds the token limit
takes the whole window.

Windows are shared by every worker of the persona: in Redis in the cluster (strings
``crewbox:limit:<persona>:rate:<window>``, a log of the window's hits updated with
WATCH/MULTI: :class:`RedisWindows`; a persona's Redis user may write only its own, and has
no Lua); embedded, each of the
persona's N worker processes keeps its own window with 1/N of each limit
(``CREWBOX_RATE_LIMIT_SHARE``, set by ``crewbox run``). When Redis cannot be reached the
calls go ahead without the rate limit, with a warning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Unpack

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from crewbox.budget import estimate_input_tokens
from crewbox.errors import LLMAPIError
from crewbox.llm.base import CallArgs, LLMClient, LLMResponse, deadline_of, time_left

if TYPE_CHECKING:
    import redis

log = logging.getLogger("crewbox.llm")

KEY_PREFIX = "crewbox:limit"
"""Where the windows live in Redis: ``<prefix>:<persona>:rate:<window>`` (inside the
persona's ``crewbox:limit:<persona>:*`` ACL pattern)."""

WAIT_STEP_S = 1.0
"""A waiting call looks for room at least this often."""


@dataclass(frozen=True)
class RateLimits:
    """``requests_per_minute`` and ``input_tokens_per_minute``; None means no limit."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None

    def active(self) -> bool:
        """True when there is a limit at all."""
        return bool(self.requests_per_minute or self.input_tokens_per_minute)

    def shared_by(self, processes: int) -> RateLimits:
        """Each limit split evenly among ``processes`` (at least 1 each)."""
        share = max(1, processes)

        def part(value: int | None) -> int | None:
            return None if value is None else max(1, value // share)

        return RateLimits(part(self.requests_per_minute), part(self.input_tokens_per_minute))


Cost = Callable[[CallArgs], int]


class Windows(Protocol):
    """Moving windows of hits: ``take`` ``amount`` from window ``name`` of ``persona``
    (``item``: its size and length) and return None, or, when there is no room, the Unix
    time (s) room may come; nothing is taken then.

    Raises:
        StorageError: the windows' store cannot be reached.
    """

    def take(self, persona: str, name: str, item: RateLimitItem, amount: int) -> float | None:
        """See Windows."""
        ...


class LimitsWindows:
    """Windows of the ``limits`` library's MovingWindowRateLimiter over ``storage`` (this
    process's memory embedded)."""

    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    def take(self, persona: str, name: str, item: RateLimitItem, amount: int) -> float | None:
        """See Windows."""
        if self.limiter.hit(item, persona, name, cost=amount):
            return None
        return float(self.limiter.get_window_stats(item, persona, name).reset_time)


class RedisWindows:
    """Windows in Redis: the string ``crewbox:limit:<persona>:rate:<name>`` holds the
    window's hits as JSON ``[[unix s, amount], ...]``, updated with WATCH/MULTI
    (crewbox.redis_client.watched_update): plain commands on the persona's own key."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def take(self, persona: str, name: str, item: RateLimitItem, amount: int) -> float | None:
        """See Windows."""
        import redis as redis_lib

        from crewbox.redis_client import watched_update

        key = f"{KEY_PREFIX}:{persona}:rate:{name.replace(' ', '-')}"
        window_s = item.get_expiry()

        def hit(raw: str | None) -> tuple[str, float | None]:
            now_s = time.time()
            hits = [h for h in _hits(raw) if h[0] > now_s - window_s]
            if sum(h[1] for h in hits) + amount > item.amount:
                return json.dumps(hits), min((h[0] for h in hits), default=now_s) + window_s
            return json.dumps([*hits, [now_s, amount]]), None

        try:
            return watched_update(self.redis, key, window_s + 1, hit)
        except redis_lib.exceptions.ConnectionError as exc:
            raise StorageError(exc) from exc


def _hits(raw: str | None) -> list[tuple[float, int]]:
    """The hits of a stored window; none for a missing or unreadable one."""
    try:
        return [(float(t), int(a)) for t, a in json.loads(raw or "[]")]
    except (ValueError, TypeError):
        return []


WINDOW_S = 60
"""The limits are per minute: moving windows of 60 s."""


class RateLimitedLLM:
    """An LLMClient that makes each call only once ``persona``'s windows have room for it;
    ``window_s`` is the length of the windows (60: per minute)."""

    def __init__(
        self,
        inner: LLMClient,
        limits: RateLimits,
        storage: Storage | Windows,
        persona: str,
        window_s: int = WINDOW_S,
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.persona = persona
        self.windows_store = LimitsWindows(storage) if isinstance(storage, Storage) else storage
        self.windows: list[tuple[str, RateLimitItem, Cost]] = []
        if limits.requests_per_minute:
            item = RateLimitItemPerSecond(limits.requests_per_minute, window_s)
            self.windows.append(("requests", item, lambda call: 1))
        if limits.input_tokens_per_minute:
            item = RateLimitItemPerSecond(limits.input_tokens_per_minute, window_s)
            self.windows.append(("input tokens", item, _input_tokens))

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """``inner.complete`` once every window has room for the call.

        Raises:
            LLMAPIError: (retryable, no status) no room before the call's ``timeout_s``;
                or the provider failed.
        """
        deadline_m = deadline_of(call.get("timeout_s"))
        for name, item, cost in self.windows:
            self._take(name, item, min(cost(call), item.amount), deadline_m)
        if deadline_m is not None:
            call["timeout_s"] = time_left(deadline_m)
        return self.inner.complete(**call)

    def _take(self, name: str, item: RateLimitItem, amount: int, deadline_m: float | None) -> None:
        """Take ``amount`` from the window, waiting for room until ``deadline_m``. When the
        windows' store cannot be reached (Redis away) the call goes ahead unlimited, with a
        warning: the concurrency limiter still backs off on 429s."""
        try:
            self._wait_for_room(name, item, amount, deadline_m)
        except StorageError as exc:
            log.warning("%s: rate limit not applied (its store failed: %s)", self.persona, exc)

    def _wait_for_room(
        self, name: str, item: RateLimitItem, amount: int, deadline_m: float | None
    ) -> None:
        waited = False
        while (reset_s := self.windows_store.take(self.persona, name, item, amount)) is not None:
            wait_s = min(WAIT_STEP_S, max(0.05, reset_s - time.time()))
            if deadline_m is not None and time.monotonic() + wait_s > deadline_m:
                raise LLMAPIError(
                    f"rate limit of {self.persona} ({item.amount} {name} per {item.multiples} s) "
                    "left no room before the call's timeout; raise it in the persona's front "
                    "matter (requests_per_minute, input_tokens_per_minute)"
                )
            if not waited:
                log.warning(
                    "%s: %d %s per %d s reached; waiting", self.persona, item.amount, name,
                    item.multiples,
                )  # fmt: skip
                waited = True
            time.sleep(wait_s)


def _input_tokens(call: CallArgs) -> int:
    return estimate_input_tokens(call["system"], call["messages"], call.get("tools"))


def rate_storage(connection: redis.Redis | None) -> Windows:
    """The windows: in Redis through ``connection`` (the cluster), else in this process's
    memory."""
    if connection is None:
        return LimitsWindows(MemoryStorage())
    return RedisWindows(connection)


def rate_limited(
    llm: LLMClient, limits: RateLimits, persona: str, connection: redis.Redis | None
) -> LLMClient:
    """``llm`` behind ``persona``'s rate limits, or ``llm`` itself when it has none."""
    if not limits.active():
        return llm
    return RateLimitedLLM(llm, limits, rate_storage(connection), persona)
