"""The ``openai`` provider: any OpenAI-compatible chat-completions server via the ``openai`` SDK.

Meant for llama.cpp server, Ollama and vLLM (``base_url`` such as ``http://llm:8080/v1``).
crewbox's Anthropic-shaped blocks are translated both ways:

- system blocks → one ``system`` message (blocks joined by blank lines);
- assistant ``tool_use`` blocks → ``tool_calls`` (``arguments`` as a JSON string);
- user ``tool_result`` blocks → ``role: "tool"`` messages (``tool_call_id``), placed before
  the user's text so they follow the assistant turn that asked for them;
- tools → ``{"type": "function", "function": {"name", "description", "parameters"}}``.

``force_tool`` (structured output) sends no tools: it sends ``response_format`` with the
tool's ``input_schema`` as a strict ``json_schema`` (grammar-constrained on llama.cpp) and
turns the JSON reply into one ``tool_use`` block.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any, cast

import openai

from crewbox.errors import LLMAPIError, ModelBehaviorError
from crewbox.llm.anthropic import one_line, parse_retry_after
from crewbox.llm.base import (
    ContentBlock,
    LLMResponse,
    Message,
    MessageBlock,
    SystemBlock,
    TextBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)
from crewbox.llm.pricing import call_usage
from crewbox.models import Usage

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionMessage,
        ChatCompletionMessageParam,
        ChatCompletionToolParam,
    )
    from openai.types.shared_params import ResponseFormatJSONSchema

EXCERPT_CHARS = 200
"""How much of a malformed model reply an error message quotes."""

STRUCTURED_TEMPERATURE = 0.0
"""Sampling temperature for forced-tool (json_schema) calls: reproducible structured output."""

FINISH_REASONS = {"tool_calls": "tool_use", "length": "max_tokens"}
"""OpenAI ``finish_reason`` → Anthropic ``stop_reason``; anything else is ``end_turn``."""

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*(.*?)\s*```$", re.DOTALL)
"""A Markdown code fence around a whole reply (```json ... ```)."""


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _assistant_message(blocks: list[MessageBlock]) -> dict[str, Any]:
    text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input)},
        }
        for b in blocks
        if isinstance(b, ToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_message(block: ToolResultBlock) -> dict[str, Any]:
    content = f"Error: {block.content}" if block.is_error else block.content
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _user_messages(blocks: list[MessageBlock]) -> list[dict[str, Any]]:
    out = [_tool_message(b) for b in blocks if isinstance(b, ToolResultBlock)]
    texts = [b.text for b in blocks if isinstance(b, TextBlock)]
    if texts:
        out.append({"role": "user", "content": "\n\n".join(texts)})
    return out


def chat_messages(system: list[SystemBlock], messages: list[Message]) -> list[dict[str, Any]]:
    """The chat-completions ``messages`` for a system prompt and crewbox messages.

    A ``tool_result`` with ``is_error`` becomes a tool message whose content starts with
    ``Error: `` (chat completions has no error flag).
    """
    out: list[dict[str, Any]] = []
    system_text = "\n\n".join(b.text for b in system if b.text.strip())
    if system_text:
        out.append({"role": "system", "content": system_text})
    for message in messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            out.append(_assistant_message(message.content))
        else:
            out.extend(_user_messages(message.content))
    return out


def chat_tools(tools: list[ToolDef]) -> list[dict[str, Any]]:
    """Tools as chat-completions function tools (``parameters`` is the ``input_schema``)."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
            },
        }
        for t in tools
    ]


