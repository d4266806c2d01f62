"""The RunLog protocol: a run's request, append-only events, answer, summary and owner.

A run is rebuilt by replaying its events (see ``orchestrator.replay``), so everything the
orchestrator decides is an event first. Ownership is a lease: the owner renews it every
LEASE_RENEW_S; a lease not renewed for LEASE_TTL_S has expired and another orchestrator (or
``crewbox resume``) may take the run over. Workers run a task only while its run has a live
owner, so nothing of an ended or abandoned run is ever executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from crewbox.models import Event, Request, RunSummary

Reservation = Literal["reserved", "busy", "over"]
"""What :meth:`RunLog.reserve_spend` made of a request to hold money."""


@dataclass(frozen=True)
class SpendHold:
    """Money one LLM call holds in a budget scope of a run until it is settled.

    ``scope``: ``run`` or ``persona:<name>``; ``hold_id``: the call's (random); ``nano_usd``:
    the call's estimate; ``limit_nano_usd``: the scope's budget; ``ttl_s``: after this the
    hold expires (its process died mid-call); ``sharers``: see below. Amounts in whole
    nano-dollars.
    """

    scope: str
    hold_id: str
    nano_usd: int
    limit_nano_usd: int
    ttl_s: float
    sharers: tuple[str, ...] = ()
    """Who else spends in this scope (the run scope: the orchestrator and the run's
    personas): a ledger kept per spender (Redis) sums their spend and holds too."""


LEASE_TTL_S = 10.0
"""A run's owner lease lasts this long unless renewed."""

LEASE_RENEW_S = 2.0
"""How often the owner renews its lease (well inside LEASE_TTL_S)."""


class RunLog(Protocol):
    """Where runs live; every method may raise QueueError when the backend is unreachable."""

    def create(self, request: Request) -> None:
        """Record a new run and its request (listed by :meth:`runs` from now on)."""
        ...

    def request(self, run_id: str) -> Request:
        """The run's request.

        Raises:
            RunNotFoundError: no such run.
        """
        ...

    def append(self, event: Event) -> None:
        """Append ``event`` to its run's log."""
        ...

    def events(self, run_id: str) -> list[Event]:
        """Every event of the run so far, in order (empty for an unknown run)."""
        ...

    def follow(self, run_id: str, idle_s: float = 1.0) -> Iterator[Event | None]:
        """The run's events from the first, then as they come; None after each idle wait of
        ``idle_s`` with nothing new (so the caller can check other things)."""
        ...

    def finish(self, summary: RunSummary, final_text: str) -> None:
        """Store the run's summary and answer."""
        ...

    def summary(self, run_id: str) -> RunSummary | None:
        """The run's summary, or None while it has not finished."""
        ...

    def final(self, run_id: str) -> str | None:
        """The run's answer (final.md), or None while it has not finished."""
        ...

    def runs(self) -> list[str]:
        """Every run id known, oldest first."""
        ...

    def acquire(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """Become the run's owner for ``ttl_s`` unless another owner's lease is live; True
        when ``owner`` holds the lease (newly or already)."""
        ...

    def renew(self, run_id: str, owner: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """Extend ``owner``'s lease; False when it no longer holds it."""
        ...

    def release(self, run_id: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""
        ...

    def owner(self, run_id: str) -> str | None:
        """The live owner of the run, or None (never owned, ended, or its lease expired)."""
        ...

    def request_cancel(self, run_id: str) -> None:
        """Ask the run's owner and workers to cancel it."""
        ...

    def cancel_requested(self, run_id: str) -> bool:
        """True once :meth:`request_cancel` was called for the run."""
        ...

    def clear_cancel(self, run_id: str) -> None:
        """Forget a cancel request (``crewbox resume`` of a cancelled run)."""
        ...

    def reserve_spend(self, run_id: str, hold: SpendHold) -> Reservation:
        """Put ``hold`` in the run's spend ledger, atomically, unless what its scope spent
        and holds would then pass the hold's limit.

        Returns ``reserved``; ``busy`` when only other holds are in the way (they may
        settle for less); ``over`` when what was spent already leaves too little."""
        ...

    def settle_spend(self, run_id: str, hold: SpendHold, actual_nano_usd: int) -> None:
        """Replace ``hold`` by what the call really cost; a second settle of the same hold
        (a retried command) changes nothing."""
        ...
