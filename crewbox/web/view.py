"""What the run view shows, read from a run log (never written): the runs with their status
and cost, and one run's timeline, per-persona usage and dead-letter queue.

I/O is only through the :class:`~crewbox.runlog.base.RunLog` given (files in embedded mode,
Redis in the cluster); every figure comes from the run's events or its summary, the same
records ``crewbox status`` and ``crewbox dlq list`` read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from crewbox.dlq import DeadLetter, dead_letters
from crewbox.errors import RunNotFoundError
from crewbox.models import RUN_ID_PATTERN, Event, LLMCall, RunSummary, Usage, add_usage
from crewbox.runlog.base import RunLog
from crewbox.web.timeline import Timeline, layout

MAX_RUNS = 200
"""The runs page lists this many of the newest runs."""

REQUEST_CHARS = 120
"""The runs page shows a request's first this many characters."""

VALID_RUN_ID = re.compile(RUN_ID_PATTERN)


@dataclass(frozen=True)
class RunRow:
    """One line of the runs page: ``created`` as ``YYYY-MM-DD HH:MM:SS`` UTC."""

    run_id: str
    created: str
    request: str
    status: str
    usage: Usage


@dataclass(frozen=True)
class RunView:
    """One run's page: its ``status`` (see :func:`run_status`); ``live`` while it may still
    change (no summary yet: the page keeps polling); usage per persona of its tasks' calls
    (``personas``), of the orchestrator's own calls (``orchestrator``: planner and
    synthesizer) and of the whole run (``total``: the sum of both)."""

    run_id: str
    request: str
    status: str
    live: bool
    timeline: Timeline
    personas: dict[str, Usage]
    orchestrator: Usage
    total: Usage
    dead: list[DeadLetter]
    summary: RunSummary | None


def valid_run_id(run_id: str) -> bool:
    """True when ``run_id`` has the shape of a run id (crewbox.models.RUN_ID_PATTERN)."""
    return VALID_RUN_ID.fullmatch(run_id) is not None


def run_status(log: RunLog, run_id: str, events: list[Event], summary: RunSummary | None) -> str:
    """``succeeded``/``partial``/``failed``/``cancelled`` from the summary; else ``failed``
    after a ``run_failed`` event, ``running`` while an owner holds the run's lease, else
    ``stopped`` (nobody drives it: ``crewbox resume`` goes on with it)."""
    if summary is not None:
        return summary.status
    if any(e.kind == "run_failed" for e in events):
        return "failed"
    return "running" if log.owner(run_id) else "stopped"


def usage_by_persona(events: list[Event]) -> dict[str, Usage]:
    """The usage of each persona's task calls (``llm_call`` events of stage ``tasks``), as
    the orchestrator sums it into summary.json's ``usage_by_persona``."""
    usage: dict[str, Usage] = {}
    for event in events:
        if event.kind == "llm_call" and event.persona:
            call = event.payload(LLMCall)
            if call.stage == "tasks":
                add_usage(usage, event.persona, call.usage)
    return usage


def orchestrator_usage(events: list[Event]) -> Usage:
    """The orchestrator's own calls (``llm_call`` events of stages ``planner`` and
    ``synthesizer``), summary.json's ``usage_by_stage`` of those two stages."""
    calls = (e.payload(LLMCall) for e in events if e.kind == "llm_call")
    return Usage.total(c.usage for c in calls if c.stage != "tasks")


def total_usage(events: list[Event]) -> Usage:
    """Every LLM call of the run so far (planner, tasks, synthesizer)."""
    return Usage.total(e.payload(LLMCall).usage for e in events if e.kind == "llm_call")


def run_rows(log: RunLog) -> list[RunRow]:
    """The newest MAX_RUNS runs, newest first.

    Raises:
        QueueError: the run log (Redis) is unreachable.
    """
    rows = []
    for run_id in reversed(log.runs()[-MAX_RUNS:]):
        summary = log.summary(run_id)
        events = [] if summary else log.events(run_id)
        try:
            request = log.request(run_id)
        except (RunNotFoundError, ValueError, OSError):  # unreadable request: list it anyway
            text, created = "", ""
        else:
            text, created = request.text[:REQUEST_CHARS], _utc(request.created_at_s)
        usage = summary.usage_total if summary else total_usage(events)
        rows.append(RunRow(run_id, created, text, run_status(log, run_id, events, summary), usage))
    return rows


def run_view(log: RunLog, run_id: str, now_s: float) -> RunView:
    """One run as of ``now_s`` (Unix s).

    Raises:
        RunNotFoundError: the run log has no such run.
        QueueError: the run log (Redis) is unreachable.
    """
    request = log.request(run_id)
    events, summary = log.events(run_id), log.summary(run_id)
    return RunView(
        run_id=run_id,
        request=request.text,
        status=run_status(log, run_id, events, summary),
        live=summary is None,
        timeline=layout(events, now_s),
        personas=usage_by_persona(events),
        orchestrator=orchestrator_usage(events),
        total=summary.usage_total if summary else total_usage(events),
        dead=dead_letters(events),
        summary=summary,
    )


def _utc(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%d %H:%M:%S")
