"""Losses judged by the workers' clocks: a late (paused) orchestrator loses nothing live,
and a result that arrives is never thrown away (files queue, worker threads, scripted LLM)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewbox.config import Settings
from crewbox.models import Event, Plan, Request
from crewbox.testing import ScriptedLLM
from tests.conftest import scripted_settings, spec
from tests.unit.test_liveness import Crew

PAUSE_S = 15.0
"""How long the orchestrator's loop stalls (issue 18: a busy orchestrator read results a
median 20 s late); five heartbeat timeouts."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return scripted_settings(
        tmp_path, task_retries=1, heartbeat_timeout_s=3.0, start_timeout_s=30.0
    )


@pytest.fixture
def crews(settings: Settings) -> Iterator[list[Crew]]:
    made: list[Crew] = []
    yield made
    for crew in made:
        crew.stop.set()


def test_a_paused_orchestrator_dispatches_no_attempt_again(
    settings: Settings, crews: list[Crew]
) -> None:
    """The loop stalls PAUSE_S while handling the first task_started: meanwhile both tasks
    end and their heartbeats stop. Read late, they are results, not losses."""
    steps: list[dict[str, object]] = [
        {"match": "Task id: a", "text": "done a", "delay_s": 1.0},
        {"match": "Task id: b", "text": "done b", "delay_s": 1.0},
        {"match": "## Results", "text": "answer"},
    ]
    crew = Crew(settings, ScriptedLLM(steps))
    crews.append(crew)
    paused: list[float] = []

    def stall(event: Event) -> None:
        crew.events.append(event)
        if event.kind == "task_started" and not paused:
            paused.append(time.monotonic())
            time.sleep(PAUSE_S)  # the orchestrator's loop stops here, its workers do not

    crew.orchestrator.on_event = stall
    crew.start_worker("marie")
    crew.start_worker("anga")
    plan = Plan.model_validate({"tasks": [spec("a", "marie"), spec("b", "anga")]})
    summary = crew.orchestrator.run(Request(text="req", plan=plan))
    assert paused
    assert summary.status == "succeeded"
    kinds = [e.kind for e in crew.events]
    assert "attempt_lost" not in kinds and "attempt_superseded" not in kinds
    assert kinds.count("task_dispatched") == 2


def test_a_task_with_a_succeeded_attempt_never_ends_failed(
    settings: Settings, crews: list[Crew], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 is judged lost while it runs (its heartbeat read as stale once); attempt 2
    waits behind it and fails. Attempt 1's success arrives first: the task ends succeeded
    with it; attempt 2 is withdrawn, or superseded when its worker took it already."""
    error = {"status": 400, "message": "scripted refusal"}
    steps: list[dict[str, object]] = [
        {"match": "Task id: a", "text": "done a", "delay_s": 2.0},
        {"match": "Task id: a", "error": error},
        {"match": "## Results", "text": "answer"},
    ]
    crew = Crew(settings, ScriptedLLM(steps))
    crews.append(crew)
    beats = crew.queue.heartbeats
    faked: list[str] = []

    def stale_once(run_id: str, personas: object) -> dict[str, float]:
        got = beats(run_id, personas)  # type: ignore[arg-type]
        if got and not faked:
            faked.append(next(iter(got)))
            return {key: beat - 60.0 for key, beat in got.items()}
        return got

    monkeypatch.setattr(crew.queue, "heartbeats", stale_once)
    crew.start_worker("marie")
    plan = Plan.model_validate({"tasks": [spec("a", "marie")]})
    summary = crew.orchestrator.run(Request(text="req", plan=plan))
    assert faked
    (result,) = summary.tasks
    assert (result.status, result.attempt, result.summary) == ("succeeded", 1, "done a")
    assert summary.status == "succeeded"
    assert len(crew.of("attempt_lost", "a")) == 1
    assert len(crew.of("task_dispatched", "a")) == 2
    superseded = crew.of("attempt_superseded", "a")  # withdrawn, or its result set aside
    assert "attempt 1 succeeded first" in superseded[0].message
    assert not crew.of("task_failed", "a") and not crew.of("task_dead_lettered", "a")
    assert [e.kind for e in crew.of("task_succeeded", "a")] == ["task_succeeded"]
