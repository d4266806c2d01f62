"""The cluster's orchestrator service: several runs at once, and runs taken over.

A request from the requests queue starts a run in a thread once one of ``max_runs`` slots
is free (``CREWBOX_MAX_RUNS``). Every TAKEOVER_INTERVAL_S the pool also looks for runs
that still have work (see orchestrator.run.pending_work) and no live owner: their
orchestrator died, or ``crewbox dlq retry`` asked for a task again. It resumes them, so
a restarted or killed orchestrator loses nothing, and several orchestrators can share the
load: the owner lease lets exactly one drive each run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from crewbox.errors import CrewboxError
from crewbox.models import Request, RunSummary
from crewbox.runlog.base import LEASE_TTL_S, RunLog
from orchestrator.run import pending_work
from orchestrator.service import Orchestrator

TAKEOVER_INTERVAL_S = LEASE_TTL_S / 2
"""How often the pool looks for runs without a live owner (seconds)."""

UNSTARTED_GRACE_S = 60.0
"""A run whose request is older than this and that has no event yet is taken over (its
request was accepted by an orchestrator that died before starting it)."""

RECENT_RUNS = 500
"""How many of the newest runs the takeover scan looks at."""

log = logging.getLogger("crewbox.orchestrator")


class RunPool:
    """Drives runs in threads, at most ``max_runs`` at once (see the module docstring)."""

    def __init__(self, orchestrator: Orchestrator, run_log: RunLog, max_runs: int) -> None:
        self.orchestrator = orchestrator
        self.log = run_log
        self.slots = threading.BoundedSemaphore(max_runs)
        self.driving: set[str] = set()
        self._lock = threading.Lock()

    def accept(self, request: Request) -> None:
        """Start ``request``'s run once a slot is free (blocks until then)."""
        self.slots.acquire()
        self._start(request.run_id, lambda: self.orchestrator.run(request))

    def accept_resume(self, run_id: str) -> None:
        """Go on with ``run_id`` (``crewbox resume`` in the cluster: a cancelled or failed
        run, or one whose owner is gone) once a slot is free; nothing when this
        orchestrator drives it already."""
        with self._lock:
            if run_id in self.driving:
                log.info("run %s: resume asked while it runs here; nothing to do", run_id)
                return
        self.slots.acquire()
        self._start(run_id, lambda: self.orchestrator.resume(run_id))

    def take_over(self) -> list[str]:
        """Resume every recent run that has work and no live owner, while slots are free.

        Returns the run ids taken over.
        """
        taken = []
        for run_id in self.log.runs()[-RECENT_RUNS:]:
            if run_id in self.driving or not self._orphaned(run_id):
                continue
            if not self.slots.acquire(blocking=False):
                break
            self._start(run_id, lambda rid=run_id: self.orchestrator.resume(rid))  # type: ignore[misc]
            taken.append(run_id)
        return taken

    def _orphaned(self, run_id: str) -> bool:
        """True for a run with work left and no live owner. A run with no event yet counts
        only once its request is older than UNSTARTED_GRACE_S: until then its request job
        is about to start it."""
        if self.log.owner(run_id) is not None:
            return False
        events = self.log.events(run_id)
        if not events:
            return time.time() - self.log.request(run_id).created_at_s > UNSTARTED_GRACE_S
        return pending_work(events)[0]

    def serve_takeovers(self, stop: threading.Event) -> None:
        """Call :meth:`take_over` at once, then every TAKEOVER_INTERVAL_S until ``stop``."""
        while not stop.is_set():
            try:
                for run_id in self.take_over():
                    log.info("run %s: taken over (its owner is gone)", run_id)
            except CrewboxError as exc:
                log.warning("takeover scan failed: %s", exc)
            stop.wait(TAKEOVER_INTERVAL_S)

    def _start(self, run_id: str, drive: Callable[[], RunSummary]) -> None:
        with self._lock:
            self.driving.add(run_id)
        threading.Thread(target=self._drive, args=(run_id, drive), name=f"run-{run_id}").start()

    def _drive(self, run_id: str, drive: Callable[[], RunSummary]) -> None:
        try:
            drive()
        except CrewboxError as exc:
            log.warning("run %s: %s", run_id, exc)
        except Exception:  # a bug: the run_failed event is out; keep serving
            log.exception("run %s failed", run_id)
        finally:
            with self._lock:
                self.driving.discard(run_id)
            self.slots.release()
