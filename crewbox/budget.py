"""Budgets that hold: every LLM call is checked against them before it is made.

A run's budget (``--budget-usd``) and a persona's (``budget_usd`` in its front matter) are
limits on a *scope* of the run's spend ledger: ``run``, and ``persona:<name>``. Before a
call, :class:`BudgetedLLM` estimates what it may cost (:func:`estimate_call_usd`: its input
at about 4 characters a token, x1.25, at the higher of the input and cache-write prices,
plus all of ``max_tokens`` as output; long-context prices above their threshold) and
*holds* that much in every scope that has a limit. When what was already spent leaves too
little, the call is not made (:class:`~crewbox.errors.BudgetExceededError`); when only other
calls' holds are in the way, it waits for them to settle. After the call the hold is
settled to what the call really cost (0 for a call that failed: nothing billed), once; a
hold of a process that died expires after the call's timeout. Holds are atomic in the
ledger (a file lock embedded, a WATCH/MULTI transaction over the run's per-spender ledgers
in Redis), so workers running in parallel, on
any host, never hold more than the budget together: spend stays within the budget unless
a call costs more than its estimate.

A call's ``max_tokens`` is capped to what the budgets can still pay: when its whole
estimate does not fit, it is tried again with fewer output tokens (:func:`output_ladder`,
each step CAP_STEP of the one before, down to MIN_OUTPUT_TOKENS) and made with the first
that fits; below the floor the call is not made. So a small budget still does work, and
spend still stays within the budget (an answer never has more than ``max_tokens``).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Unpack

from crewbox.config import Settings
from crewbox.errors import BudgetExceededError
from crewbox.llm.base import (
    CallArgs,
    LLMClient,
    LLMResponse,
    Message,
    SystemBlock,
    ToolDef,
    deadline_of,
    time_left,
)
from crewbox.llm.catalog import chars_per_token
from crewbox.llm.pricing import price_for
from crewbox.runlog.base import RunLog, SpendHold

CHARS_PER_TOKEN = 4
"""Characters per token of the 4.x tokenizers: the usual rule of thumb for English text;
code and non-Latin text have more tokens per character (the reason for a margin below).
The estimate uses each model's own ratio (crewbox.llm.catalog.chars_per_token)."""

MIN_OUTPUT_TOKENS = 1024
"""The smallest ``max_tokens`` a capped call is made with: less leaves a thinking model no
room to answer (its thinking counts in ``max_tokens``); below it the call is not made."""

CAP_STEP = Decimal("0.7")
"""Each smaller ``max_tokens`` tried is this fraction of the one before."""

INPUT_MARGIN = Decimal("1.25")
"""The estimate's input tokens are the character count / CHARS_PER_TOKEN times this."""

DEFAULT_HOLD_S = 600.0
"""How long a call with no ``timeout_s`` may hold its estimate (the client's own timeout)."""

HOLD_MARGIN_S = 60.0
"""Added to a call's timeout for its hold's expiry: a hold whose process died expires."""

BUSY_POLL_S = 0.1
"""How often a call waits for other calls' holds to settle, in seconds."""

BUSY_WAIT_MAX_S = 300.0
"""Longest such wait for a call without a ``timeout_s``, in seconds."""

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
    input_tokens = estimate_input_tokens(system, messages, tools, chars_per_token(model))
    price = price.for_prompt(input_tokens)  # long-context prices above their threshold
    prompt = max(price.usd(input=input_tokens), price.usd(cache_write=input_tokens))
    return prompt + price.usd(output=max_tokens)


def estimate_input_tokens(
    system: list[SystemBlock],
    messages: list[Message],
    tools: list[ToolDef] | None,
    chars_per_token: float = CHARS_PER_TOKEN,
) -> int:
    """An upper estimate of a call's prompt tokens: its characters (system text, messages
    and tools as JSON) over ``chars_per_token`` (the model's tokenizer), times
    INPUT_MARGIN."""
    chars = sum(len(b.text) for b in system)
    chars += len(json.dumps([m.model_dump(mode="json") for m in messages]))
    chars += len(json.dumps([t.model_dump(mode="json") for t in tools or []]))
    return math.ceil(Decimal(chars) / Decimal(str(chars_per_token)) * INPUT_MARGIN)


def output_ladder(max_tokens: int, floor: int = MIN_OUTPUT_TOKENS) -> list[int]:
    """The ``max_tokens`` a call is tried with, largest first: ``max_tokens``, then each
    CAP_STEP of the one before while above ``floor``, then ``floor`` (only ``max_tokens``
    when it is not above ``floor``)."""
    ladder = [max_tokens]
    while ladder[-1] > floor:
        ladder.append(max(floor, int(ladder[-1] * CAP_STEP)))
    return ladder


def unpriced_models(settings: Settings, models: Iterable[str]) -> list[str]:
    """The ``models`` that have no price in pricing.json, sorted, where that matters: none
    on an OpenAI-compatible server (a local model here: its calls cost $0)."""
    if settings.resolved_provider() == "openai":
        return []
    return sorted({m for m in models if price_for(m) is None})


