"""What a plan may cost before it runs (`crewbox run --estimate`).

Per task, the input known now (the persona's prompt, the shared context, the task's own
message and tool definitions; not yet what its dependencies will produce) in tokens, at
the model's tokenizer ratio (crewbox.llm.catalog), and a cost range at the model's list prices:

- low: one turn that reads the known input and writes nothing;
- high: ``max_turns`` turns, each writing ``max_tokens`` and each reading the known input
  plus everything written before it (tool results are unknown and not counted), no cache.

The synthesis is one call reading at most ``synthesis_tokens`` of results and writing
``max_tokens``. A model with no price (a local one) costs $0 both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from crewbox.budget import CHARS_PER_TOKEN
from crewbox.llm.catalog import chars_per_token
from crewbox.llm.pricing import Price, price_for


@dataclass(frozen=True)
class Estimate:
    """One row: ``name`` (a task id, or ``synthesis``), its persona and model, the input
    tokens known now, and the cost range in USD."""

    name: str
    persona: str
    model: str
    input_tokens: int
    low_usd: Decimal
    high_usd: Decimal


def tokens(chars: int, per_token: float = CHARS_PER_TOKEN) -> int:
    """Tokens of ``chars`` characters of text (``per_token`` characters a token: the
    model's tokenizer, crewbox.llm.catalog.chars_per_token; rounded up)."""
    return math.ceil(chars / per_token)


def task_estimate(
    name: str, persona: str, model: str, input_chars: int, max_tokens: int, max_turns: int
) -> Estimate:
    """The row of one task (see the module docstring)."""
    price = price_for(model)
    known = tokens(input_chars, chars_per_token(model))
    if price is None:
        return Estimate(name, persona, model, known, Decimal(0), Decimal(0))
    low = _cost(price, known, 0)
    read = sum(known + turn * max_tokens for turn in range(max_turns))
    high = _cost(price, read, max_turns * max_tokens)
    return Estimate(name, persona, model, known, low, high)


def synthesis_estimate(model: str, synthesis_tokens: int, max_tokens: int) -> Estimate:
    """The row of the synthesis: one call, up to ``synthesis_tokens`` in."""
    price = price_for(model)
    if price is None:
        return Estimate("synthesis", "", model, 0, Decimal(0), Decimal(0))
    return Estimate(
        "synthesis", "", model, 0, Decimal(0), _cost(price, synthesis_tokens, max_tokens)
    )


def total(rows: list[Estimate]) -> Estimate:
    """The sum of ``rows``."""
    return Estimate(
        "total",
        "",
        "",
        sum(r.input_tokens for r in rows),
        sum((r.low_usd for r in rows), Decimal(0)),
        sum((r.high_usd for r in rows), Decimal(0)),
    )


def _cost(price: Price, input_tokens: int, output_tokens: int) -> Decimal:
    return price.usd(input=input_tokens, output=output_tokens)
