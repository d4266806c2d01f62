"""What LLM calls cost, from the price table in ``pricing.json`` (kept as data).

Figures are US dollars per million tokens (MTok), from Anthropic's pricing page (the
``source`` and ``as_of`` keys of ``pricing.json``, and each row's ``source``), each rate
written out (no multiple of the input price is assumed). crewbox writes 5-minute cache
entries, so a cache write is billed at ``cache_write_5m``; the 1-hour price is kept as
data. A row's ``since`` is the date it took effect; the rows it replaced (``history``)
price calls made before. Models missing from the table (local models behind an
OpenAI-compatible server) cost 0. Arithmetic is :class:`~decimal.Decimal` throughout, so
sums are exact.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

from crewbox.models import Usage

log = logging.getLogger(__name__)

TOKENS_PER_MTOK = 1_000_000
"""Prices are quoted per million tokens."""

_VERSION_SUFFIX = re.compile(r"[-@]\d{1,2}(?!\d)")
"""A suffix that starts another model version (``-6`` in ``claude-opus-4-6``), not a date."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model, for each kind of token the API bills."""

    model: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_write_usd_per_mtok: Decimal
    """The 5-minute cache write price (the cache entries crewbox writes)."""
    cache_read_usd_per_mtok: Decimal
    cache_write_1h_usd_per_mtok: Decimal | None = None
    since: date | None = None
    """The day this row took effect; None: since the model's release."""
    source: str = ""
    long_context: Price | None = None
    """The prices of a whole request (output included) whose prompt (input, cache write and
    cache read tokens) exceeds ``long_context_above_tokens``, when the model has them
    (Claude Sonnet 4 and 4.5 above 200K tokens, Claude Haiku 5.5 above 100K)."""
    long_context_above_tokens: int | None = None

    def usd(
        self, input: int = 0, output: int = 0, cache_write: int = 0, cache_read: int = 0
    ) -> Decimal:
        """Exact USD of these token counts at these prices: each count times its price per
        MTok, over TOKENS_PER_MTOK, in Decimal arithmetic."""
        total = (
            input * self.input_usd_per_mtok
            + output * self.output_usd_per_mtok
            + cache_write * self.cache_write_usd_per_mtok
            + cache_read * self.cache_read_usd_per_mtok
        )
        return total / TOKENS_PER_MTOK

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The prices for a request with ``prompt_tokens`` of prompt."""
        above = self.long_context_above_tokens
        if self.long_context is not None and above is not None and prompt_tokens > above:
            return self.long_context
        return self


@dataclass(frozen=True)
class PriceTable:
    """``pricing.json`` loaded: the prices by model id (aliases included), and provenance.

    ``prices`` holds each model's current row; ``history`` each model's rows, oldest first
    (the current one last)."""

    source: str
    as_of: str
    prices: dict[str, Price]
    history: dict[str, list[Price]]

    def on(self, model_id: str, day: date | None) -> Price:
        """The row of ``model_id`` (a key of ``prices``) in effect on ``day`` (None: the
        current row); a day before every ``since`` gets the oldest row."""
        rows = self.history[model_id]
        if day is None:
            return rows[-1]
        started = [r for r in rows if r.since is None or r.since <= day]
        return started[-1] if started else rows[0]


def _price(model: str, entry: dict[str, Any], source: str = "") -> Price:
    long = entry.get("long_context")
    hour = entry.get("cache_write_1h")
    since = entry.get("since")
    return Price(
        model=model,
        input_usd_per_mtok=Decimal(str(entry["input"])),
        output_usd_per_mtok=Decimal(str(entry["output"])),
        cache_write_usd_per_mtok=Decimal(str(entry["cache_write_5m"])),
        cache_read_usd_per_mtok=Decimal(str(entry["cache_read"])),
        cache_write_1h_usd_per_mtok=Decimal(str(hour)) if hour is not None else None,
        since=date.fromisoformat(since) if since else None,
        source=entry.get("source", source),
        long_context=_price(model, long, source) if long else None,
        long_context_above_tokens=int(long["above_tokens"]) if long else None,
    )


def _rows(model: str, entry: dict[str, Any], source: str) -> list[Price]:
    """A model's rows, oldest first: its ``history`` (each keeping the entry's long-context
    tier unless it has its own), then the current row."""
    rows = [
        _price(model, {**entry, **{"since": None}, **old}, source)
        for old in entry.get("history", [])
    ]
    return [*rows, _price(model, entry, source)]


@functools.cache
def price_table() -> PriceTable:
    """Load ``crewbox/llm/pricing.json`` once (package data, via importlib.resources).

    Raises:
        KeyError, ValueError: the file is malformed (a packaging bug, not a user error).
    """
    text = resources.files("crewbox.llm").joinpath("pricing.json").read_text(encoding="utf-8")
    raw = json.loads(text, parse_float=Decimal)
    prices: dict[str, Price] = {}
    history: dict[str, list[Price]] = {}
    for model, entry in raw["models"].items():
        rows = _rows(model, entry, raw["source"])
        for model_id in [model, *entry.get("aliases", [])]:
            prices[model_id], history[model_id] = rows[-1], rows
    return PriceTable(source=raw["source"], as_of=raw["as_of"], prices=prices, history=history)


def _matches_prefix(model: str, key: str) -> bool:
    """``key`` names ``model`` up to a date or alias suffix (``-20250929``, ``-latest``)."""
    if not model.startswith(key) or len(model) == len(key):
        return False
    rest = model[len(key) :]
    if rest.startswith("["):  # claude-opus-5-5[1m]
        return True
    return rest[0] in "-@" and not _VERSION_SUFFIX.match(rest)


def price_for(model: str, day: date | None = None) -> Price | None:
    """The price of ``model`` on ``day`` (None: the current row): the exact id, else the
    longest key it extends.

    ``claude-sonnet-4-5-20250929`` gets the ``claude-sonnet-4-5`` price; a key never matches
    a newer version (``claude-opus-4-6`` does not get the ``claude-opus-4`` price).
    Returns None when the table does not know the model.
    """
    table = price_table()
    model_id = model.strip().lower()
    if model_id in table.prices:
        return table.on(model_id, day)
    keys = [key for key in table.prices if _matches_prefix(model_id, key)]
    return table.on(max(keys, key=len), day) if keys else None


@functools.cache
def _warn_unpriced(model: str) -> None:
    log.warning("no price for model %r in pricing.json; its calls are counted at $0", model)


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> Decimal:
    """Exact USD cost of the tokens of one call to ``model``.

    Each count is multiplied by its price per MTok and divided by 1,000,000 in Decimal
    arithmetic, at the long-context prices when the prompt (input + cache write + cache read
    tokens) is above the model's long-context threshold. Unknown models cost ``Decimal(0)``
    (a warning is logged once for ``claude-*`` ids, since those should be in the table).
    """
    price = _price_for_prompt(model, input_tokens + cache_write_tokens + cache_read_tokens)
    if price is None:
        return Decimal(0)
    return price.usd(input_tokens, output_tokens, cache_write_tokens, cache_read_tokens)


def _price_for_prompt(model: str, prompt_tokens: int) -> Price | None:
    """The prices for a prompt of ``prompt_tokens`` to ``model``; None (warned once for a
    ``claude-*`` id, which should be in the table) when it has none."""
    price = price_for(model)
    if price is None:
        if model.lower().startswith("claude"):
            _warn_unpriced(model)
        return None
    return price.for_prompt(prompt_tokens)


def call_usage(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
    thinking_tokens: int = 0,
) -> Usage:
    """The :class:`~crewbox.models.Usage` of one call (``calls == 1``), cost included, with
    its cache write and cache read parts; ``thinking_tokens`` (part of ``output_tokens``,
    billed as output) is carried along."""
    price = _price_for_prompt(model, input_tokens + cache_write_tokens + cache_read_tokens)
    zero = Decimal(0)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_write_tokens=cache_write_tokens,
        cache_read_tokens=cache_read_tokens,
        thinking_tokens=thinking_tokens,
        cost_usd=(
            price.usd(input_tokens, output_tokens, cache_write_tokens, cache_read_tokens)
            if price
            else zero
        ),
        cache_write_usd=price.usd(cache_write=cache_write_tokens) if price else zero,
        cache_read_usd=price.usd(cache_read=cache_read_tokens) if price else zero,
        calls=1,
    )