def to_nano(usd: Decimal) -> int:
    """``usd`` as whole nano-dollars, rounded up (a reservation never falls short)."""
    return math.ceil(usd / NANO_USD)


class BudgetedLLM:
    """An LLMClient that reserves each call's estimate in ``limits``' scopes of ``run_id``'s
    ledger (``run_log``) before making it, and settles it after (see the module docstring).
    """

    def __init__(
        self,
        inner: LLMClient,
        run_log: RunLog,
        run_id: str,
        limits: Limits,
        sharers: tuple[str, ...] = (),
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.run_log = run_log
        self.run_id = run_id
        self.limits = limits
        self.sharers = sharers
        """Who else spends in the run's budget (SpendHold.sharers): the run's personas."""

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """``inner.complete`` once an estimate is held in every scope, with ``max_tokens``
        capped to what the budgets can still pay (see the module docstring).

        Raises:
            BudgetExceededError: not even MIN_OUTPUT_TOKENS fit a scope (the call is not
                made).
            LLMAPIError: the provider failed (the holds are released).
        """
        model = call.get("model") or self.model
        timeout_s = call.get("timeout_s")
        deadline_m = deadline_of(timeout_s)
        holds, call["max_tokens"] = self._hold_capped(model, call, timeout_s)
        if deadline_m is not None:  # a wait for other calls' holds came out of the timeout
            call["timeout_s"] = time_left(deadline_m)
        spent = 0
        try:
            response = self.inner.complete(**call)
            spent = to_nano(response.usage.cost_usd)
            return response
        finally:
            for hold in holds:
                self.run_log.settle_spend(self.run_id, hold, spent)

    def _hold_capped(
        self, model: str, call: CallArgs, timeout_s: float | None
    ) -> tuple[list[SpendHold], int]:
        """The holds of the largest ``max_tokens`` of :func:`output_ladder` that every scope
        can pay, and that ``max_tokens``.

        Raises:
            BudgetExceededError: the smallest does not fit (or other calls' holds stayed in
                the way past ``timeout_s``).
        """
        hold_s = (timeout_s if timeout_s is not None else DEFAULT_HOLD_S) + HOLD_MARGIN_S
        hold_id = secrets.token_hex(8)
        ladder = output_ladder(call.get("max_tokens", DEFAULT_MAX_TOKENS))
        for max_tokens in ladder:
            estimate = estimate_call_usd(
                model, call["system"], call["messages"], call.get("tools"), max_tokens
            )
            nano = to_nano(estimate)
            holds = [
                SpendHold(scope, hold_id, nano, to_nano(limit), hold_s, self.sharers)
                for scope, limit in self.limits
            ]
            answer, failed = self._hold(holds, timeout_s)
            if failed is None:
                return holds, max_tokens
            if answer == "busy" or max_tokens == ladder[-1]:
                raise over_budget(failed)
        raise AssertionError("unreachable: the ladder's last step raises or returns")

    def _hold(
        self, holds: list[SpendHold], timeout_s: float | None
    ) -> tuple[str, SpendHold | None]:
        """Put every hold in the ledger, all or none, waiting while other calls' holds are
        in the way (up to ``timeout_s``, else BUSY_WAIT_MAX_S).

        Returns ``("reserved", None)``, else the answer and the hold that did not fit:
        ``over`` when what was spent already leaves too little in its scope, ``busy`` when
        other calls' holds stayed in the way until the deadline.
        """
        deadline_m = time.monotonic() + (timeout_s if timeout_s is not None else BUSY_WAIT_MAX_S)
        while True:
            done: list[SpendHold] = []
            for hold in holds:
                answer = self.run_log.reserve_spend(self.run_id, hold)
                if answer != "reserved":
                    break
                done.append(hold)
            else:
                return "reserved", None
            for placed in done:
                self.run_log.settle_spend(self.run_id, placed, 0)
            if answer == "over" or time.monotonic() + BUSY_POLL_S >= deadline_m:
                return answer, hold
            time.sleep(BUSY_POLL_S)


def over_budget(hold: SpendHold) -> BudgetExceededError:
    """The error of a call not made because ``hold`` did not fit its scope."""
    limit = Decimal(hold.limit_nano_usd) * NANO_USD
    return BudgetExceededError(
        f"budget ${limit.normalize():f} of the {hold.scope.replace(':', ' ')} reached: "
        f"a call estimated at ${Decimal(hold.nano_usd) * NANO_USD:.6f} was not made",
        scope=hold.scope,
    )


def budgeted(
    llm: LLMClient, run_log: RunLog, run_id: str, limits: Limits, sharers: tuple[str, ...] = ()
) -> LLMClient:
    """``llm`` behind the budgets of ``limits`` (``sharers``: the other spenders of the run's
    budget), or ``llm`` itself when there are none."""
    return BudgetedLLM(llm, run_log, run_id, limits, sharers) if limits else llm
