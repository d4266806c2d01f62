"""The fake endpoint's prompt cache follows Anthropic's documented rules (bench/caching.py
reports its figures)."""

from __future__ import annotations

from typing import Any

from tests.fakes.prompt_cache import PromptCache, block_tokens

BIG = "x" * 8000  # 2,000 tokens at 4 characters a token
CACHED = {"type": "ephemeral"}


def request(
    *turns: str, cache_latest: bool = True, model: str = "claude-sonnet-4-6"
) -> dict[str, Any]:
    messages = []
    for i, turn in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [{"type": "text", "text": turn}]})
    if cache_latest:
        messages[-1]["content"][-1]["cache_control"] = CACHED
    system = [{"type": "text", "text": BIG, "cache_control": CACHED}]
    return {"model": model, "system": system, "messages": messages}


def test_the_next_turn_reads_the_conversation_so_far_from_the_cache() -> None:
    cache = PromptCache()
    first = cache.bill(request("task " + BIG))
    assert first.cache_read_tokens == 0 and first.input_tokens == 0
    second = cache.bill(request("task " + BIG, "answer", "tool result"))
    assert second.cache_read_tokens == first.cache_write_tokens
    assert 0 < second.cache_write_tokens < first.cache_write_tokens


def test_without_a_conversation_breakpoint_only_the_system_prefix_is_read() -> None:
    cache = PromptCache()
    cache.bill(request("task " + BIG, cache_latest=False))
    second = cache.bill(request("task " + BIG, "answer", "more", cache_latest=False))
    system_block = {"type": "text", "text": BIG}
    assert second.cache_read_tokens == block_tokens(system_block)
    assert second.input_tokens > 2000


def test_a_prefix_under_the_model_minimum_is_never_cached() -> None:
    cache = PromptCache()
    small = request("hi")
    small["system"][0]["text"] = "short"
    assert cache.bill(small).cache_write_tokens == 0
    assert cache.bill(small).cache_read_tokens == 0
    haiku = request("task", model="claude-haiku-4-5")  # 2,000 tokens < Haiku's 2,048
    assert cache.bill(haiku).cache_write_tokens == 0
