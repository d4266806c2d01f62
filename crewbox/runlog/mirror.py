"""A RunLog that writes to two logs and reads from the first: the cluster's orchestrator
keeps runs in Redis (the source of truth, shared by every orchestrator) and mirrors them
into results/<run_id>/ (events.jsonl, final.md, summary.json) for the user."""

from __future__ import annotations

from collections.abc import Iterator

from crewbox.models import Event, Request, RunSummary
from crewbox.runlog.base import LEASE_TTL_S, Reservation, RunLog, SpendHold


class MirroredRunLog:
    """Writes go to ``primary`` then ``mirror``; reads and ownership use ``primary`` only."""

    def __init__(self, primary: RunLog, mirror: RunLog) -> None:
        self.primary = primary
        self.mirror = mirror

    def create(self, request: Request) -> None:
        """Create the run in both."""
        self.primary.create(request)
        self.mirror.create(request)

    def request(self, run_id: str) -> Request:
        """From the primary."""
        return self.primary.request(run_id)

    def append(self, event: Event) -> None:
        """Append to both."""
        self.primary.append(event)
        self.mirror.append(event)

    def events(self, run_id: str) -> list[Event]:
        """From the primary."""
        return self.primary.events(run_id)

    def follow(self, run_id: str, idle_s: float = 1.0) -> Iterator[Event | None]:
        """From the primary."""
        return self.primary.follow(run_id, idle_s)

    def finish(self, summary: RunSummary, final_text: str) -> None:
        """Finish both."""
        self.primary.finish(summary, final_text)
        self.mirror.finish(summary, final_text)

    def summary(self, run_id: str) -> RunSummary | None:
        """From the primary."""
        return self.primary.summary(run_id)

    def final(self, run_id: str) -> str | None:
        """From the primary."""
        return self.primary.final(run_id)

    def runs(self) -> list[str]:
        """From the primary."""
        return self.primary.runs()

    def acquire(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """On the primary."""
        return self.primary.acquire(run_id, owner, ttl_s)

    def renew(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """On the primary."""
        return self.primary.renew(run_id, owner, ttl_s)

    def release(self, run_id: str, owner: str) -> None:
        """On the primary."""
        self.primary.release(run_id, owner)

    def owner(self, run_id: str) -> str | None:
        """On the primary."""
        return self.primary.owner(run_id)

    def request_cancel(self, run_id: str) -> None:
        """On the primary."""
        self.primary.request_cancel(run_id)

    def cancel_requested(self, run_id: str) -> bool:
        """On the primary."""
        return self.primary.cancel_requested(run_id)

    def reserve_spend(self, run_id: str, hold: SpendHold) -> Reservation:
        """The primary's ledger (Redis: shared by every host)."""
        return self.primary.reserve_spend(run_id, hold)

    def settle_spend(self, run_id: str, hold: SpendHold, actual_nano_usd: int) -> None:
        """The primary's ledger."""
        self.primary.settle_spend(run_id, hold, actual_nano_usd)

    def clear_cancel(self, run_id: str) -> None:
        """On the primary."""
        self.primary.clear_cancel(run_id)