def json_schema_format(tool: ToolDef) -> dict[str, Any]:
    """``response_format`` asking for JSON that matches ``tool.input_schema`` (strict)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": tool.name,
            "description": tool.description,
            "schema": tool.input_schema,
            "strict": True,
        },
    }


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object in ``text``, which may be wrapped in a ```json fence.

    Raises:
        ModelBehaviorError: not JSON, or JSON but not an object; the message quotes the
            first 200 characters of ``text``.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ModelBehaviorError(
            f"{what} is not valid JSON ({exc.msg}): {text[:EXCERPT_CHARS]!r}"
        ) from exc
    if not isinstance(value, dict):
        raise ModelBehaviorError(f"{what} is not a JSON object: {text[:EXCERPT_CHARS]!r}")
    return value


def forced_tool_content(message: ChatCompletionMessage, tool_name: str) -> list[ContentBlock]:
    """The JSON reply to a ``json_schema`` request as one ``tool_use`` block of ``tool_name``.

    A reply that is not a JSON object (cut off at the token limit, or prose) comes back as a
    text block instead, with the call's usage, so the caller can count it and ask again.
    """
    what = f"the model's {tool_name} reply"
    try:
        arguments = parse_json_object(message.content or "", what)
    except ModelBehaviorError:
        text = (message.content or "").strip()
        return [TextBlock(text=text)] if text else []
    return [ToolUseBlock(id=_new_call_id(), name=tool_name, input=arguments)]


def _tool_use(call: Any) -> ToolUseBlock:
    function = getattr(call, "function", None)
    if function is None:
        raise ModelBehaviorError(f"model made a non-function tool call: {call.type!r}")
    raw = function.arguments or ""
    what = f"the arguments of the model's {function.name} call"
    arguments = parse_json_object(raw, what) if raw.strip() else {}
    return ToolUseBlock(id=call.id or _new_call_id(), name=function.name, input=arguments)


def reply_content(message: ChatCompletionMessage) -> list[ContentBlock]:
    """The reply's text (if any) then its tool calls, as crewbox blocks.

    Raises:
        ModelBehaviorError: a tool call's ``arguments`` are not a JSON object.
    """
    blocks: list[ContentBlock] = []
    if message.content and message.content.strip():
        blocks.append(TextBlock(text=message.content))
    blocks.extend(_tool_use(call) for call in message.tool_calls or [])
    return blocks


def stop_reason(finish_reason: str | None, content: list[ContentBlock]) -> str:
    """Anthropic ``stop_reason`` for a ``finish_reason``; tool calls always mean ``tool_use``.

    (Some servers report ``stop`` alongside tool calls.)
    """
    if any(isinstance(b, ToolUseBlock) for b in content):
        return "tool_use"
    return FINISH_REASONS.get(finish_reason or "", "end_turn")


def reply_usage(reply: ChatCompletion, model: str) -> Usage:
    """This call's Usage: ``prompt_tokens_details.cached_tokens`` count as cache reads.

    Cached tokens are part of ``prompt_tokens``, so they are taken out of ``input_tokens``
    (the four token fields never overlap). A reply without usage counts zero tokens.
    """
    usage = reply.usage
    if usage is None:
        return call_usage(model, input_tokens=0, output_tokens=0)
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    return call_usage(
        model,
        input_tokens=max((usage.prompt_tokens or 0) - cached, 0),
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=cached,
    )


def api_error(exc: openai.APIError, base_url: str) -> LLMAPIError:
    """The SDK's error as an :class:`~crewbox.errors.LLMAPIError` with a one-line message."""
    if isinstance(exc, openai.APIStatusError):
        return LLMAPIError(
            one_line(f"LLM server {base_url} returned HTTP {exc.status_code}: {exc.message}"),
            status_code=exc.status_code,
            retry_after_s=parse_retry_after(exc.response.headers),
        )
    if isinstance(exc, openai.APITimeoutError):
        return LLMAPIError(f"LLM server {base_url} timed out", status_code=None)
    if isinstance(exc, openai.APIConnectionError):
        return LLMAPIError(
            f"cannot reach the LLM server at {base_url}; start an OpenAI-compatible server "
            "there (or set CREWBOX_LLM_BASE_URL), or set ANTHROPIC_API_KEY to use Claude",
            status_code=None,
        )
    return LLMAPIError(one_line(f"LLM server {base_url} failed: {exc.message}"), status_code=None)


def _find_tool(tools: list[ToolDef] | None, name: str) -> ToolDef:
    for tool in tools or []:
        if tool.name == name:
            return tool
    raise ValueError(f"force_tool {name!r} is not one of the tools passed to complete()")


class OpenAIClient:
    """An :class:`~crewbox.llm.base.LLMClient` over an OpenAI-compatible chat-completions API.

    Args:
        base_url: API root including ``/v1`` (e.g. ``http://localhost:8080/v1``).
        api_key: sent as a bearer token (local servers accept any value, e.g. ``none``).
        model: default model id; priced from ``pricing.json`` (local models cost 0).
        timeout_s: per-request timeout in seconds.

    The SDK never retries (``max_retries=0``): crewbox.llm.retry is the one retry layer.

    A forced tool (structured output) is asked for at ``STRUCTURED_TEMPERATURE``: seen here,
    SmolLM2-135M under the json_schema grammar plans with two or more personas at
    temperature 0 in 8 of 8 tries, at the server's default (0.8) in 3 of 8.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float = 600.0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
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
        """Run one chat-completions call; see :meth:`crewbox.llm.base.LLMClient.complete`.
        ``effort`` is Claude's and ignored here (the OpenAI-compatible path is unchanged).

        Raises:
            ValueError: ``force_tool`` names no tool in ``tools`` (a caller bug).
            LLMAPIError: HTTP error (``status_code``, ``retry_after_s``), network error or
                timeout (``status_code=None``), after the SDK's retries.
            ModelBehaviorError: a tool call's arguments are not a JSON object (a forced
                tool's reply that is not JSON comes back as text, see forced_tool_content).
        """
        model_id = model or self.model
        forced = _find_tool(tools, force_tool) if force_tool else None
        reply = self._create(
            model=model_id,
            messages=chat_messages(system, messages),
            tools=chat_tools(tools) if tools and not forced else None,
            response_format=json_schema_format(forced) if forced else None,
            max_tokens=max_tokens,
            temperature=STRUCTURED_TEMPERATURE if forced else None,
            timeout_s=timeout_s,
        )
        if not reply.choices:
            raise ModelBehaviorError(f"LLM server {self.base_url} returned no choices")
        choice = reply.choices[0]
        if forced:
            content = forced_tool_content(choice.message, forced.name)
        else:
            content = reply_content(choice.message)
        return LLMResponse(
            content=content,
            stop_reason=stop_reason(choice.finish_reason, content),
            usage=reply_usage(reply, model_id),
            model=reply.model or model_id,
        )

    def _create(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        max_tokens: int,
        temperature: float | None,
        timeout_s: float | None,
    ) -> ChatCompletion:
        client = self._client
        if timeout_s is not None:
            client = client.with_options(timeout=max(timeout_s, 0.001))
        try:
            return client.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                tools=cast("list[ChatCompletionToolParam]", tools) if tools else openai.omit,
                response_format=(
                    cast("ResponseFormatJSONSchema", response_format)
                    if response_format
                    else openai.omit
                ),
                max_tokens=max_tokens,
                temperature=openai.omit if temperature is None else temperature,
            )
        except openai.APIError as exc:
            raise api_error(exc, self.base_url) from exc

    def close(self) -> None:
        """Close the SDK's HTTP connection pool."""
        self._client.close()
