"""The price table: lookups by exact id and by prefix, and exact Decimal costs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crewbox.llm.pricing import call_usage, cost_usd, price_for, price_table
from crewbox.models import Usage


def test_table_names_its_source_and_date() -> None:
    table = price_table()
    assert table.source == "https://platform.claude.com/docs/en/about-claude/pricing"
    assert table.as_of


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ],
)
def test_prefix_match_picks_the_longest_key(model: str, priced_as: str) -> None:
    price = price_for(model)
    assert price is not None
    assert price.model == priced_as


@pytest.mark.parametrize(
    "model", ["smollm2-135m-instruct", "gpt-4o", "claude-opus-4-9", "claude-sonnet-45", ""]
)
def test_unknown_models_have_no_price_and_cost_zero(model: str) -> None:
    assert price_for(model) is None
    assert cost_usd(model, 1000, 1000, 1000, 1000) == Decimal(0)


def test_figures_are_exact_decimals() -> None:
    price = price_for("claude-opus-4-5")
    assert price is not None
    assert price.input_usd_per_mtok == Decimal("5")
    assert price.output_usd_per_mtok == Decimal("25")
    assert price.cache_write_usd_per_mtok == Decimal("6.25")
    assert price.cache_read_usd_per_mtok == Decimal("0.50")


def test_cost_is_exact() -> None:
    # claude-3-5-haiku, USD per MTok: input 0.80, output 4, cache write 1, cache read 0.08.
    cost = cost_usd("claude-3-5-haiku-20241022", 1234, 567, 8910, 11121)
    dollars_per_mtok = 1234 * Decimal("0.80") + 567 * 4 + 8910 * 1 + 11121 * Decimal("0.08")
    expected = dollars_per_mtok / 1_000_000
    assert cost == expected == Decimal("0.01305488")


def test_a_tenth_of_a_cent_adds_up_exactly() -> None:
    # 1 token of claude-sonnet-4-5 cache read is $0.0000003; ten of them are exactly $0.000003.
    one = call_usage("claude-sonnet-4-5", input_tokens=0, output_tokens=0, cache_read_tokens=1)
    total = Usage.total([one] * 10)
    assert one.cost_usd == Decimal("0.0000003")
    assert total.cost_usd == Decimal("0.000003")
    assert total.calls == 10


def test_a_calls_cache_write_and_read_costs_are_kept_apart() -> None:
    from crewbox.llm.pricing import call_usage

    usage = call_usage(
        "claude-sonnet-4-6",
        input_tokens=100,
        output_tokens=10,
        cache_write_tokens=1500,
        cache_read_tokens=2000,
    )
    # claude-sonnet-4-6: cache write $3.75, cache read $0.30 per MTok
    assert usage.cache_write_usd == Decimal("3.75") * 1500 / 10**6
    assert usage.cache_read_usd == Decimal("0.30") * 2000 / 10**6
    assert usage.cost_usd == (100 * 3 + 10 * 15) / Decimal(10**6) + (
        usage.cache_write_usd + usage.cache_read_usd
    )


def test_a_prompt_over_200k_tokens_pays_the_long_context_price() -> None:
    from crewbox.llm.pricing import call_usage

    # claude-sonnet-4-5: $3/$15 per MTok up to 200k prompt tokens, $6/$22.50 above
    short = call_usage("claude-sonnet-4-5", input_tokens=200_000, output_tokens=1000)
    long = call_usage("claude-sonnet-4-5", input_tokens=150_000, output_tokens=1000,
                      cache_read_tokens=60_000)  # fmt: skip
    assert short.cost_usd == (200_000 * 3 + 1000 * 15) / Decimal(10**6)
    assert long.cost_usd == (150_000 * 6 + 1000 * Decimal("22.5") + 60_000 * Decimal("0.6")) / (
        10**6
    )
    assert call_usage("claude-sonnet-4-6", input_tokens=300_000, output_tokens=0).cost_usd == (
        300_000 * 3 / Decimal(10**6)
    )  # no long-context price known for it: the standard one


def test_every_current_model_has_each_rate_written_out_and_a_source() -> None:
    import json
    from importlib import resources

    raw = json.loads(resources.files("crewbox.llm").joinpath("pricing.json").read_text())
    for model, entry in raw["models"].items():
        for key in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
            assert entry[key] is not None, (model, key)
        assert "since" in entry and entry["source"].startswith("https://platform.claude.com")
    for model in (
        "claude-opus-5-5",
        "claude-opus-5",
        "claude-haiku-5-5",
        "claude-fable-5-2",
        "claude-fable-5-1",
        "claude-sonnet-5-5",
    ):
        assert model in raw["models"]


def test_sonnet_5_5_cache_reads_cost_ten_cents_since_2026_10_07_and_twenty_before() -> None:
    from datetime import date

    assert price_for("claude-sonnet-5-5").cache_read_usd_per_mtok == Decimal("0.1")  # type: ignore[union-attr]
    before = price_for("claude-sonnet-5-5", date(2026, 10, 6))
    since = price_for("claude-sonnet-5-5", date(2026, 10, 7))
    assert before is not None and before.cache_read_usd_per_mtok == Decimal("0.2")
    assert since is not None and since.cache_read_usd_per_mtok == Decimal("0.1")


def test_cache_prices_are_not_a_multiple_of_input_on_opus_5_5_and_fable_5_1() -> None:
    opus, fable = price_for("claude-opus-5-5"), price_for("claude-fable-5-1")
    assert opus is not None and opus.cache_read_usd_per_mtok == Decimal("0.2")
    assert opus.cache_write_usd_per_mtok == Decimal("5")
    assert fable is not None and fable.cache_read_usd_per_mtok == Decimal("0.25")


def test_haiku_5_5_bills_the_whole_request_at_5x_past_100k_prompt_tokens() -> None:
    short = cost_usd("claude-haiku-5-5", 100_000, 1_000)
    long = cost_usd("claude-haiku-5-5", 100_001, 1_000)
    assert short == Decimal("0.0105")  # 100,000 x $0.10 + 1,000 x $0.50, per MTok
    assert long == (100_001 * Decimal("0.5") + 1_000 * Decimal("2.5")) / 1_000_000
    cached = cost_usd("claude-haiku-5-5", 10, 1_000, cache_read_tokens=100_000)
    assert (
        cached
        == (10 * Decimal("0.5") + 1_000 * Decimal("2.5") + 100_000 * Decimal("0.05")) / 1_000_000
    )


def test_every_alias_target_is_priced(monkeypatch: pytest.MonkeyPatch) -> None:
    from crewbox.llm.catalog import ALIASES, DEFAULT_MODEL, resolve_alias

    for name, (_, variable) in ALIASES.items():
        if variable:
            monkeypatch.delenv(variable, raising=False)
        assert price_for(resolve_alias(name)) is not None, name
    assert price_for(DEFAULT_MODEL) is not None
