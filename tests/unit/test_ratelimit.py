"""Per-persona rate limits: a call waits for room in its windows, within its timeout."""

from __future__ import annotations

import re

import pytest
from limits.storage import MemoryStorage

from crewbox.errors import LLMAPIError, PersonaError
from crewbox.llm.base import Message, SystemBlock
from crewbox.llm.ratelimit import RateLimitedLLM, RateLimits, rate_limited
from crewbox.personas import parse_persona
from crewbox.testing import ScriptedLLM


def call(llm: RateLimitedLLM | ScriptedLLM, text: str = "hi", timeout_s: float | None = 5.0) -> str:
    response = llm.complete(
        system=[SystemBlock(text="You test.")],
        messages=[Message(role="user", content=text)],
        timeout_s=timeout_s,
    )
    return response.text


def limited(scripted: ScriptedLLM, limits: RateLimits, window_s: int = 1) -> RateLimitedLLM:
    return RateLimitedLLM(scripted, limits, MemoryStorage(), "marie", window_s=window_s)


def test_a_call_past_the_requests_limit_waits_for_the_window() -> None:
    scripted = ScriptedLLM([{"text": "a"}, {"text": "b"}, {"text": "c"}])
    llm = limited(scripted, RateLimits(requests_per_minute=2))
    assert [call(llm), call(llm), call(llm)] == ["a", "b", "c"]
    first, second, third = (c.started_at_s for c in scripted.calls)
    assert second - first < 0.5  # room for two at once
    assert third - first >= 0.9  # the third waited for the first to leave the 1 s window


def test_no_room_before_the_timeout_fails_the_call_unmade_and_retryable() -> None:
    scripted = ScriptedLLM([{"text": "a"}, {"text": "never"}])
    llm = limited(scripted, RateLimits(requests_per_minute=1), window_s=60)
    call(llm)
    message = re.escape("rate limit of marie (1 requests per 60 s)")
    with pytest.raises(LLMAPIError, match=message) as caught:
        call(llm, timeout_s=0.3)
    assert caught.value.retryable
    assert len(scripted.calls) == 1  # the second call was never made


def test_input_tokens_are_counted_and_a_call_larger_than_the_limit_takes_the_window() -> None:
    scripted = ScriptedLLM([{"text": "a"}, {"text": "b"}])
    llm = limited(scripted, RateLimits(input_tokens_per_minute=50), window_s=60)
    call(llm, "x" * 1000)  # about 280 tokens: more than the limit, allowed alone
    with pytest.raises(LLMAPIError, match="input tokens"):
        call(llm, "y", timeout_s=0.3)
    assert len(scripted.calls) == 1


def test_limits_split_among_processes_and_none_means_the_llm_itself() -> None:
    assert RateLimits(10, 1000).shared_by(3) == RateLimits(3, 333)
    assert RateLimits(2, None).shared_by(5) == RateLimits(1, None)
    scripted = ScriptedLLM([])
    assert rate_limited(scripted, RateLimits(), "marie", None) is scripted


def test_rate_limits_in_persona_front_matter() -> None:
    text = "---\nname: a\ndescription: d\nrequests_per_minute: 30\n"
    text += "input_tokens_per_minute: 9000\n---\n"
    persona = parse_persona(text, "a.md")
    assert (persona.requests_per_minute, persona.input_tokens_per_minute) == (30, 9000)
    with pytest.raises(PersonaError, match="requests_per_minute must be a positive whole number"):
        parse_persona(text.replace("30", "fast"), "a.md")


def test_a_store_that_cannot_be_reached_lets_the_call_through_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis

    from crewbox.llm.ratelimit import rate_storage

    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    scripted = ScriptedLLM([{"text": "a"}])
    llm = RateLimitedLLM(
        scripted, RateLimits(requests_per_minute=5), rate_storage(nowhere), "marie"
    )
    assert call(llm) == "a"
    assert "rate limit not applied" in caplog.text
