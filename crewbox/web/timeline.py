"""The timeline of a run, laid out from its events: one lane per persona, a bar per attempt.

Pure functions over a run's events (no I/O), so the layout is tested without a browser. The
page draws the result as SVG (crewbox/web/templates/timeline.svg.j2): x in SVG user units
(``WIDTH`` wide; the browser scales it to the page), time running left to right.

An attempt's bar runs from its ``task_started`` (its worker began) to the event that ended
it (``task_succeeded``/``failed``/``cancelled``/``budget_exceeded``, ``task_retried``,
``attempt_lost``, ``attempt_superseded``), or to ``now_s`` while it runs. The time it
waited in its persona's queue (``task_dispatched`` to ``task_started``) is a thin bar before
it. A dependency (``depends_on`` in the plan) is a line from the end of the dependency's
last bar to the start of the dependent's first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crewbox.models import TASK_END_KINDS, AttemptInfo, Event, PlanReady, TaskEnded

WIDTH = 1000.0
"""Width of the timeline in SVG user units."""

LABEL_W = 120.0
"""Left column (persona names) in SVG user units."""

ROW_H = 26.0
"""Height of one row of bars in a lane, in SVG user units."""

AXIS_H = 22.0
"""Height of the time axis above the lanes, in SVG user units."""

LANE_GAP = 6.0
"""Space between lanes, in SVG user units."""

ATTEMPT_ENDS = {
    "task_retried": "failed",
    "attempt_lost": "lost",
    "attempt_superseded": "superseded",
}
"""Events that end one attempt (not the task) and the attempt status each stands for."""

_XOf = Callable[[float], float]
"""Unix s -> x in SVG units."""


@dataclass
class Attempt:
    """One attempt of a task as the events tell it; times in Unix s (None: not yet)."""

    task_id: str
    persona: str
    attempt: int
    title: str = ""
    status: str = "queued"
    """queued, running, then succeeded, failed, cancelled, budget_exceeded, lost or
    superseded."""
    dispatched_s: float | None = None
    started_s: float | None = None
    ended_s: float | None = None
    worker: str = ""
    error: str = ""


@dataclass(frozen=True)
class Bar:
    """An attempt drawn, in SVG units: ``x``/``width`` of its run, ``queued_x``/
    ``queued_width`` of its wait in the queue (dispatched to started), ``y`` its row's top;
    ``seconds`` how long it ran (so far)."""

    task_id: str
    persona: str
    attempt: int
    title: str
    status: str
    worker: str
    error: str
    x: float
    width: float
    queued_x: float
    queued_width: float
    y: float
    seconds: float


@dataclass(frozen=True)
class Lane:
    """A persona's lane: its top ``y`` and ``height`` (one row per attempts that overlap)."""

    persona: str
    y: float
    height: float


@dataclass(frozen=True)
class Link:
    """A dependency: from the end of ``from_task``'s last bar to ``to_task``'s first."""

    from_task: str
    to_task: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Tick:
    """A mark of the time axis: ``label`` (``12s``) at ``x``."""

    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    """The laid-out run: ``width`` x ``height`` SVG units spanning ``start_s``..``end_s``."""

    lanes: list[Lane]
    bars: list[Bar]
    links: list[Link]
    ticks: list[Tick]
    width: float
    height: float
    start_s: float
    end_s: float


def attempts(events: list[Event]) -> list[Attempt]:
    """Every dispatched attempt of a run's ``events``, in dispatch order."""
    titles: dict[str, str] = {}
    found: dict[tuple[str, int], Attempt] = {}
    for event in events:
        if event.kind == "plan_ready":
            titles = {t.id: t.title for t in event.payload(PlanReady).plan.tasks}
        elif event.task_id:
            _apply(found, titles, event)
    return list(found.values())


def _apply(found: dict[tuple[str, int], Attempt], titles: dict[str, str], event: Event) -> None:
    task_id = event.task_id or ""
    kind = event.kind
    if kind == "task_dispatched":
        number = event.payload(AttemptInfo).attempt
        found[(task_id, number)] = Attempt(
            task_id, event.persona or "", number, titles.get(task_id, ""), "queued", event.ts_s
        )
        return
    number = _attempt_of(event)
    attempt = found.get((task_id, number)) if number else None
    if attempt is None or attempt.ended_s is not None:
        return
    if kind == "task_started":
        attempt.status, attempt.started_s = "running", event.ts_s
        attempt.worker = event.payload(AttemptInfo).worker
    elif kind in ATTEMPT_ENDS or kind in TASK_END_KINDS:
        attempt.status = ATTEMPT_ENDS.get(kind) or TASK_END_KINDS[kind]
        attempt.ended_s = event.ts_s
        attempt.error = "" if kind == "task_succeeded" else event.message


