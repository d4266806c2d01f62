"""The ``files`` RunLog: runs as folders under results/ (embedded mode), via RunStore.

Besides RunStore's layout it keeps, per run folder::

    owner.json     {"owner": "<host>:<pid>", "expires_at_s": <Unix s>}: the lease
    cancel         present once a cancel was requested
    spend.json     {"<scope>": {"spent": <nano-USD>, "held": {...}}}: per budget scope
    spend.json.lock  its lock (flock), so parallel workers hold money one at a time

A lease held by a process of this host that no longer runs has expired at once, so
``crewbox resume`` after a kill does not wait for LEASE_TTL_S.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path

from crewbox.models import Event, Request, RunSummary
from crewbox.procs import is_dead_local
from crewbox.queue.watch import DirWatcher
from crewbox.runlog.base import LEASE_TTL_S, Reservation, SpendHold
from crewbox.store import RunStore, locked_json, write_atomic

OWNER_FILE = "owner.json"
CANCEL_FILE = "cancel"
SPEND_FILE = "spend.json"


class FileRunLog:
    """RunLog over ``results_dir`` (see the module docstring)."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir

    def store(self, run_id: str) -> RunStore:
        """The run's folder."""
        return RunStore(self.results_dir, run_id)

    def create(self, request: Request) -> None:
        """Make the run folder and write request.json."""
        self.store(request.run_id).create(request)

    def request(self, run_id: str) -> Request:
        """The run's request.json.

        Raises:
            RunNotFoundError: no such run folder.
        """
        return RunStore.open(self.results_dir, run_id).request()

    def append(self, event: Event) -> None:
        """Append to the run's events.jsonl."""
        self.store(event.run_id).append_event(event)

    def events(self, run_id: str) -> list[Event]:
        """The run's events.jsonl."""
        return self.store(run_id).events()

    def follow(self, run_id: str, idle_s: float = 1.0) -> Iterator[Event | None]:
        """events.jsonl from the start, then new lines as they are appended (a None after
        each wait of at most ~0.25 s with nothing new; ``idle_s`` is not needed here)."""
        store = self.store(run_id)
        watcher = DirWatcher(store.folder)
        seen = 0
        try:
            while True:
                events = store.events()
                yield from events[seen:]
                if len(events) == seen:
                    watcher.wait()
                    yield None
                seen = len(events)
        finally:
            watcher.close()

    def finish(self, summary: RunSummary, final_text: str) -> None:
        """Write final.md and summary.json."""
        store = self.store(summary.run_id)
        store.write_final(final_text)
        store.write_summary(summary)

    def summary(self, run_id: str) -> RunSummary | None:
        """summary.json, or None."""
        return self.store(run_id).summary()

    def final(self, run_id: str) -> str | None:
        """final.md once summary.json exists, else None."""
        store = self.store(run_id)
        path = store.folder / "final.md"
        if store.summary() is None or not path.exists():
            return None
        return path.read_text(encoding="utf-8")

    def runs(self) -> list[str]:
        """Run folders with a request.json; run ids sort by time."""
        return sorted(p.parent.name for p in self.results_dir.glob("*/request.json"))

    # -- ownership and cancel ----------------------------------------------------------
    def acquire(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """Take the lease when it is free, expired, or already ``owner``'s."""
        with self._locked(run_id):
            current = self.owner(run_id)
            if current not in (None, owner):
                return False
            self._write_lease(run_id, owner, ttl_s)
            return True

    def renew(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """Extend the lease if ``owner`` holds it."""
        return self.acquire(run_id, owner, ttl_s) if self._holder(run_id) == owner else False

    def release(self, run_id: str, owner: str) -> None:
        """Remove owner.json if ``owner`` holds it."""
        with self._locked(run_id):
            if self._holder(run_id) == owner:
                (self.store(run_id).folder / OWNER_FILE).unlink(missing_ok=True)

    def owner(self, run_id: str) -> str | None:
        """The holder of a live lease, or None."""
        path = self.store(run_id).folder / OWNER_FILE
        try:
            lease = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        holder = str(lease.get("owner", ""))
        if float(lease.get("expires_at_s", 0)) < time.time() or _dead_local_process(holder):
            return None
        return holder

    def request_cancel(self, run_id: str) -> None:
        """Create the run's cancel marker.

        Raises:
            RunNotFoundError: no such run folder.
        """
        store = RunStore.open(self.results_dir, run_id)
        (store.folder / CANCEL_FILE).touch()

    def reserve_spend(self, run_id: str, hold: SpendHold) -> Reservation:
        """Put the hold in the run's ``spend.json`` under its lock (RunLog.reserve_spend)."""
        with locked_json(self.results_dir / run_id / SPEND_FILE) as ledger:
            entry = ledger.setdefault(hold.scope, {"spent": 0, "held": {}})
            now = time.time()
            entry["held"] = {k: v for k, v in entry["held"].items() if v[1] > now}
            held = sum(v[0] for v in entry["held"].values())
            if entry["spent"] + hold.nano_usd > hold.limit_nano_usd:
                return "over"
            if entry["spent"] + held + hold.nano_usd > hold.limit_nano_usd:
                return "busy"
            entry["held"][hold.hold_id] = [hold.nano_usd, now + hold.ttl_s]
            return "reserved"

    def settle_spend(self, run_id: str, hold: SpendHold, actual_nano_usd: int) -> None:
        """Drop the hold and add the actual cost in ``spend.json`` (once per hold)."""
        with locked_json(self.results_dir / run_id / SPEND_FILE) as ledger:
            entry = ledger.setdefault(hold.scope, {"spent": 0, "held": {}})
            if entry["held"].pop(hold.hold_id, None) is not None:
                entry["spent"] += actual_nano_usd

    def cancel_requested(self, run_id: str) -> bool:
        """True when the cancel marker exists."""
        return (self.store(run_id).folder / CANCEL_FILE).exists()

    def clear_cancel(self, run_id: str) -> None:
        """Remove the cancel marker (a resumed run is no longer being cancelled)."""
        (self.store(run_id).folder / CANCEL_FILE).unlink(missing_ok=True)

    def _holder(self, run_id: str) -> str | None:
        path = self.store(run_id).folder / OWNER_FILE
        try:
            return str(json.loads(path.read_text(encoding="utf-8")).get("owner"))
        except (OSError, ValueError):
            return None

    def _write_lease(self, run_id: str, owner: str, ttl_s: float) -> None:
        lease = {"owner": owner, "expires_at_s": time.time() + ttl_s}
        write_atomic(self.store(run_id).folder / OWNER_FILE, json.dumps(lease))

    @contextlib.contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        folder = RunStore.open(self.results_dir, run_id).folder
        with open(folder / ".owner.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _dead_local_process(owner: str) -> bool:
    """``owner`` is ``<host>:<pid>:<nonce>`` (see Orchestrator); True when that process of
    this host is gone."""
    host, pid, *_ = [*owner.split(":"), "", ""]
    return is_dead_local(host, pid)
