"""The Redis RunLog of the cluster.

Keys (``<run>`` is a run_id; each expires RUN_TTL_S after its last write)::

    zset    crewbox:runs                 run ids by creation time
    string  crewbox:run:<run>:request    the Request JSON
    stream  crewbox:run:<run>:events     every event of the run (field ``event``)
    string  crewbox:run:<run>:owner      the owner lease: owner id, with a PX expiry
    string  crewbox:run:<run>:cancel     "1" once a cancel was requested
    string  crewbox:run:<run>:final      the synthesis (final.md)
    string  crewbox:run:<run>:summary    the RunSummary JSON
    hash    crewbox:run:<run>:spend:<who>  the spend ledger of one spender (``orchestrator``
                                         or a persona: the connection's ACL user): <scope> ->
                                         nano-USD spent; <scope>|<id> -> "<nano-USD>:<expiry
                                         s>", a hold of a call

Each spender writes only its own ledger (a persona's Redis user may write no other,
crewbox.acl) with WATCH/MULTI, no Lua; a hold in the ``run`` scope watches and sums the
ledgers of the hold's sharers too, so spenders in parallel never hold more than the budget
together, and no spender can change what another spent. Negative amounts count as 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import redis

from crewbox.errors import RunNotFoundError
from crewbox.models import Event, Request, RunSummary
from crewbox.redis_client import call, text, username_of
from crewbox.runlog.base import LEASE_TTL_S, Reservation, SpendHold

RUN_TTL_S = 7 * 24 * 3600
"""How long a run's keys stay in Redis after its last write (7 days)."""

EVENTS_MAXLEN = 100_000
"""Cap on one run's event stream (approximate trimming)."""

RUNS_KEY = "crewbox:runs"

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _sharers(hold: SpendHold, spender: str) -> list[str]:
    """The other spenders whose ledgers count for ``hold``: its sharers in the ``run``
    scope (always with the orchestrator), none in a persona's scope (only that persona
    spends there: another's ledger cannot move its budget)."""
    if hold.scope != "run":
        return []
    return sorted({*hold.sharers, "orchestrator"} - {spender})


def _tally(ledger: dict[bytes, bytes], scope: str, now_s: float) -> tuple[int, int, list[bytes]]:
    """(spent, held, expired hold fields) of ``scope`` in one spender's ledger (HGETALL);
    unreadable or negative amounts count as 0."""
    spent = held = 0
    expired: list[bytes] = []
    prefix = f"{scope}|".encode()
    for field, value in ledger.items():
        if field == scope.encode():
            spent += max(0, _int(value.decode(errors="replace")))
        elif field.startswith(prefix):
            amount, _, expiry = value.decode(errors="replace").partition(":")
            if _float(expiry) <= now_s:
                expired.append(field)
            else:
                held += max(0, _int(amount))
    return spent, held, expired


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


def run_key(run_id: str, part: str) -> str:
    """The Redis key of one part of a run (request, events, owner, inbox, ...)."""
    return f"crewbox:run:{run_id}:{part}"