def _attempt_of(event: Event) -> int:
    """The attempt an event is about (0: none)."""
    if event.kind == "task_started" or event.kind in ATTEMPT_ENDS:
        return event.payload(AttemptInfo).attempt
    if event.kind in TASK_END_KINDS:
        return event.payload(TaskEnded).attempt
    return 0


def dependencies(events: list[Event]) -> list[tuple[str, str]]:
    """(dependency, dependent) task id pairs of the run's last plan."""
    pairs: list[tuple[str, str]] = []
    for event in events:
        if event.kind == "plan_ready":
            plan = event.payload(PlanReady).plan
            pairs = [(dep, t.id) for t in plan.tasks for dep in t.depends_on]
    return pairs


def layout(events: list[Event], now_s: float) -> Timeline:
    """The timeline of a run's ``events`` as of ``now_s`` (Unix s; running bars end there).

    Lanes are in order of each persona's first dispatch; within a lane, an attempt takes the
    first row where it overlaps no other (two workers of one persona run side by side).
    """
    found = attempts(events)
    start_s = events[0].ts_s if events else now_s
    end_s = max([now_s if a.ended_s is None else a.ended_s for a in found] or [start_s])
    end_s = max(end_s, start_s + 1.0)
    scale = (WIDTH - LABEL_W - 10.0) / (end_s - start_s)

    def x_of(t: float) -> float:
        return round(LABEL_W + (t - start_s) * scale, 1)

    lanes, bars, y = [], [], AXIS_H
    for persona in dict.fromkeys(a.persona for a in found):
        rows = _rows([a for a in found if a.persona == persona], now_s)
        for row, attempt in rows:
            bars.append(_bar(attempt, x_of, y + LANE_GAP / 2 + row * ROW_H, now_s))
        height = (max(r for r, _ in rows) + 1) * ROW_H + LANE_GAP
        lanes.append(Lane(persona, y, height))
        y += height
    return Timeline(
        lanes=lanes,
        bars=bars,
        links=_links(dependencies(events), bars),
        ticks=_ticks(start_s, end_s, x_of),
        width=WIDTH,
        height=y + 2.0,
        start_s=start_s,
        end_s=end_s,
    )


def _rows(lane: list[Attempt], now_s: float) -> list[tuple[int, Attempt]]:
    """Each attempt of one lane with the first row it fits in (greedy interval packing)."""
    row_ends: list[float] = []
    placed = []
    for attempt in sorted(lane, key=lambda a: _span(a, now_s)[0]):
        begin, finish = _span(attempt, now_s)
        row = next((i for i, end in enumerate(row_ends) if end <= begin), len(row_ends))
        if row == len(row_ends):
            row_ends.append(finish)
        row_ends[row] = finish
        placed.append((row, attempt))
    return placed


def _span(attempt: Attempt, now_s: float) -> tuple[float, float]:
    """(dispatched, ended or now) of an attempt, in Unix s."""
    begin = attempt.dispatched_s if attempt.dispatched_s is not None else now_s
    return begin, now_s if attempt.ended_s is None else attempt.ended_s


def _bar(attempt: Attempt, x_of: _XOf, y: float, now_s: float) -> Bar:
    queued_s, ended_s = _span(attempt, now_s)
    started_s = attempt.started_s if attempt.started_s is not None else ended_s
    return Bar(
        task_id=attempt.task_id,
        persona=attempt.persona,
        attempt=attempt.attempt,
        title=attempt.title,
        status=attempt.status,
        worker=attempt.worker,
        error=attempt.error,
        x=x_of(started_s),
        width=max(round(x_of(ended_s) - x_of(started_s), 1), 2.0),
        queued_x=x_of(queued_s),
        queued_width=round(x_of(started_s) - x_of(queued_s), 1),
        y=y,
        seconds=round(ended_s - started_s, 1),
    )


def _links(pairs: list[tuple[str, str]], bars: list[Bar]) -> list[Link]:
    half = (ROW_H - 6.0) / 2
    links = []
    for dep, task in pairs:
        before = [b for b in bars if b.task_id == dep]
        after = [b for b in bars if b.task_id == task]
        if before and after:
            a, b = before[-1], after[0]
            links.append(Link(dep, task, a.x + a.width, a.y + half, b.queued_x, b.y + half))
    return links


def _ticks(start_s: float, end_s: float, x_of: _XOf) -> list[Tick]:
    """About six marks at a round step (1, 2, 5, 10, 15, 30 s, then minutes)."""
    span = end_s - start_s
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if span / s <= 8), 1800)
    marks = [start_s + i * step for i in range(int(span // step) + 1)]
    return [Tick(x_of(t), _label(t - start_s)) for t in marks]


def _label(offset_s: float) -> str:
    seconds = round(offset_s)
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}"
