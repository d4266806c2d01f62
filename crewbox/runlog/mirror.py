"""A RunLog that writes to two logs and reads from the first: the cluster's orchestrator
keeps runs in Redis (the source of truth, shared by every orchestrator) and mirrors them
into results/<run_id>/ (events.jsonl, final.md, summary.json) for the user.

What Redis lost (the last second of writes in a kill, everything with a new volume) is put
back from the mirror: :meth:`MirroredRunLog.runs` re-registers the recent runs of the mirror
Redis no longer lists (request, events, answer, summary), and the owner of a run it drives
restores the run's missing events whenever its lease was found missing (renew)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from crewbox.errors import RunNotFoundError
from crewbox.models import Event, Request, RunSummary
from crewbox.runlog.base import LEASE_TTL_S, Reservation, RunLog, SpendHold

RESTORE_AGE_S = 7 * 24 * 3600
"""Runs of the mirror created longer ago than this are not put back in the primary (Redis
lets a run's keys expire after as long: crewbox.runlog.redis.RUN_TTL_S)."""

log = logging.getLogger("crewbox.runlog")


class MirroredRunLog:
    """Writes go to ``primary`` then ``mirror``; reads and ownership use ``primary`` only."""

    def __init__(self, primary: RunLog, mirror: RunLog) -> None:
        self.primary = primary
        self.mirror = mirror
        self._writing = threading.Lock()
        """Held by append and restore: a restore never interleaves with new events."""
        self._old: set[str] = set()
        """Runs of the mirror too old to restore (not read again)."""

    def restore(self, run_id: str) -> bool:
        """Put back in the primary what it lost of ``run_id`` and the mirror has: the
        request (and the run's place in the runs list), the events past the primary's last
        (the primary holds a prefix of them: what Redis loses is its latest writes), the
        answer and summary. True when anything was put back.

        Raises:
            QueueError: the primary cannot be reached.
        """
        try:
            request = self.mirror.request(run_id)
        except RunNotFoundError:
            return False
        with self._writing:
            restored = False
            try:
                self.primary.request(run_id)
            except RunNotFoundError:
                self.primary.create(request)
                restored = True
            have, mirrored = len(self.primary.events(run_id)), self.mirror.events(run_id)
            for event in mirrored[have:]:
                self.primary.append(event)
            summary = self.mirror.summary(run_id)
            if summary is not None and self.primary.summary(run_id) is None:
                self.primary.finish(summary, self.mirror.final(run_id) or "")
                restored = True
        if restored or len(mirrored) > have:
            log.warning("run %s: restored from results/ what Redis had lost", run_id)
        return restored or len(mirrored) > have

    def create(self, request: Request) -> None:
        """Create the run in both."""
        self.primary.create(request)
        self.mirror.create(request)

    def request(self, run_id: str) -> Request:
        """From the primary."""
        return self.primary.request(run_id)

    def append(self, event: Event) -> None:
        """Append to both."""
        with self._writing:
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
        """From the primary, once the mirror's recent runs it does not list are restored
        (:meth:`restore`: a Redis that lost data lists them again)."""
        listed = self.primary.runs()
        known = set(listed)
        missing = [r for r in self.mirror.runs() if r not in known and self._recent(r)]
        for run_id in missing:
            self.restore(run_id)
        return self.primary.runs() if missing else listed

    def _recent(self, run_id: str) -> bool:
        if run_id in self._old:
            return False
        try:
            created_s = self.mirror.request(run_id).created_at_s
        except RunNotFoundError:
            return False
        if time.time() - created_s >= RESTORE_AGE_S:
            self._old.add(run_id)
        return run_id not in self._old

    def acquire(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """On the primary."""
        return self.primary.acquire(run_id, owner, ttl_s)

    def renew(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """On the primary; a lease the primary lost (with the run's latest writes) is taken
        again and the run restored from the mirror first."""
        if self.primary.owner(run_id) is None:
            self.restore(run_id)
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
