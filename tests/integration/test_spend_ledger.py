"""The Redis spend ledger kept per spender: a run's budget holds across personas writing
their own ledgers in parallel, and no persona can change what another spent."""

from __future__ import annotations

import threading

import pytest
import redis

from crewbox.runlog.base import SpendHold
from crewbox.runlog.redis import RedisRunLog
from tests.integration.conftest import acl_denials, acl_password

SPENDERS = ("marie", "anga", "fabien")


def log_of(redis_url: str, user: str) -> RedisRunLog:
    connection = redis.Redis.from_url(redis_url, username=user, password=acl_password(user))
    return RedisRunLog(connection)


def run_hold(hold_id: str, nano: int, limit: int = 1000) -> SpendHold:
    return SpendHold("run", hold_id, nano, limit, 60, SPENDERS)


def test_parallel_spenders_never_hold_more_than_the_run_budget_together(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    reserved: list[int] = []

    def spend(user: str) -> None:
        log = log_of(redis_url, user)
        for i in range(30):
            hold = run_hold(f"{user}{i}", 30)
            if log.reserve_spend("r", hold) == "reserved":
                reserved.append(30)
                log.settle_spend("r", hold, 30)

    threads = [threading.Thread(target=spend, args=(u,)) for u in (*SPENDERS, "orchestrator")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 300 <= sum(reserved) <= 1000
    ledgers = redis_client.keys("crewbox:run:r:spend:*")
    assert {k.decode().rsplit(":", 1)[1] for k in ledgers} <= {*SPENDERS, "orchestrator"}
    total = sum(int(redis_client.hget(k, "run") or 0) for k in ledgers)
    assert total == sum(reserved)
    assert acl_denials(redis_client) == []


def test_a_persona_cannot_change_what_another_spent(
    redis_url: str, redis_client: redis.Redis, acl_users: list[str]
) -> None:
    anga = log_of(redis_url, "anga")
    assert anga.reserve_spend("r", run_hold("a1", 600)) == "reserved"
    anga.settle_spend("r", run_hold("a1", 600), 600)
    marie = redis.Redis.from_url(redis_url, username="marie", password=acl_password("marie"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        marie.hset("crewbox:run:r:spend:anga", "run", 0)
    with pytest.raises(redis.exceptions.NoPermissionError):
        marie.delete("crewbox:run:r:spend:anga")
    marie.hset("crewbox:run:r:spend:marie", "run", -10_000)  # its own ledger: counts as 0
    marie.hset("crewbox:run:r:spend:marie", "persona:anga", 10_000)  # not anga's scope
    assert anga.reserve_spend("r", run_hold("a2", 500)) == "over"
    persona = SpendHold("persona:anga", "a3", 100, 200, 60, SPENDERS)
    assert anga.reserve_spend("r", persona) == "reserved"
