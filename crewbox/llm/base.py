"""The narrow LLM interface crewbox owns: one call in, content blocks + usage out.

Content blocks use the Anthropic Messages API shapes (``text``, ``tool_use``,
``tool_result``, ``thinking``, ``redacted_thinking``) as crewbox's lingua franca; the
``openai`` client translates them (and leaves thinking out).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Protocol, Required, TypedDict

from pydantic import BaseModel, Field

from crewbox.models import Usage


class TextBlock(BaseModel):
    """Plain text from the model or the user."""

    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    """The model asks to run tool ``name`` with ``input``; ``id`` pairs it with its result."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    """The outcome of a tool call, sent back in a user message."""

    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


class ThinkingBlock(BaseModel):
    """The model's thinking, exactly as returned: ``thinking`` (empty when the API omits
    the text) and its ``signature``. Passed back unchanged in a tool-use loop: the API
    checks the signature, and refuses a turn whose thinking was dropped or altered."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class RedactedThinkingBlock(BaseModel):
    """Thinking the API returned encrypted (``data``); passed back unchanged like
    :class:`ThinkingBlock`."""

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


ContentBlock = Annotated[
    TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]
MessageBlock = Annotated[
    TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(BaseModel):
    """One conversation turn: ``user`` (text, tool results) or ``assistant`` (thinking,
    text, tool uses: a response's ``content`` as it came)."""

    role: Literal["user", "assistant"]
    content: str | list[MessageBlock]


class SystemBlock(BaseModel):
    """A piece of the system prompt; ``cache`` marks the end of a stable prefix to cache."""

    text: str
    cache: bool = False


class ToolDef(BaseModel):
    """A tool the model may call: Claude Code's name, a description, a JSON Schema for input."""

    name: str
    description: str
    input_schema: dict[str, Any]


class LLMResponse(BaseModel):
    """What one call returned.

    ``stop_reason`` uses the Anthropic values: ``end_turn``, ``tool_use``, ``max_tokens``,
    ``stop_sequence``. ``usage`` has exactly this call's tokens and cost (``calls == 1``).
    """

    content: list[ContentBlock]
    stop_reason: str
    usage: Usage
    model: str

    @property
    def text(self) -> str:
        """All text blocks joined by blank lines."""
        return "\n\n".join(b.text for b in self.content if isinstance(b, TextBlock)).strip()

    @property
    def thinking(self) -> str:
        """The text of the thinking blocks joined by blank lines ("" when the API omitted
        it, or the model did not think)."""
        return "\n\n".join(b.thinking for b in self.content if isinstance(b, ThinkingBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        """The tool_use blocks, in order."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]


class CallArgs(TypedDict, total=False):
    """The keyword arguments of :meth:`LLMClient.complete`, for wrappers that pass a call on
    unchanged (crewbox.llm.retry, crewbox.budget)."""

    system: Required[list[SystemBlock]]
    messages: Required[list[Message]]
    tools: list[ToolDef] | None
    force_tool: str | None
    max_tokens: int
    model: str | None
    timeout_s: float | None
    effort: str | None


class LLMClient(Protocol):
    """Anything that can answer one Messages-style call.

    Implementations: ``crewbox.llm.anthropic.AnthropicClient``,
    ``crewbox.llm.openai.OpenAIClient``, ``crewbox.testing.ScriptedLLM``.
    """

    model: str
    """The model id used when a call names none."""

    def complete(
        self,
        *,
        system: list[SystemBlock],
        messages: list[Message],
        tools: list[ToolDef] | None = None,
        force_tool: str | None = None,
        max_tokens: int = 4096,
        model: str | None = None,
        timeout_s: float | None = None,
        effort: str | None = None,
    ) -> LLMResponse:
        """Run one call.

        Args:
            system: system prompt blocks, stable prefix first.
            messages: the conversation so far, starting with a user message.
            tools: tools the model may call.
            force_tool: name of a tool in ``tools`` the model must call (structured output).
            max_tokens: cap on output tokens.
            model: model id; None means ``self.model``.
            timeout_s: cut the call after this many seconds (the rest of a task's
                ``timeout_s``): the request is abandoned, not waited for. None: the
                client's own timeout. Retries are crewbox.llm.retry's, never the SDK's.
            effort: Claude Code's effort level (crewbox.llm.catalog.EFFORTS) for models
                that take ``output_config.effort``; None: the client's default (else the
                model's). Ignored where it means nothing (an OpenAI-compatible server).

        Raises:
            LLMAPIError: the provider failed (status_code, retry_after_s set when known).
            ScriptExhaustedError: (ScriptedLLM only) no scripted step matches this call.
        """
        ...


MIN_TIME_LEFT_S = 0.001
"""What a call past its deadline is still given, so it fails by its own timeout."""


def deadline_of(timeout_s: float | None) -> float | None:
    """The ``time.monotonic()`` by which a call with ``timeout_s`` must end; None for none.
    The wrappers of crewbox.llm take it when a call comes in and pass each layer below
    :func:`time_left`, so waits at every layer count against the one timeout."""
    return None if timeout_s is None else time.monotonic() + timeout_s


def time_left(deadline_m: float | None) -> float | None:
    """Seconds left until ``deadline_m`` (at least MIN_TIME_LEFT_S); None when there is no
    deadline."""
    return None if deadline_m is None else max(deadline_m - time.monotonic(), MIN_TIME_LEFT_S)
