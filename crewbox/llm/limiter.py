"""Adaptive concurrency per credential: an AIMD limit on calls in flight, and a circuit
breaker, shared by every process that uses the same key and endpoint.

The limit starts at ``max_limit`` (``CREWBOX_LLM_MAX_CONCURRENCY``). Each call (each try of
crewbox.llm.retry) takes a slot first, waiting while every slot is taken. A 429 or 529 halves
the limit (never below 1); a success window (as many successes in a row as the limit) grows
it by one, never above ``max_limit`` (additive increase, multiplicative decrease, as TCP's
congestion control). After ``failures_to_open`` retryable failures in a row the circuit opens
for ``cooldown_s``: calls wait for it to close instead of failing. A slot is a lease that
expires after ``lease_s``, so a process killed mid-call never keeps its slot.

The state lives in a LimitStore keyed by the caller's persona (``orchestrator`` for the
orchestrator) and a hash of the credential (never the key itself): a file under
``tasks/_limits/`` (flock) embedded, the Redis string ``crewbox:limit:<persona>:<credential>``
in the cluster, updated with WATCH/MULTI (no Lua: a persona's Redis user has none). Each
persona's state is its own, so a 429 halves only that persona's limit, and no persona can
open another's circuit or take its slots (its Redis user may write its own limiter keys
only, crewbox.acl). On an OpenAI-compatible server (the local model, whose llama.cpp server
has a few slots) a persona's limit is at most ``CREWBOX_LLM_PERSONA_CONCURRENCY``, so one
persona cannot take every slot.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar, Unpack

import redis
from pydantic import BaseModel, Field

from crewbox.errors import LLMAPIError
from crewbox.llm.base import CallArgs, LLMClient, LLMResponse, deadline_of, time_left
from crewbox.models import ConcurrencyChange
from crewbox.redis_client import watched_update
from crewbox.store import locked_json

T = TypeVar("T")

Outcome = Literal["ok", "throttled", "failed", "neutral"]
"""How a call ended for the limiter: ``ok``; ``throttled`` (429, 529: halve); ``failed``
(another retryable error: counts towards opening the circuit); ``neutral`` (an error that
says nothing about load, e.g. 400)."""

THROTTLE_STATUS = frozenset({429, 529})
"""Statuses that mean "slow down": rate limited, overloaded."""


class LimitState(BaseModel):
    """One credential's limiter state (JSON in its store)."""

    limit: float
    in_flight: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Lease id -> (when it was admitted, when it expires), Unix s."""
    successes: int = 0
    failures: int = 0
    open_until_s: float = 0.0
    decreased_at_s: float = 0.0
    """When the limit was last halved: a 429 of a call admitted before then is the same
    burst and does not halve it again."""


@dataclass(frozen=True)
class LimitPolicy:
    """The limiter's numbers: ``max_limit`` calls in flight at most; the circuit opens
    after ``failures_to_open`` failures in a row for ``cooldown_s`` seconds; a slot is held
    ``lease_s`` seconds at most."""

    max_limit: int = 8
    failures_to_open: int = 5
    cooldown_s: float = 10.0
    lease_s: float = 660.0


def try_admit(
    state: LimitState, lease: str, now_s: float, policy: LimitPolicy, lease_s: float | None = None
) -> bool:
    """Take a slot for ``lease`` (held ``lease_s``, default the policy's) when the circuit
    is closed and one is free; a limit above the policy's maximum comes down to it."""
    state.limit = min(state.limit, float(policy.max_limit))
    state.in_flight = {k: v for k, v in state.in_flight.items() if v[1] > now_s}
    if now_s < state.open_until_s or len(state.in_flight) >= max(int(state.limit), 1):
        return False
    state.in_flight[lease] = (now_s, now_s + (lease_s or policy.lease_s))
    return True


def settle(
    state: LimitState, lease: str, outcome: Outcome, now_s: float, policy: LimitPolicy
) -> tuple[float, float, str] | None:
    """Free ``lease``'s slot and apply ``outcome``; (old limit, new limit, reason) when the
    limit changed or the circuit opened, else None."""
    admitted_s = state.in_flight.pop(lease, (now_s, now_s))[0]
    old = state.limit
    if outcome == "ok":
        state.failures = 0
        state.successes += 1
        if state.successes >= int(state.limit) and state.limit < policy.max_limit:
            state.limit, state.successes = min(state.limit + 1, policy.max_limit), 0
            return old, state.limit, "a window of successes"
        return None
    if outcome == "neutral":
        return None
    state.failures += 1
    state.successes = 0
    reason = "throttled (429/529)" if outcome == "throttled" else "failed"
    if outcome == "throttled" and admitted_s >= state.decreased_at_s:
        state.limit = max(1.0, float(int(state.limit / 2)))
        state.decreased_at_s = now_s
    if state.failures >= policy.failures_to_open:
        state.open_until_s, state.failures = now_s + policy.cooldown_s, 0
        return old, state.limit, f"{reason}; circuit open for {policy.cooldown_s:.0f}s"
    return (old, state.limit, reason) if state.limit != old else None


class LimitStore(Protocol):
    """Where limiter states live; ``update`` is atomic across processes (and hosts)."""

    def update(self, key: str, initial: LimitState, fn: Callable[[LimitState], T]) -> T:
        """Apply ``fn`` to the state of ``key`` (``initial`` when there is none), save it,
        return what ``fn`` returned."""
        ...


class FileLimitStore:
    """Limiter states as ``<folder>/<key>.json``, each updated under an flock
    (crewbox.store.locked_json)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def update(self, key: str, initial: LimitState, fn: Callable[[LimitState], T]) -> T:
        """See LimitStore."""
        with locked_json(self.folder / f"{key}.json") as data:
            state = _state_of(data, initial)
            result = fn(state)
            data.clear()
            data.update(state.model_dump(mode="json"))
        return result


STATE_TTL_S = 7 * 24 * 3600
"""A credential's state is dropped a week after its last change."""


class RedisLimitStore:
    """Limiter states as Redis strings ``crewbox:limit:<key>`` (``<key>`` is
    ``<persona>:<credential>``), each updated with WATCH/MULTI
    (crewbox.redis_client.watched_update): ``fn`` runs again when another process of the
    same persona changed the state meanwhile."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def update(self, key: str, initial: LimitState, fn: Callable[[LimitState], T]) -> T:
        """See LimitStore."""

        def change(raw: str | None) -> tuple[str, T]:
            state = _state(raw, initial)
            result = fn(state)
            return state.model_dump_json(), result

        return watched_update(self.redis, f"crewbox:limit:{key}", STATE_TTL_S, change)


def _state(raw: str | None, initial: LimitState) -> LimitState:
    """The stored state, or a copy of ``initial`` when there is none (or an unreadable one:
    a state of another crewbox version starts over)."""
    if raw:
        try:
            return LimitState.model_validate_json(raw)
        except ValueError:
            pass
    return initial.model_copy(deep=True)


def _state_of(data: dict[str, object], initial: LimitState) -> LimitState:
    """:func:`_state` of a state already parsed from JSON (the file store's)."""
    try:
        return LimitState.model_validate(data) if data else initial.model_copy(deep=True)
    except ValueError:
        return initial.model_copy(deep=True)


def credential_key(provider: str, endpoint: str, api_key: str) -> str:
    """A name for a credential that does not reveal it: 16 hex of a sha256."""
    return hashlib.sha256(f"{provider}\0{endpoint}\0{api_key}".encode()).hexdigest()[:16]


def limiter_key(persona: str, credential: str) -> str:
    """The store key of ``persona``'s limiter state for ``credential``:
    ``<persona>:<credential>`` (inside the persona's ``crewbox:limit:<persona>:*`` ACL
    pattern in Redis)."""
    return f"{persona}:{credential}"


class AIMDLimiter:
    """One credential's limiter over a LimitStore (see the module docstring)."""

    def __init__(
        self, store: LimitStore, key: str, policy: LimitPolicy, poll_s: float = 0.05
    ) -> None:
        self.store = store
        self.key = key
        self.policy = policy
        self.poll_s = poll_s

    def _initial(self) -> LimitState:
        return LimitState(limit=float(self.policy.max_limit))

    def acquire(self, deadline_m: float | None) -> str:
        """A lease on a slot, waiting for one (and for an open circuit to close) until
        ``deadline_m`` (a ``time.monotonic()`` value; None: at most the policy's lease_s).

        Raises:
            LLMAPIError: no slot before the deadline.
        """
        lease = secrets.token_hex(8)
        if deadline_m is None:  # never wait for ever (an open circuit, a stuck state)
            deadline_m = time.monotonic() + self.policy.lease_s
        lease_s = deadline_m - time.monotonic() + 60  # the lease outlives the call
        while True:
            admitted = self.store.update(
                self.key,
                self._initial(),
                lambda s: try_admit(s, lease, time.time(), self.policy, lease_s),
            )
            if admitted:
                return lease
            if time.monotonic() + self.poll_s >= deadline_m:
                raise LLMAPIError("no free call slot before the call's deadline (429s?)")
            time.sleep(self.poll_s * random.uniform(0.5, 1.5))

    def release(self, lease: str, outcome: Outcome) -> ConcurrencyChange | None:
        """Free the slot and apply ``outcome``; the change of the limit, if any."""
        changed = self.store.update(
            self.key,
            self._initial(),
            lambda s: settle(s, lease, outcome, time.time(), self.policy),
        )
        if changed is None:
            return None
        old, new, reason = changed
        return ConcurrencyChange(credential=self.key, old_limit=old, new_limit=new, reason=reason)


def outcome_of(exc: BaseException | None) -> Outcome:
    """The limiter's outcome for a call that raised ``exc`` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, LLMAPIError):
        if exc.status_code in THROTTLE_STATUS:
            return "throttled"
        return "failed" if exc.retryable else "neutral"
    return "neutral"


class ChangeSink:
    """Where a worker's limit changes go: ``target`` (set while a task runs, to emit them
    as that run's ``concurrency_changed`` events), else nowhere but the log."""

    def __init__(self) -> None:
        self.target: Callable[[ConcurrencyChange], None] | None = None

    def __call__(self, change: ConcurrencyChange) -> None:
        """Pass ``change`` on to ``target``."""
        if self.target is not None:
            self.target(change)


class LimitedLLM:
    """An LLMClient whose every call takes a slot of ``limiter`` first and tells it how
    the call ended; changes of the limit go to ``on_change``."""

    def __init__(
        self,
        inner: LLMClient,
        limiter: AIMDLimiter,
        on_change: Callable[[ConcurrencyChange], None] | None = None,
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.limiter = limiter
        self.on_change = on_change

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """``inner.complete`` within a slot.

        Raises:
            LLMAPIError: the provider failed, or no slot came before ``timeout_s``.
        """
        deadline_m = deadline_of(call.get("timeout_s"))
        lease = self.limiter.acquire(deadline_m)
        failure: BaseException | None = None
        try:
            if deadline_m is not None:
                call["timeout_s"] = time_left(deadline_m)
            return self.inner.complete(**call)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            change = self.limiter.release(lease, outcome_of(failure))
            if change is not None and self.on_change is not None:
                self.on_change(change)


def describe(change: ConcurrencyChange) -> str:
    """``concurrency 8 -> 4 (throttled (429/529))``."""
    return f"concurrency {change.old_limit:g} -> {change.new_limit:g} ({change.reason})"
