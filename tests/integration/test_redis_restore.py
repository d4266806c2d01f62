"""What Redis lost is put back from results/ (crewbox.runlog.mirror): the runs list, a
run's request, events, answer and summary, and the lease of a run its owner drives."""

from __future__ import annotations

from pathlib import Path

import redis

from crewbox.models import Event, Request, RunSummary, Usage
from crewbox.runlog.files import FileRunLog
from crewbox.runlog.mirror import MirroredRunLog
from crewbox.runlog.redis import RedisRunLog


def logs(redis_client: redis.Redis, tmp_path: Path) -> tuple[MirroredRunLog, RedisRunLog]:
    primary = RedisRunLog(redis_client)
    return MirroredRunLog(primary, FileRunLog(tmp_path / "results")), primary


def summary_of(run_id: str) -> RunSummary:
    zero = Usage()
    return RunSummary(
        run_id=run_id, request="hi", status="succeeded", started_at_s=1, ended_at_s=2,
        duration_ms=1000, tasks=[], usage_by_persona={}, usage_by_stage={}, usage_total=zero,
    )  # fmt: skip


def test_a_finished_run_redis_lost_is_listed_and_readable_again(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    log, primary = logs(redis_client, tmp_path)
    log.create(Request(text="hi", run_id="r1"))
    for kind in ("run_started", "run_finished"):
        log.append(Event.of(kind, "r1"))
    log.finish(summary_of("r1"), "the answer")
    redis_client.flushdb()  # a new volume, or a Redis that lost its AOF
    assert primary.runs() == []
    assert log.runs() == ["r1"]
    assert [e.kind for e in primary.events("r1")] == ["run_started", "run_finished"]
    assert primary.final("r1") == "the answer"
    assert primary.summary("r1") == summary_of("r1")
    assert log.runs() == ["r1"] and len(primary.events("r1")) == 2  # nothing twice


def test_the_owner_takes_its_lost_lease_again_and_puts_back_lost_events(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    log, primary = logs(redis_client, tmp_path)
    log.create(Request(text="hi", run_id="r2"))
    assert log.acquire("r2", "me")
    for kind in ("run_started", "plan_ready", "task_dispatched"):
        log.append(Event.of(kind, "r2"))
    entries = redis_client.xrange("crewbox:run:r2:events")
    redis_client.xdel("crewbox:run:r2:events", entries[-1][0])  # its last second lost
    redis_client.delete("crewbox:run:r2:owner")
    assert log.renew("r2", "me")
    assert primary.owner("r2") == "me"
    assert [e.kind for e in primary.events("r2")] == [
        "run_started",
        "plan_ready",
        "task_dispatched",
    ]
    primary.acquire("r3", "other")
    assert not log.renew("r3", "me")  # held by another: lost indeed
    log.finish(summary_of("r2"), "done elsewhere")
    redis_client.delete("crewbox:run:r2:owner")
    assert not log.renew("r2", "me")  # another owner finished it: not taken again