class RedisRunLog:
    """RunLog over Redis (see the module docstring)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self._renew = connection.register_script(RENEW_SCRIPT)
        self._release = connection.register_script(RELEASE_SCRIPT)
        self.spender = username_of(connection)

    def create(self, request: Request) -> None:
        """Store the request and list the run."""
        pipe = self.redis.pipeline()
        pipe.set(run_key(request.run_id, "request"), request.model_dump_json(), ex=RUN_TTL_S)
        pipe.zadd(RUNS_KEY, {request.run_id: request.created_at_s})
        call(pipe.execute)

    def request(self, run_id: str) -> Request:
        """The run's request.

        Raises:
            RunNotFoundError: Redis does not know the run.
        """
        raw = call(lambda: self.redis.get(run_key(run_id, "request")))
        if raw is None:
            raise RunNotFoundError(f"no run {run_id!r} in Redis; `crewbox status` lists runs")
        return Request.model_validate_json(raw)

    def append(self, event: Event) -> None:
        """XADD to the run's stream."""
        key = run_key(event.run_id, "events")
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"event": event.model_dump_json()}, maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.expire(key, RUN_TTL_S)
        call(pipe.execute)

    def events(self, run_id: str) -> list[Event]:
        """XRANGE of the run's stream."""
        entries: Any = call(lambda: self.redis.xrange(run_key(run_id, "events")))
        return [Event.model_validate_json(fields[b"event"]) for _, fields in entries]

    def follow(self, run_id: str, idle_s: float = 1.0) -> Iterator[Event | None]:
        """XREAD the stream from its start, blocking up to ``idle_s`` at a time."""
        key, last = run_key(run_id, "events"), "0"
        while True:
            batches = self._read(key, last, round(idle_s * 1000))
            if not batches:
                yield None
                continue
            for entry_id, fields in batches[0][1]:
                last = entry_id
                yield Event.model_validate_json(fields[b"event"])

    def _read(self, key: str, last: str, block_ms: int) -> Any:
        return call(lambda: self.redis.xread({key: last}, block=block_ms, count=100))

    def finish(self, summary: RunSummary, final_text: str) -> None:
        """SET the summary and the answer."""
        pipe = self.redis.pipeline()
        pipe.set(run_key(summary.run_id, "summary"), summary.model_dump_json(), ex=RUN_TTL_S)
        pipe.set(run_key(summary.run_id, "final"), final_text, ex=RUN_TTL_S)
        call(pipe.execute)

    def summary(self, run_id: str) -> RunSummary | None:
        """The summary, or None."""
        raw = call(lambda: self.redis.get(run_key(run_id, "summary")))
        return RunSummary.model_validate_json(raw) if raw else None

    def final(self, run_id: str) -> str | None:
        """The answer, or None."""
        raw = call(lambda: self.redis.get(run_key(run_id, "final")))
        return None if raw is None else text(raw)

    def runs(self) -> list[str]:
        """Run ids by creation time."""
        return [text(r) for r in call(lambda: self.redis.zrange(RUNS_KEY, 0, -1))]

    def acquire(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """SET NX PX, or renew when ``owner`` already holds it."""
        key, ttl_ms = run_key(run_id, "owner"), round(ttl_s * 1000)
        if call(lambda: self.redis.set(key, owner, nx=True, px=ttl_ms)):
            return True
        return self.renew(run_id, owner, ttl_s)

    def renew(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """PEXPIRE the lease if ``owner`` holds it (atomically, in a Lua script); a lease
        Redis lost (a restart that lost its last writes, a new volume) is taken again with
        SET NX: the owner still drives the run, and only another holder (or a summary: the
        run was finished by another owner meanwhile) means it is lost."""
        key, ttl_ms = run_key(run_id, "owner"), round(ttl_s * 1000)
        if call(lambda: self._renew(keys=[key], args=[owner, ttl_ms])):
            return True
        if call(lambda: self.redis.exists(run_key(run_id, "summary"))):
            return False
        return bool(call(lambda: self.redis.set(key, owner, nx=True, px=ttl_ms)))

    def release(self, run_id: str, owner: str) -> None:
        """DEL the lease if ``owner`` holds it."""
        call(lambda: self._release(keys=[run_key(run_id, "owner")], args=[owner]))

    def owner(self, run_id: str) -> str | None:
        """The lease holder, or None."""
        raw = call(lambda: self.redis.get(run_key(run_id, "owner")))
        return None if raw is None else text(raw)

    def request_cancel(self, run_id: str) -> None:
        """SET the cancel flag.

        Raises:
            RunNotFoundError: Redis does not know the run.
        """
        self.request(run_id)
        call(lambda: self.redis.set(run_key(run_id, "cancel"), "1", ex=RUN_TTL_S))

    def reserve_spend(self, run_id: str, hold: SpendHold) -> Reservation:
        """Expire, check and hold in one transaction over this spender's ledger and, in the
        ``run`` scope, its sharers' (WATCHed: a change of any of them starts it over)."""
        own = run_key(run_id, f"spend:{self.spender}")
        others = [run_key(run_id, f"spend:{w}") for w in _sharers(hold, self.spender)]

        def attempt(pipe: Any) -> Reservation:
            now_s = time.time()
            spent, held, expired = _tally(pipe.hgetall(own), hold.scope, now_s)
            for key in others:
                more_spent, more_held, _ = _tally(pipe.hgetall(key), hold.scope, now_s)
                spent, held = spent + more_spent, held + more_held
            answer: Reservation = "reserved"
            if spent + hold.nano_usd > hold.limit_nano_usd:
                answer = "over"
            elif spent + held + hold.nano_usd > hold.limit_nano_usd:
                answer = "busy"
            pipe.multi()
            if expired:
                pipe.hdel(own, *expired)
            if answer == "reserved":
                expiry_s = now_s + hold.ttl_s
                pipe.hset(own, f"{hold.scope}|{hold.hold_id}", f"{hold.nano_usd}:{expiry_s}")
                pipe.expire(own, RUN_TTL_S)
            return answer

        return cast(Reservation, call(lambda: self._transaction(attempt, own, *others)))

    def settle_spend(self, run_id: str, hold: SpendHold, actual_nano_usd: int) -> None:
        """Drop the hold and add the actual cost to this spender's ledger, once."""
        own = run_key(run_id, f"spend:{self.spender}")
        field = f"{hold.scope}|{hold.hold_id}"

        def attempt(pipe: Any) -> None:
            held = pipe.hexists(own, field)
            pipe.multi()
            if held:
                pipe.hdel(own, field)
                pipe.hincrby(own, hold.scope, max(0, actual_nano_usd))

        call(lambda: self._transaction(attempt, own))

    def _transaction(self, fn: Any, *keys: str) -> Any:
        return self.redis.transaction(fn, *keys, value_from_callable=True)

    def cancel_requested(self, run_id: str) -> bool:
        """True when the cancel flag is set."""
        return bool(call(lambda: self.redis.exists(run_key(run_id, "cancel"))))

    def clear_cancel(self, run_id: str) -> None:
        """DEL the cancel flag."""
        call(lambda: self.redis.delete(run_key(run_id, "cancel")))
