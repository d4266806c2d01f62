"""A persona's rate limits hold across its workers through Redis, under its own ACL user."""

from __future__ import annotations

import pytest
import redis

from crewbox.errors import LLMAPIError
from crewbox.llm.ratelimit import RateLimitedLLM, RateLimits, rate_storage
from crewbox.testing import ScriptedLLM
from tests.integration.conftest import acl_denials, acl_password
from tests.unit.test_ratelimit import call


def worker_llm(redis_url: str, persona: str, scripted: ScriptedLLM) -> RateLimitedLLM:
    """What `crewbox worker` builds: the persona's limits, its windows in Redis as its user."""
    connection = redis.Redis.from_url(redis_url, username=persona, password=acl_password(persona))
    limits = RateLimits(requests_per_minute=2)
    return RateLimitedLLM(scripted, limits, rate_storage(connection), persona)


def test_two_workers_of_a_persona_share_its_window_and_others_have_their_own(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    scripted = ScriptedLLM([{"text": str(i)} for i in range(4)])
    one, two = (worker_llm(redis_url, "marie", scripted) for _ in range(2))
    call(one)
    call(two)
    with pytest.raises(LLMAPIError, match="rate limit of marie"):
        call(one, timeout_s=0.3)
    anga = worker_llm(redis_url, "anga", scripted)
    call(anga)
    assert len(scripted.calls) == 3
    keys = sorted(redis_client.keys("*limit*"))
    assert keys == [b"crewbox:limit:anga:rate:requests", b"crewbox:limit:marie:rate:requests"]
    assert acl_denials(redis_client) == []
