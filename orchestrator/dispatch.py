"""The dependency graph of a plan, over :class:`graphlib.TopologicalSorter`.

A task becomes *ready* once every task it depends on has ended (whatever the outcome); the
caller then dispatches it, or skips it when a dependency did not succeed. Ready tasks come
high priority first, then in plan order.
"""

from __future__ import annotations

from graphlib import TopologicalSorter

from crewbox.models import PRIORITY_RANK, Plan, TaskSpec, TaskStatus


class DependencyGraph:
    """Tracks each task of a plan: waiting → ready (handed out once) → ended with a status."""

    def __init__(self, plan: Plan) -> None:
        self.specs = {t.id: t for t in plan.tasks}
        self._rank = {t.id: (PRIORITY_RANK[t.priority], i) for i, t in enumerate(plan.tasks)}
        self._sorter: TopologicalSorter[str] = TopologicalSorter(
            {t.id: t.depends_on for t in plan.tasks}
        )
        self._sorter.prepare()
        self.ended: dict[str, TaskStatus] = {}

    def ready(self) -> list[TaskSpec]:
        """Tasks that became ready since the last call (each is handed out once), high
        priority first, then plan order."""
        ids = sorted(self._sorter.get_ready(), key=self._rank.__getitem__)
        return [self.specs[i] for i in ids]

    def unmet(self, spec: TaskSpec) -> list[str]:
        """The dependencies of ``spec`` that ended without succeeding."""
        return [d for d in spec.depends_on if self.ended.get(d) != "succeeded"]

    def mark_ended(self, task_id: str, status: TaskStatus) -> None:
        """Record the final status of a ready task."""
        self.ended[task_id] = status
        self._sorter.done(task_id)

    @property
    def finished(self) -> bool:
        """True once every task has ended."""
        return not self._sorter.is_active()
