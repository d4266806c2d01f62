"""Budgets that hold: every LLM call is checked against them before it is made.

A run's budget (``--budget-usd``) and a persona's (``budget_usd`` in its front matter) are
limits on a *scope* of the run's spend ledger: ``run``, and ``persona:<name>``. Before a
call, :class:`BudgetedLLM` estimates what it may cost (:func:`estimate_call_usd`: its input
at about 4 characters a token plus all of ``max_tokens`` as output, at the model's list
prices, no cache discount) and *reserves* that much in every scope that has a limit; a
reservation that would take a scope past its limit is refused and the call is not made
(:class:`~crewbox.errors.BudgetExceededError`). After the call the reservation is settled
to what the call really cost (0 for a call that failed: nothing billed). Reservations are
atomic in the ledger (a file lock embedded, a Lua script in Redis), so workers running in
parallel, on any host, never reserve more than the budget together: spend stays within the
budget unless a call costs more than its estimate.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Unpack

from crewbox.errors import BudgetExceededError
from crewbox.llm.base import CallArgs, LLMClient, LLMResponse, Message, SystemBlock, ToolDef
from crewbox.llm.pricing import price_for
from crewbox.runlog.base import RunLog

CHARS_PER_TOKEN = 4
"""Characters per input token in the estimate: the usual rule of thumb for English text;
code and non-Latin text have more tokens per character (the reason for a margin below)."""

INPUT_MARGIN = Decimal("1.25")
"""The estimate's input tokens are the character count / CHARS_PER_TOKEN times this."""

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` of a call that names none (LLMClient.complete's default)."""

NANO_USD = Decimal("1e-9")
"""The ledger's unit: spend is kept as whole nano-dollars, so sums are exact."""

Limits = list[tuple[str, Decimal]]
"""(scope, limit in USD) pairs: ``("run", 0.50)``, ``("persona:marie", 0.10)``."""


def estimate_call_usd(
    model: str,
    system: list[SystemBlock],
    messages: list[Message],
    tools: list[ToolDef] | None,
    max_tokens: int,
) -> Decimal:
    """An upper estimate of one call's cost in USD (see the module docstring); 0 for a
    model with no price (a local model)."""
    price = price_for(model)
    if price is None:
        return Decimal(0)
    chars = sum(len(b.text) for b in system)
    chars += len(json.dumps([m.model_dump(mode="json") for m in messages]))
    chars += len(json.dumps([t.model_dump(mode="json") for t in tools or []]))
    input_tokens = math.ceil(Decimal(chars) / CHARS_PER_TOKEN * INPUT_MARGIN)
    total = input_tokens * price.input_usd_per_mtok + max_tokens * price.output_usd_per_mtok
    return total / 1_000_000


def to_nano(usd: Decimal) -> int:
    """``usd`` as whole nano-dollars, rounded up (a reservation never falls short)."""
    return math.ceil(usd / NANO_USD)


class BudgetedLLM:
    """An LLMClient that reserves each call's estimate in ``limits``' scopes of ``run_id``'s
    ledger (``run_log``) before making it, and settles it after (see the module docstring).
    """

    def __init__(self, inner: LLMClient, run_log: RunLog, run_id: str, limits: Limits) -> None:
        self.inner = inner
        self.model = inner.model
        self.run_log = run_log
        self.run_id = run_id
        self.limits = limits

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """``inner.complete`` once the estimate is reserved.

        Raises:
            BudgetExceededError: the call could take a scope past its limit (not made).
            LLMAPIError: the provider failed (the reservation is released).
        """
        estimate = estimate_call_usd(
            call.get("model") or self.model,
            call["system"],
            call["messages"],
            call.get("tools"),
            call.get("max_tokens", DEFAULT_MAX_TOKENS),
        )
        reserved = self._reserve(to_nano(estimate))
        spent = 0
        try:
            response = self.inner.complete(**call)
            spent = to_nano(response.usage.cost_usd)
            return response
        finally:
            for scope in reserved:
                self.run_log.settle_spend(self.run_id, scope, to_nano(estimate), spent)

    def _reserve(self, nano: int) -> list[str]:
        """Reserve ``nano`` in every scope; all or none.

        Raises:
            BudgetExceededError: a scope would pass its limit.
        """
        reserved: list[str] = []
        for scope, limit in self.limits:
            if not self.run_log.reserve_spend(self.run_id, scope, nano, to_nano(limit)):
                for done in reserved:
                    self.run_log.settle_spend(self.run_id, done, nano, 0)
                raise BudgetExceededError(
                    f"budget ${limit} of the {scope.replace(':', ' ')} reached: a call "
                    f"estimated at ${Decimal(nano) * NANO_USD:.6f} was not made",
                    scope=scope,
                )
            reserved.append(scope)
        return reserved


def budgeted(llm: LLMClient, run_log: RunLog, run_id: str, limits: Limits) -> LLMClient:
    """``llm`` behind the budgets of ``limits``, or ``llm`` itself when there are none."""
    return BudgetedLLM(llm, run_log, run_id, limits) if limits else llm
