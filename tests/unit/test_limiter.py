"""The AIMD concurrency limit and circuit breaker of a credential (crewbox.llm.limiter)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from crewbox.errors import LLMAPIError
from crewbox.llm.base import Message
from crewbox.llm.limiter import (
    AIMDLimiter,
    FileLimitStore,
    LimitedLLM,
    LimitPolicy,
    LimitState,
    limiter_key,
    outcome_of,
    settle,
    try_admit,
)
from crewbox.testing import ScriptedLLM

POLICY = LimitPolicy(max_limit=8, failures_to_open=3, cooldown_s=5, lease_s=60)


def test_a_429_halves_the_limit_and_a_window_of_successes_adds_one() -> None:
    state = LimitState(limit=8)
    assert settle(state, "a", "throttled", 0, POLICY) == (8, 4, "throttled (429/529)")
    assert settle(state, "b", "throttled", 0, POLICY) == (4, 2, "throttled (429/529)")
    assert settle(state, "c", "ok", 0, POLICY) is None  # 1 success of a window of 2
    assert settle(state, "d", "ok", 0, POLICY) == (2, 3, "a window of successes")


def test_the_limit_stays_between_one_and_the_maximum() -> None:
    state = LimitState(limit=1)
    settle(state, "a", "throttled", 0, POLICY)
    assert state.limit == 1
    state = LimitState(limit=8)
    for lease in "abcdefghij":
        settle(state, lease, "ok", 0, POLICY)
    assert state.limit == 8


def test_failures_in_a_row_open_the_circuit_for_its_cooldown() -> None:
    state = LimitState(limit=8)
    for lease in ("a", "b"):
        settle(state, lease, "failed", 0, POLICY)
    change = settle(state, "c", "failed", 100.0, POLICY)
    assert change is not None and "circuit open" in change[2]
    assert not try_admit(state, "x", 104.9, POLICY)  # calls wait
    assert try_admit(state, "x", 105.1, POLICY)


def test_slots_are_limited_and_an_expired_lease_frees_its_slot() -> None:
    state = LimitState(limit=2)
    assert try_admit(state, "a", 0, POLICY) and try_admit(state, "b", 0, POLICY)
    assert not try_admit(state, "c", 1, POLICY)
    assert try_admit(state, "c", 61, POLICY)  # a and b expired (a killed process)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(429, "throttled"), (529, "throttled"), (500, "failed"), (None, "failed"), (400, "neutral")],
)
def test_outcomes_by_error(status: int | None, outcome: str) -> None:
    assert outcome_of(LLMAPIError("x", status_code=status)) == outcome
    assert outcome_of(None) == "ok"


def test_parallel_calls_never_exceed_the_limit_across_threads(tmp_path: Path) -> None:
    limiter = AIMDLimiter(FileLimitStore(tmp_path), "k", LimitPolicy(max_limit=2), poll_s=0.01)
    inside, peak, lock = [0], [0], threading.Lock()
    llm = ScriptedLLM([{"text": "ok", "delay_s": 0.05}] * 8)

    def call() -> None:
        def counting(**kwargs: object) -> object:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            try:
                return llm.complete(**kwargs)  # type: ignore[arg-type]
            finally:
                with lock:
                    inside[0] -= 1

        inner = type("Counting", (), {"model": "m", "complete": staticmethod(counting)})()
        LimitedLLM(inner, limiter).complete(system=[], messages=[Message(role="user", content="x")])

    threads = [threading.Thread(target=call) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and time.monotonic() - started >= 0.05 * 4


def test_a_call_that_gets_no_slot_before_its_deadline_fails(tmp_path: Path) -> None:
    store = FileLimitStore(tmp_path)
    limiter = AIMDLimiter(store, "k", LimitPolicy(max_limit=1), poll_s=0.01)
    held = limiter.acquire(None)
    with pytest.raises(LLMAPIError, match="no free call slot"):
        limiter.acquire(time.monotonic() + 0.1)
    limiter.release(held, "ok")
    assert limiter.acquire(time.monotonic() + 0.1)


def test_one_burst_of_429s_halves_the_limit_once() -> None:
    state, patient = LimitState(limit=8), LimitPolicy(max_limit=8, failures_to_open=99)
    for lease in "abcd":
        assert try_admit(state, lease, 1.0, patient)
    settle(state, "a", "throttled", 2.0, patient)
    for lease in "bcd":  # admitted before the decrease: the same burst
        settle(state, lease, "throttled", 2.5, patient)
    assert state.limit == 4
    assert try_admit(state, "e", 3.0, patient)
    settle(state, "e", "throttled", 3.5, patient)  # a new call throttled: halve again
    assert state.limit == 2


def test_a_lowered_maximum_takes_effect_at_once() -> None:
    state = LimitState(limit=8)
    small = LimitPolicy(max_limit=2)
    assert try_admit(state, "a", 0, small) and try_admit(state, "b", 0, small)
    assert not try_admit(state, "c", 0, small) and state.limit == 2


def test_a_persona_on_the_local_model_gets_at_most_its_share_of_slots(tmp_path: Path) -> None:
    from crewbox.config import Settings
    from crewbox.llm.factory import limit_policy

    local = Settings(provider="openai", llm_max_concurrency=8, llm_persona_concurrency=2)
    assert limit_policy(local, "marie").max_limit == 2
    assert limit_policy(local, "orchestrator").max_limit == 8
    remote = Settings(provider="scripted", llm_max_concurrency=8, llm_persona_concurrency=2)
    assert limit_policy(remote, "marie").max_limit == 8
    store = FileLimitStore(tmp_path)
    marie = AIMDLimiter(store, limiter_key("marie", "c"), limit_policy(local, "marie"), 0.01)
    anga = AIMDLimiter(store, limiter_key("anga", "c"), limit_policy(local, "anga"), 0.01)
    marie.acquire(None), marie.acquire(None)
    with pytest.raises(LLMAPIError, match="no free call slot"):
        marie.acquire(time.monotonic() + 0.05)  # marie holds her 2 of the server's slots
    assert anga.acquire(time.monotonic() + 0.05)  # anga still gets one
