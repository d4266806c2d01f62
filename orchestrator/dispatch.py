"""The dependency graph of a plan: which tasks are ready, which can never run.

A task is *ready* when every task it depends on has succeeded; it is *blocked* when one of
them failed or was skipped. Ready tasks come high priority first, then in plan order.
"""

from __future__ import annotations

from crewbox.models import PRIORITY_RANK, Plan, TaskSpec, TaskStatus


class DependencyGraph:
    """Tracks each task of a plan: pending → dispatched → succeeded / failed / skipped."""

    def __init__(self, plan: Plan) -> None:
        self.specs = {t.id: t for t in plan.tasks}
        self.order = [t.id for t in plan.tasks]
        self.dispatched: set[str] = set()
        self.ended: dict[str, TaskStatus] = {}

    def pending(self) -> list[TaskSpec]:
        """Tasks neither dispatched nor ended, in plan order."""
        return [
            self.specs[i] for i in self.order if i not in self.dispatched and i not in self.ended
        ]

    def ready(self) -> list[TaskSpec]:
        """Pending tasks whose dependencies all succeeded, high priority first, then plan order."""
        ready = [
            t for t in self.pending() if all(self.ended.get(d) == "succeeded" for d in t.depends_on)
        ]
        return sorted(ready, key=lambda t: PRIORITY_RANK[t.priority])

    def blocked(self) -> list[TaskSpec]:
        """Pending tasks that can never run: a dependency failed or was skipped."""
        return [
            t
            for t in self.pending()
            if any(self.ended.get(d) in ("failed", "skipped") for d in t.depends_on)
        ]

    def mark_dispatched(self, task_id: str) -> None:
        """Record that ``task_id`` is on a queue."""
        self.dispatched.add(task_id)

    def mark_ended(self, task_id: str, status: TaskStatus) -> None:
        """Record the final status of ``task_id``."""
        self.dispatched.discard(task_id)
        self.ended[task_id] = status

    @property
    def finished(self) -> bool:
        """True once every task has ended."""
        return len(self.ended) == len(self.specs)

    @property
    def in_flight(self) -> set[str]:
        """Task ids dispatched and not yet ended."""
        return set(self.dispatched)
