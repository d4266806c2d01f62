"""Live progress of a run on stderr, rendered with rich from the run's events."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.markup import escape

from crewbox.models import Event, RunEnded, Usage

MARKS = {
    "task_dispatched": "[dim]→[/]",
    "task_started": "[cyan]▶[/]",
    "task_succeeded": "[green]✓[/]",
    "task_failed": "[red]✗[/]",
    "task_skipped": "[yellow]-[/]",
    "task_cancelled": "[yellow]⊘[/]",
    "task_budget_exceeded": "[red]$[/]",
    "task_retried": "[yellow]↻[/]",
    "attempt_lost": "[red]†[/]",
    "concurrency_changed": "[yellow]≈[/]",
}


def money(usd: Decimal | float) -> str:
    """``$0.0123``: four decimals, enough for single calls."""
    return f"${float(usd):.4f}"


def plural(count: int, noun: str) -> str:
    """``1 artifact``, ``2 artifacts``: ``count`` and ``noun``, plural unless it is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def usage_text(usage: Usage) -> str:
    """``12,345 tok $0.0123``: all tokens and the cost."""
    return f"{usage.total_tokens:,} tok {money(usage.cost_usd)}"


class ProgressPrinter:
    """Prints one line per notable event and keeps the run's running usage total.

    Not shown: ``run_started`` (the command names the run as it starts or follows it) and
    ``run_failed`` (the command ends with that error as its one ``crewbox: error:`` line).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.usage = Usage()

    def __call__(self, event: Event) -> None:
        """Render ``event`` (a callback for Orchestrator's ``on_event``)."""
        if event.kind == "llm_call":
            self.usage = self.usage + Usage.model_validate(event.data["usage"])
            return
        line = self.line(event)
        if line:
            self.console.print(line)

    def line(self, event: Event) -> str | None:
        """The rich-markup line for ``event``, or None for events not shown."""
        if event.kind in MARKS:
            return self._task_line(event)
        if event.kind == "plan_ready":
            tasks = event.data.get("plan", {}).get("tasks", [])
            names = ", ".join(f"{t['id']} ({t['persona']})" for t in tasks)
            return f"[bold]plan[/]: {escape(names)}"
        if event.kind == "personas_offered":
            offered = ", ".join(event.data.get("offered", []))
            return f"[bold]planner offered[/] {escape(event.message)}: {escape(offered)}"
        if event.kind in (
            "budget_exceeded",
            "plan_invalid",
            "plan_adjusted",
            "synthesis_failed",
            "cancel_requested",
            "run_resumed",
            "message_rejected",
        ):
            return f"[bold red]{event.kind.replace('_', ' ')}[/]: {escape(event.message)}"
        if event.kind == "run_finished":
            ended = event.payload(RunEnded)
            return f"[bold]run {ended.status}[/]: {usage_text(ended.usage)}"
        return None  # run_started: the command that starts or follows a run names it

    def _task_line(self, event: Event) -> str:
        who = f"{event.persona or '?':<8} {event.task_id or '?'}"
        detail = event.message
        if event.kind in (
            "task_succeeded",
            "task_failed",
            "task_cancelled",
            "task_budget_exceeded",
        ):
            d = event.data
            secs = d.get("duration_ms", 0) / 1000
            error = detail if event.kind != "task_succeeded" else ""
            detail = (
                f"{secs:.1f}s  {d.get('tokens', 0):,} tok  {money(d.get('cost_usd', 0))}  "
                f"{plural(len(d.get('artifacts', [])), 'artifact')}  {error}"
            )
        elif event.kind == "task_started":
            detail = f"on {event.data.get('worker', '?')}"
        return (
            f"{MARKS[event.kind]} {escape(who)}  {escape(detail.strip())}  [dim]{self.totals()}[/]"
        )

    def totals(self) -> str:
        """Running totals: tokens and cost so far."""
        return usage_text(self.usage)
