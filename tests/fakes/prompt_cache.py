"""A model of Anthropic's prompt cache, so a fake Messages endpoint bills as the API does.

The rules, from Anthropic's prompt caching documentation
(https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching):

- the prompt is ``tools``, then ``system``, then ``messages``, in that order; a block with
  ``cache_control`` ends a cacheable prefix (at most 4 per request);
- a request first looks for the longest cached prefix ending at one of its breakpoints or at
  any of the 20 blocks before each (the lookback); those tokens are ``cache_read``;
- the tokens after that, up to the last breakpoint, are written to the cache
  (``cache_write``), as is every breakpoint's prefix; the rest is ``input``;
- a prefix shorter than the model's minimum (1,024 tokens for Sonnet and Opus, 2,048 for
  Haiku) is never cached;
- entries live 5 minutes, refreshed on each hit (a run is shorter: they are never expired).

Tokens are counted as ``ceil(len(json)/4)`` per block (about 4 characters a token for
English text and JSON): the split between input, cache write and cache read is what it
measures, not the tokenizer's exact counts.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

LOOKBACK_BLOCKS = 20
"""How many blocks before a breakpoint a cache hit may end at."""

MIN_CACHEABLE_TOKENS = {"haiku": 2048}
"""Smallest cacheable prefix per model family; every other model: DEFAULT_MIN_TOKENS."""

DEFAULT_MIN_TOKENS = 1024

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class CacheUsage:
    """How one request's prompt tokens split: ``input``, ``cache_write`` and ``cache_read``."""

    input_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int


@dataclass
class PromptCache:
    """The prefixes cached so far (their hashes), shared by every request to the endpoint."""

    cached: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bill(self, body: dict[str, Any]) -> CacheUsage:
        """Split the prompt of the Messages request ``body`` as the API would, and cache the
        prefixes it writes."""
        blocks = prompt_blocks(body)
        tokens = [block_tokens(b) for b in blocks]
        breakpoints = [
            i for i, b in enumerate(blocks) if isinstance(b, dict) and "cache_control" in b
        ]
        minimum = min_tokens(str(body.get("model", "")))
        hashes = prefix_hashes(blocks)
        with self.lock:
            hit = self._longest_hit(hashes, breakpoints)
            read = sum(tokens[: hit + 1]) if hit >= 0 else 0
            last = breakpoints[-1] if breakpoints else -1
            written = 0
            if last > hit and sum(tokens[: last + 1]) >= minimum:
                written = sum(tokens[hit + 1 : last + 1])
                for index in breakpoints:
                    if sum(tokens[: index + 1]) >= minimum:
                        self.cached.add(hashes[index])
        total = sum(tokens)
        return CacheUsage(total - read - written, written, read)

    def _longest_hit(self, hashes: list[str], breakpoints: list[int]) -> int:
        """The index of the last block of the longest cached prefix, -1 when none."""
        candidates: set[int] = set()
        for index in breakpoints:
            candidates.update(range(max(0, index - LOOKBACK_BLOCKS), index + 1))
        hits = [i for i in candidates if hashes[i] in self.cached]
        return max(hits, default=-1)


def prompt_blocks(body: dict[str, Any]) -> list[Any]:
    """The request's prompt as a list of blocks in cache order: tools, system, messages."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system") or []
    blocks += [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks += [{"role": message.get("role"), **block} for block in content]
    return blocks


def block_tokens(block: Any) -> int:
    """Tokens of a block, its ``cache_control`` left out."""
    plain = {k: v for k, v in block.items() if k != "cache_control"}
    return math.ceil(len(json.dumps(plain, sort_keys=True)) / CHARS_PER_TOKEN)


def prefix_hashes(blocks: list[Any]) -> list[str]:
    """For each block, a hash of the prompt up to and including it (``cache_control`` left
    out, as it does not change the content)."""
    digest = hashlib.sha256()
    hashes = []
    for block in blocks:
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        digest.update(json.dumps(plain, sort_keys=True).encode())
        hashes.append(digest.copy().hexdigest())
    return hashes


def min_tokens(model: str) -> int:
    """The smallest cacheable prefix for ``model``."""
    return next(
        (n for family, n in MIN_CACHEABLE_TOKENS.items() if family in model), DEFAULT_MIN_TOKENS
    )
