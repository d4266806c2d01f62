"""The limiter's Redis store: WATCH/MULTI loses no update between a persona's processes,
under its own ACL user, and no persona can touch another's state."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from crewbox.errors import LLMAPIError
from crewbox.llm.limiter import AIMDLimiter, LimitPolicy, LimitState, RedisLimitStore
from tests.integration.conftest import acl_denials, acl_password

KEY = "marie:0123456789abcdef"


def store_of(redis_url: str, user: str) -> RedisLimitStore:
    """A store over its own connection, as each worker process has."""
    return RedisLimitStore(
        redis.Redis.from_url(redis_url, username=user, password=acl_password(user))
    )


def test_concurrent_updates_from_several_stores_lose_nothing(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    stores = [store_of(redis_url, "marie") for _ in range(4)]
    initial = LimitState(limit=8.0)

    def bump(state: LimitState) -> int:
        state.successes += 1
        return state.successes

    def work(store: RedisLimitStore) -> None:
        for _ in range(50):
            store.update(KEY, initial, bump)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = LimitState.model_validate_json(redis_client.get(f"crewbox:limit:{KEY}") or b"")
    assert final.successes == 200
    assert 0 < (redis_client.ttl(f"crewbox:limit:{KEY}") or 0) <= 7 * 24 * 3600
    assert acl_denials(redis_client) == []


def test_slots_are_shared_by_the_stores_of_one_credential(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    policy = LimitPolicy(max_limit=2)
    one, two = (AIMDLimiter(store_of(redis_url, "marie"), KEY, policy, 0.01) for _ in range(2))
    leases = [one.acquire(None), two.acquire(None)]
    assert len(set(leases)) == 2
    with pytest.raises(LLMAPIError, match="no free call slot"):
        one.acquire(deadline_m=time.monotonic() + 0.05)  # every slot is taken
    two.release(leases[0], "ok")  # another process's store frees it
    assert one.acquire(deadline_m=time.monotonic() + 0.05)


def test_a_persona_cannot_open_anothers_circuit_nor_run_lua(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    policy = LimitPolicy(max_limit=2)
    anga = AIMDLimiter(store_of(redis_url, "anga"), "anga:0123456789abcdef", policy, 0.01)
    assert anga.acquire(None)
    marie = redis.Redis.from_url(redis_url, username="marie", password=acl_password("marie"))
    opened = LimitState(limit=1.0, open_until_s=time.time() + 3600).model_dump_json()
    with pytest.raises(redis.exceptions.NoPermissionError):
        marie.set("crewbox:limit:anga:0123456789abcdef", opened)
    with pytest.raises(redis.exceptions.NoPermissionError):
        marie.eval("return 1", 0)
    with pytest.raises(redis.exceptions.NoPermissionError):
        store_of(redis_url, "marie").update("anga:0123456789abcdef", LimitState(limit=1.0), len)
    assert anga.acquire(deadline_m=time.monotonic() + 0.05)  # anga's circuit is still closed
