"""What each Claude model family accepts and how big it is, and Claude Code's model aliases:
one table each, read by the Anthropic client, the planner, the estimate and the budgets.

Sources (read 2026-12-05): platform.claude.com "What's new in Claude Opus 5.5" (thinking
can't be disabled, forced tool use returns an error, thinking blocks tied to the model and
the conversation; the first three also on Fable 5.1), the Opus 5.5, Sonnet 5.5 and Opus 5
model pages (context window, max output, thinking, default effort), the pricing page, and
code.claude.com "Model configuration" (aliases; ``ANTHROPIC_DEFAULT_*_MODEL``).

Thinking modes (:attr:`Capabilities.thinking`):

- ``always``: adaptive thinking that cannot be turned off (Opus 5.5, the Fable family):
  crewbox omits ``thinking`` (the documented equivalent of ``{"type": "adaptive"}``);
- ``adaptive``: adaptive thinking, on by default (Opus 5, Sonnet 5, Sonnet 5.5, Haiku 5.5):
  crewbox sends ``{"type": "adaptive"}``, or ``{"type": "disabled"}`` on a call that forces
  a tool where the model allows forcing (forced tool use needs thinking off);
- ``manual``: extended thinking with ``budget_tokens``, off unless asked (4.x and 3.7):
  crewbox sends nothing (thinking stays off), as before;
- ``none``: no thinking.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

ThinkingMode = Literal["always", "adaptive", "manual", "none"]

EFFORTS = ("low", "medium", "high", "max")
"""Claude Code's ``effort`` levels (persona front matter, ``CREWBOX_EFFORT``); each is a
valid ``output_config.effort`` of the Messages API."""


@dataclass(frozen=True)
class Capabilities:
    """What one model family accepts, and its sizes.

    ``forced_tool``: ``tool_choice`` ``{"type": "tool"}``/``any`` is accepted (else HTTP 400);
    ``structured_outputs``: ``output_config.format`` and strict tools; ``effort``:
    ``output_config.effort``; ``temperature``: ``temperature`` may be set;
    ``context_tokens`` / ``max_output_tokens``: the context window and output cap;
    ``chars_per_token``: characters of English text or JSON per token of its tokenizer (the
    Claude 5 generation's tokenizer makes about 30% more tokens of the same text: 4 / 1.3).
    """

    family: str
    thinking: ThinkingMode
    forced_tool: bool
    structured_outputs: bool
    effort: bool
    temperature: bool
    context_tokens: int
    max_output_tokens: int
    chars_per_token: float


def _caps(
    family: str,
    thinking: ThinkingMode,
    forced_tool: bool,
    *,
    context: int = 1_000_000,
    output: int = 128_000,
    chars: float = 3.0,
    structured: bool = True,
    effort: bool = True,
) -> Capabilities:
    return Capabilities(
        family=family,
        thinking=thinking,
        forced_tool=forced_tool,
        structured_outputs=structured,
        effort=effort,
        temperature=thinking in ("manual", "none"),
        context_tokens=context,
        max_output_tokens=output,
        chars_per_token=chars,
    )


FAMILIES: dict[str, Capabilities] = {
    caps.family: caps
    for caps in (
        # The Claude 5.5 generation, newest first (NEWEST_FAMILY is the first row).
        _caps("claude-opus-5-5", "always", False),
        _caps("claude-fable-5-2", "always", False),
        _caps("claude-mythos-5-2", "always", False),
        _caps("claude-fable-5-1", "always", False),
        _caps("claude-mythos-5-1", "always", False),
        _caps("claude-sonnet-5-5", "adaptive", False),
        _caps("claude-haiku-5-5", "adaptive", False),
        # Claude 5: thinking on by default, forced tool use allowed with thinking off.
        _caps("claude-fable-5", "always", True),
        _caps("claude-mythos-5", "always", True),
        _caps("claude-opus-5", "adaptive", True),
        _caps("claude-sonnet-5", "adaptive", True),
        # Claude 4.x and 3.x: thinking off unless asked for, forced tool use allowed.
        _caps("claude-opus-4-8", "manual", True, chars=4.0),
        _caps("claude-opus-4-7", "manual", True, chars=4.0),
        _caps("claude-opus-4-6", "manual", True, chars=4.0),
        _caps("claude-sonnet-4-6", "manual", True, chars=4.0),
        _caps("claude-opus-4-5", "manual", True, context=200_000, output=64_000, chars=4.0),
        _caps("claude-sonnet-4-5", "manual", True, output=64_000, chars=4.0),
        _caps(
            "claude-haiku-4-5",
            "manual",
            True,
            context=200_000,
            output=64_000,
            chars=4.0,
            effort=False,
        ),
        _caps(
            "claude-opus-4-1",
            "manual",
            True,
            context=200_000,
            output=32_000,
            chars=4.0,
            structured=False,
            effort=False,
        ),
        _caps(
            "claude-opus-4",
            "manual",
            True,
            context=200_000,
            output=32_000,
            chars=4.0,
            structured=False,
            effort=False,
        ),
        _caps(
            "claude-sonnet-4",
            "manual",
            True,
            output=64_000,
            chars=4.0,
            structured=False,
            effort=False,
        ),
        _caps(
            "claude-3-7-sonnet",
            "manual",
            True,
            context=200_000,
            output=64_000,
            chars=4.0,
            structured=False,
            effort=False,
        ),
        _caps(
            "claude-3",
            "none",
            True,
            context=200_000,
            output=8_192,
            chars=4.0,
            structured=False,
            effort=False,
        ),
    )
}
"""Capabilities by family (a model id prefix); see the module docstring for sources."""

NEWEST_FAMILY = "claude-opus-5-5"
"""The family whose behaviour an unknown model id gets (the strictest contract)."""

_VERSION_SUFFIX = re.compile(r"[-@]\d{1,2}(?!\d)")
"""A suffix that starts another version (``-5`` after ``claude-opus-5``), not a date."""


def _extends(model: str, family: str) -> bool:
    """``model`` is ``family`` or ``family`` plus a date or alias suffix."""
    if model == family:
        return True
    if not model.startswith(family):
        return False
    rest = model[len(family) :]
    if rest.startswith("["):  # claude-opus-5-5[1m]
        return True
    return rest[0] in "-@" and not _VERSION_SUFFIX.match(rest)


def family_of(model: str) -> str | None:
    """The family (a key of FAMILIES) of ``model``: the longest key it extends; None when
    none does. ``claude-3-5-haiku-20241022`` is in ``claude-3``."""
    model_id = model.strip().lower()
    keys = [key for key in FAMILIES if _extends(model_id, key)]
    if not keys and model_id.startswith("claude-3"):
        return "claude-3"
    return max(keys, key=len) if keys else None


def capabilities(model: str) -> Capabilities:
    """The capabilities of ``model``; an id no family matches gets NEWEST_FAMILY's (a
    warning is logged once per id), since an id crewbox does not know is newer than its
    table."""
    family = family_of(model)
    if family is None:
        _warn_unknown(model)
        return FAMILIES[NEWEST_FAMILY]
    return FAMILIES[family]


@functools.cache
def _warn_unknown(model: str) -> None:
    log.warning(
        "model %r is not in crewbox's capability table (crewbox/llm/catalog.py): calling it "
        "as %s (thinking always on, no forced tool use)",
        model,
        NEWEST_FAMILY,
    )


def chars_per_token(model: str) -> float:
    """Characters per token of ``model``'s tokenizer; 4.0 for a model that is not Claude's
    (a local model behind an OpenAI-compatible server)."""
    if not model.strip().lower().startswith("claude"):
        return 4.0
    return capabilities(model).chars_per_token


ALIASES: dict[str, tuple[str, str | None]] = {
    "opus": ("claude-opus-5-5", "ANTHROPIC_DEFAULT_OPUS_MODEL"),
    "sonnet": ("claude-sonnet-5-5", "ANTHROPIC_DEFAULT_SONNET_MODEL"),
    "haiku": ("claude-haiku-5-5", "ANTHROPIC_DEFAULT_HAIKU_MODEL"),
    "fable": ("claude-fable-5-2", "ANTHROPIC_DEFAULT_FABLE_MODEL"),
}
"""Claude Code's model aliases on the Anthropic API (code.claude.com "Model configuration"
and CLI 2.1.293+: opus, sonnet and haiku resolve to the 5.5 models, fable to Fable 5.2
outside Claude apps gateway sessions), each with the environment variable that overrides
it, as in Claude Code. ``inherit`` is not an alias: it means the configured default."""

DEFAULT_MODEL = "claude-sonnet-5-5"
"""crewbox's default ``CREWBOX_MODEL``: what ``sonnet`` means in Claude Code today."""


def resolve_alias(model: str) -> str:
    """The model id ``model`` names: an alias of ALIASES resolved (its environment variable
    when set and not blank, else the table's id), any other value as it is (stripped)."""
    name = model.strip()
    entry = ALIASES.get(name.lower())
    if entry is None:
        return name
    default, variable = entry
    override = os.environ.get(variable, "").strip() if variable else ""
    return override or default
