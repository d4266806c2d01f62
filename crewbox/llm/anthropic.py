"""The ``anthropic`` provider: the Anthropic Messages API through the official SDK.

Works against any Anthropic-compatible endpoint (``base_url``, e.g. ``ANTHROPIC_BASE_URL``).
Prompt caching: every :class:`~crewbox.llm.base.SystemBlock` with ``cache=True`` gets
``cache_control: {"type": "ephemeral"}`` (a 5-minute cache write; the API allows at most
4 breakpoints per request). Usage and cost come from the response's ``usage`` and
``pricing.json``.

What a call sends follows the model's row of crewbox.llm.catalog: ``thinking`` as the
model accepts it (omitted where thinking is always on, ``{"type": "adaptive"}`` where it is
adaptive, ``{"type": "disabled"}`` on a forced-tool call where forcing needs thinking off,
nothing on older models), ``output_config.effort`` where the model takes it, and
``force_tool`` as ``tool_choice`` ``{"type": "tool"}`` only where the model allows it; on a
model that refuses forced tool use (the Claude 5.5 generation) the tool is offered with
``tool_choice`` ``{"type": "auto"}`` (and ``strict: true`` where the model has structured
outputs) and the caller (the planner) reads the tool call or JSON text and repairs as
before. Thinking and redacted-thinking blocks come back in
``content`` exactly as returned, signature included, so a tool-use loop passes them back.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import anthropic

from crewbox.errors import LLMAPIError
from crewbox.llm.base import (
    ContentBlock,
    LLMResponse,
    Message,
    RedactedThinkingBlock,
    SystemBlock,
    TextBlock,
    ThinkingBlock,
    ToolDef,
    ToolUseBlock,
)
from crewbox.llm.catalog import EFFORTS, Capabilities, capabilities
from crewbox.llm.pricing import call_usage
from crewbox.models import Usage

if TYPE_CHECKING:
    from anthropic.types import Message as APIMessage
    from anthropic.types import (
        MessageParam,
        OutputConfigParam,
        TextBlockParam,
        ThinkingConfigParam,
        ToolChoiceParam,
        ToolParam,
    )

MAX_ERROR_CHARS = 300
"""Error messages are cut to this many characters (they end up on one log/CLI line)."""


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` with all whitespace runs collapsed to one space, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from HTTP response headers, or None when they give no usable hint.

    Reads ``retry-after-ms`` (milliseconds, sent by Anthropic and OpenAI), else
    ``retry-after`` as seconds (int or float) or as an HTTP date (RFC 9110 §10.2.3).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def system_param(system: list[SystemBlock]) -> list[TextBlockParam]:
    """System blocks as Messages API text blocks; ``cache=True`` adds ``cache_control``.

    Blank blocks are dropped (the API rejects empty text blocks).
    """
    blocks: list[dict[str, Any]] = []
    for block in system:
        if not block.text.strip():
            continue
        param: dict[str, Any] = {"type": "text", "text": block.text}
        if block.cache:
            param["cache_control"] = {"type": "ephemeral"}
        blocks.append(param)
    return cast("list[TextBlockParam]", blocks)


def tools_param(tools: list[ToolDef], strict_tool: str | None = None) -> list[ToolParam]:
    """Tool definitions as ``{"name", "description", "input_schema"}``; ``strict_tool`` is
    sent with ``strict: true`` and its schema in the subset strict tools take (the SDK's
    ``anthropic.transform_schema``: constraints it cannot enforce, such as ``maxLength``,
    move into descriptions; crewbox still validates them)."""
    params = []
    for tool in tools:
        param = tool.model_dump()
        if tool.name == strict_tool:
            param["input_schema"] = anthropic.transform_schema(tool.input_schema)
            param["strict"] = True
        params.append(param)
    return cast("list[ToolParam]", params)


MAX_CACHE_BREAKPOINTS = 4
"""Blocks with ``cache_control`` one request may have (Anthropic's prompt caching docs)."""


def messages_param(messages: list[Message], cache_latest: bool = False) -> list[MessageParam]:
    """Messages as the API takes them (crewbox blocks already have the Anthropic shapes);
    ``cache_latest`` puts a ``cache_control`` breakpoint on the last block of the last
    message, so the next turn of the conversation reads all of this one from the cache."""
    params: list[dict[str, Any]] = [m.model_dump(mode="json") for m in messages]
    if cache_latest and params:
        last = params[-1]
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"]}]
        if last["content"]:
            last["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return cast("list[MessageParam]", params)


def content_blocks(message: APIMessage) -> list[ContentBlock]:
    """The text, tool_use, thinking and redacted_thinking blocks of a response, in order and
    unchanged (a thinking block keeps its signature); other types (server tools) are
    dropped."""
    blocks: list[ContentBlock] = []
    for block in message.content:
        if block.type == "text":
            blocks.append(TextBlock(text=block.text))
        elif block.type == "tool_use":
            blocks.append(ToolUseBlock(id=block.id, name=block.name, input=dict(block.input)))
        elif block.type == "thinking":
            blocks.append(ThinkingBlock(thinking=block.thinking, signature=block.signature))
        elif block.type == "redacted_thinking":
            blocks.append(RedactedThinkingBlock(data=block.data))
    return blocks


def response_usage(message: APIMessage, model: str) -> Usage:
    """This call's Usage: the response's token counts (missing counts are 0), priced;
    ``thinking_tokens`` from ``output_tokens_details`` where the API reports it."""
    usage = message.usage
    details = getattr(usage, "output_tokens_details", None)
    return call_usage(
        model,
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
        thinking_tokens=(getattr(details, "thinking_tokens", None) or 0) if details else 0,
    )


def thinking_param(caps: Capabilities, forcing: bool) -> ThinkingConfigParam | anthropic.Omit:
    """The ``thinking`` a call to a model of ``caps`` sends (see the module docstring);
    ``forcing``: the call forces a tool the model allows forcing."""
    if caps.thinking == "adaptive":
        return {"type": "disabled"} if forcing else {"type": "adaptive"}
    return anthropic.omit


def output_config_param(
    caps: Capabilities, effort: str | None
) -> OutputConfigParam | anthropic.Omit:
    """``{"effort": effort}`` for a model that takes it and a known level; else omitted.

    Raises:
        ValueError: ``effort`` is not one of EFFORTS.
    """
    if effort is None or not caps.effort:
        return anthropic.omit
    if effort not in EFFORTS:
        raise ValueError(f"effort {effort!r} is not one of {', '.join(EFFORTS)}")
    return cast("OutputConfigParam", {"effort": effort})


def tool_choice_param(
    caps: Capabilities, force_tool: str | None
) -> ToolChoiceParam | anthropic.Omit:
    """``{"type": "tool", "name": force_tool}`` where the model allows forcing, ``{"type":
    "auto"}`` (the tool offered) where it does not, omitted with no ``force_tool``."""
    if not force_tool:
        return anthropic.omit
    if caps.forced_tool:
        return {"type": "tool", "name": force_tool}
    return {"type": "auto"}


STATUS_ADVICE = {
    401: "; the key was refused: check the service's key (secrets/<service>.key, else "
    "ANTHROPIC_API_KEY or secrets/anthropic.key)",
    403: "; the key may not use this model or endpoint: check the key and CREWBOX_MODEL",
    404: "; check the model id (CREWBOX_MODEL or the persona's `model:`) and ANTHROPIC_BASE_URL",
    413: "; the request is too large: shorten the context files (--context-file) or the "
    "task's instructions",
}
"""What to do, added to the one-line message of a status that trying again cannot fix."""

CONNECTION_ADVICE = (
    "; check that the endpoint (api.anthropic.com, or ANTHROPIC_BASE_URL) is up and reachable "
    "(in the cluster through the egress proxy: make logs-egress)"
)
"""Added to the message of a call that never got an HTTP answer from the API."""


def api_error(exc: anthropic.APIError) -> LLMAPIError:
    """The SDK's error as an :class:`~crewbox.errors.LLMAPIError` with a one-line message."""
    if isinstance(exc, anthropic.APIStatusError):
        return LLMAPIError(
            one_line(f"Anthropic API returned HTTP {exc.status_code}: {exc.message}")
            + STATUS_ADVICE.get(exc.status_code, ""),
            status_code=exc.status_code,
            retry_after_s=parse_retry_after(exc.response.headers),
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMAPIError("Anthropic API request timed out", status_code=None)
    message = one_line(f"Anthropic API failed: {exc.message}") + CONNECTION_ADVICE
    return LLMAPIError(message, status_code=None)


class AnthropicClient:
    """An :class:`~crewbox.llm.base.LLMClient` over the Anthropic Messages API.

    Args:
        api_key: the Anthropic API key.
        model: default model id (e.g. ``claude-sonnet-5-5``).
        base_url: API root (``https://api.anthropic.com`` when None; the SDK then also reads
            ``ANTHROPIC_BASE_URL``).
        timeout_s: per-request timeout in seconds.
        effort: the effort of calls that name none (``CREWBOX_EFFORT``); None: the model's
            own default.

    The SDK never retries (``max_retries=0``): crewbox.llm.retry is the one retry layer,
    so every failure surfaces here as one LLMAPIError.
    """

    def __init__(
        self,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 600.0,
        effort: str | None = None,
    ) -> None:
        self.model = model
        self.effort = effort
        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )

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
        """Run one Messages API call; see :meth:`crewbox.llm.base.LLMClient.complete`.

        ``force_tool``, ``thinking`` and ``effort`` are sent as the model accepts them (see
        the module docstring).

        Raises:
            LLMAPIError: HTTP error (``status_code``, ``retry_after_s`` from ``retry-after``),
                or network error / timeout (``status_code=None``), after the SDK's retries.
            ValueError: ``effort`` is not one of crewbox.llm.catalog.EFFORTS.
        """
        model_id = model or self.model
        caps = capabilities(model_id)
        tool_choice = tool_choice_param(caps, force_tool)
        forcing = bool(force_tool) and caps.forced_tool
        strict = force_tool if force_tool and not forcing and caps.structured_outputs else None
        system_blocks = system_param(system)
        room = sum("cache_control" in b for b in system_blocks) < MAX_CACHE_BREAKPOINTS
        try:
            reply = self._for_call(timeout_s).messages.create(
                model=model_id,
                max_tokens=max_tokens,
                system=system_blocks if system_blocks else anthropic.omit,
                messages=messages_param(
                    messages,
                    cache_latest=room,
                ),
                tools=tools_param(tools, strict) if tools else anthropic.omit,
                tool_choice=tool_choice,
                thinking=thinking_param(caps, forcing),
                output_config=output_config_param(caps, effort or self.effort),
            )
        except anthropic.APIError as exc:
            raise api_error(exc) from exc
        served_by = reply.model or model_id
        return LLMResponse(
            content=content_blocks(reply),
            stop_reason=reply.stop_reason or "end_turn",
            usage=response_usage(reply, served_by),
            model=served_by,
        )

    def _for_call(self, timeout_s: float | None) -> anthropic.Anthropic:
        if timeout_s is None:
            return self._client
        return self._client.with_options(timeout=max(timeout_s, 0.001))

    def close(self) -> None:
        """Close the SDK's HTTP connection pool."""
        self._client.close()
