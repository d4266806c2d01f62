"""The dead-letter queue: tasks that failed after all their retries, read from run logs.

A task enters it with a ``task_dead_lettered`` event; it leaves when a later attempt
succeeds (``crewbox dlq retry``) or a ``dlq_dropped`` event drops it (``crewbox dlq drop``).
Nothing is stored twice: the run log is the queue.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from crewbox.models import TASK_END_KINDS, AttemptInfo, Event, LLMCall
from crewbox.models import USD as USDType


class DeadLetter(BaseModel):
    """One task in the dead-letter queue: its last error, attempts and what they cost."""

    run_id: str
    task_id: str
    persona: str
    attempts: int
    error: str
    cost_usd: USDType = Decimal(0)


def dead_letters(events: list[Event]) -> list[DeadLetter]:
    """The tasks of one run's events that are in the dead-letter queue, in plan order."""
    letters: dict[str, DeadLetter] = {}
    attempts: dict[str, int] = {}
    cost: dict[str, Decimal] = {}
    for event in events:
        task_id = event.task_id or ""
        if event.kind == "task_dispatched":
            attempts[task_id] = max(attempts.get(task_id, 0), event.payload(AttemptInfo).attempt)
        elif event.kind == "llm_call" and task_id:
            cost[task_id] = cost.get(task_id, Decimal(0)) + event.payload(LLMCall).usage.cost_usd
        elif event.kind == "task_dead_lettered":
            letters[task_id] = DeadLetter(
                run_id=event.run_id,
                task_id=task_id,
                persona=event.persona or "",
                attempts=0,
                error=event.message,
            )
        elif event.kind in ("dlq_dropped", "dlq_retried") or TASK_END_KINDS.get(event.kind) in (
            "succeeded",
        ):
            letters.pop(task_id, None)
    for task_id, letter in letters.items():
        letter.attempts = attempts.get(task_id, 0)
        letter.cost_usd = cost.get(task_id, Decimal(0))
    return list(letters.values())
