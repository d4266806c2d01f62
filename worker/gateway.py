"""A Messages gateway on loopback: how Claude Code reaches the LLM without the key.

The claude-code engine (worker.engines.claude_code) gives Claude Code this gateway's URL as
``ANTHROPIC_BASE_URL`` and a random per-attempt token as ``ANTHROPIC_API_KEY`` (Claude Code
sends it as the ``x-api-key`` header; a ``Authorization: Bearer`` token is accepted too,
code.claude.com "Environment variables"). Each ``POST /v1/messages`` is checked against the
token, translated into one :meth:`crewbox.llm.base.LLMClient.complete` call through the
worker's own stack (budgets, retry layer, limiter, rate limits, pricing; the key stays in
this process) and answered as the Messages API does: JSON, or a server-sent event stream
when the request says ``stream: true`` (the whole answer, sent once it is complete). Every
call's usage goes to ``on_call`` as it returns, so the task's usage is the provider's ledger.

What the translation keeps: system text blocks (``cache_control`` marks the cached prefix),
text, tool_use, tool_result (its text), thinking and redacted_thinking blocks, custom tools,
the model, ``max_tokens`` and ``output_config.effort``. What it drops: images and documents
(a placeholder text says so), server tools, ``tool_choice``, ``temperature``, ``metadata``,
``thinking`` (crewbox's model table decides it, crewbox.llm.catalog).
A call the budgets refuse is answered 400 with the budget's message and remembered
(:attr:`MessagesGateway.budget_error`), as is an API error (:attr:`api_error`), so the engine
reports them as the builtin loop does.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from crewbox import telemetry
from crewbox.errors import BudgetExceededError, CrewboxError, LLMAPIError
from crewbox.llm.base import (
    ContentBlock,
    LLMClient,
    LLMResponse,
    Message,
    MessageBlock,
    RedactedThinkingBlock,
    SystemBlock,
    TextBlock,
    ThinkingBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)
from crewbox.models import Usage

log = logging.getLogger("crewbox.gateway")

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body the gateway reads (bytes); Claude Code's requests with a long
conversation stay far below it."""

OMITTED = "[{kind} omitted: the crewbox gateway passes text only]"
"""The text that stands for a block the gateway does not pass on."""

CallSink = Callable[[Usage, str | None], None]
"""``on_call(usage, subagent)``: one call returned (subagent: the sub-agent that made it)."""


class GatewayRequestError(CrewboxError):
    """A request the gateway cannot translate (the message says what is wrong)."""


class MessagesGateway:
    """Serve ``POST /v1/messages`` on ``127.0.0.1`` (a free port) for one attempt.

    ``llm``: the client calls go through (the budgeted stack of the task); ``map_model``:
    the model id a requested model id becomes (``Settings.model_of``); ``deadline_m``:
    ``time.monotonic()`` by which every call must end (each gets what is left as its
    ``timeout_s``); ``effort``: the persona's effort when the request names none;
    ``subagent_of(system_text) -> name | None``: the sub-agent a call's system prompt shows.
    Use as a context manager; :attr:`url` and :attr:`token` are what Claude Code gets.
    """

    def __init__(
        self,
        llm: LLMClient,
        on_call: CallSink,
        map_model: Callable[[str | None], str],
        deadline_m: float,
        effort: str | None = None,
        subagent_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.llm = llm
        self.on_call = on_call
        self.map_model = map_model
        self.deadline_m = deadline_m
        self.effort = effort
        self.subagent_of = subagent_of
        self.token = secrets.token_urlsafe(32)
        self.budget_error: BudgetExceededError | None = None
        self.api_error: LLMAPIError | None = None
        self.refused_auth = 0
        """Requests refused for a wrong or missing token."""
        self.trace_context = telemetry.inject()
        """The attempt's span (the gateway is made inside it): the calls' spans nest there,
        though the server's threads have contexts of their own."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``ANTHROPIC_BASE_URL`` to give Claude Code."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> MessagesGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def authorized(self, headers: Any) -> bool:
        """True when ``headers`` carry this attempt's token (``x-api-key`` or Bearer)."""
        given = headers.get("x-api-key") or ""
        bearer = headers.get("authorization") or ""
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def call(self, body: dict[str, Any]) -> LLMResponse:
        """Run one translated call of ``body`` (a Messages request) and report its usage.

        Raises:
            GatewayRequestError: ``body`` is not a Messages request crewbox can pass on.
            BudgetExceededError, LLMAPIError: from the stack below (remembered too).
        """
        system, messages, tools = translate(body)
        model = self.map_model(body.get("model"))
        effort = (body.get("output_config") or {}).get("effort") or self.effort
        try:
            with telemetry.attached(self.trace_context):
                response = self.llm.complete(
                    system=system,
                    messages=messages,
                    tools=tools or None,
                    max_tokens=int(body.get("max_tokens") or 4096),
                    model=model,
                    timeout_s=max(self.deadline_m - time.monotonic(), 0.001),
                    effort=effort,
                )
        except BudgetExceededError as exc:
            self.budget_error = exc
            raise
        except LLMAPIError as exc:
            self.api_error = exc
            raise
        system_text = "\n".join(b.text for b in system)
        subagent = self.subagent_of(system_text) if self.subagent_of else None
        self.on_call(response.usage, subagent)
        return response


def translate(body: dict[str, Any]) -> tuple[list[SystemBlock], list[Message], list[ToolDef]]:
    """A Messages request ``body`` as crewbox's call arguments: system blocks, messages,
    custom tools.

    Raises:
        GatewayRequestError: no messages, or a message or tool of the wrong shape.
    """
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise GatewayRequestError("the request has no 'messages' list")
    try:
        messages = [_message(m) for m in body["messages"]]
        tools = [
            ToolDef(name=t["name"], description=t.get("description") or "", input_schema=schema)
            for t in body.get("tools") or []
            if isinstance(schema := t.get("input_schema"), dict)
        ]
    except (KeyError, TypeError, ValidationError) as exc:
        raise GatewayRequestError(f"a message or tool has the wrong shape: {exc}") from exc
    return _system(body.get("system")), messages, tools


def _system(value: Any) -> list[SystemBlock]:
    if isinstance(value, str):
        return [SystemBlock(text=value)] if value else []
    blocks = [
        SystemBlock(text=b["text"], cache="cache_control" in b)
        for b in value or []
        if b.get("type") == "text" and b.get("text")
    ]
    return blocks


def _message(raw: dict[str, Any]) -> Message:
    content = raw["content"]
    if isinstance(content, str):
        return Message(role=raw["role"], content=content)
    blocks = [_block(b) for b in content]
    return Message(role=raw["role"], content=[b for b in blocks if b is not None])


def _block(raw: dict[str, Any]) -> MessageBlock | None:
    kind = raw.get("type")
    if kind == "text":
        return TextBlock(text=raw["text"]) if raw["text"] else None
    if kind == "tool_use":
        return ToolUseBlock(id=raw["id"], name=raw["name"], input=raw.get("input") or {})
    if kind == "tool_result":
        return ToolResultBlock(
            tool_use_id=raw["tool_use_id"],
            content=_result_text(raw.get("content")),
            is_error=bool(raw.get("is_error")),
        )
    if kind == "thinking":
        return ThinkingBlock(thinking=raw.get("thinking", ""), signature=raw["signature"])
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(data=raw["data"])
    return TextBlock(text=OMITTED.format(kind=kind))


def _result_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [
        b.get("text", "") if b.get("type") == "text" else OMITTED.format(kind=b.get("type"))
        for b in content
    ]
    return "\n".join(parts)


def usage_json(usage: Usage) -> dict[str, int]:
    """``usage`` in the Messages API's field names."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def block_json(block: ContentBlock) -> dict[str, Any]:
    """One response block in the Messages API's shape."""
    return block.model_dump()


def message_json(response: LLMResponse) -> dict[str, Any]:
    """``response`` as a Messages API response body."""
    return {
        "id": f"msg_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [block_json(b) for b in response.content],
        "stop_reason": response.stop_reason,
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }


def sse_events(response: LLMResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """``response`` as the Messages API's stream events ``(event, data)``: message_start,
    each block's start/delta/stop, message_delta (stop reason, usage), message_stop."""
    start = message_json(response)
    start["content"], start["stop_reason"] = [], None
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(response.content):
        yield from _block_events(index, block)
    delta = {"stop_reason": response.stop_reason, "stop_sequence": None}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": delta,
            "usage": usage_json(response.usage),
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _block_events(index: int, block: ContentBlock) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(block, TextBlock):
        first: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": block.text}]
    elif isinstance(block, ToolUseBlock):
        first = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block.input)}]
    elif isinstance(block, ThinkingBlock):
        first = {"type": "thinking", "thinking": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block.thinking},
            {"type": "signature_delta", "signature": block.signature},
        ]
    else:
        first, deltas = block.model_dump(), []
    yield (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": index,
            "content_block": first,
        },
    )
    for delta in deltas:
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def error_json(kind: str, message: str) -> dict[str, Any]:
    """A Messages API error body."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def _handler_for(gateway: MessagesGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/v1/messages":
                self._json(404, error_json("not_found_error", f"{self.path}: not served"))
                return
            if not gateway.authorized(self.headers):
                gateway.refused_auth += 1
                self._json(401, error_json("authentication_error", "invalid x-api-key"))
                return
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(413, error_json("request_too_large", "request body too large"))
                return
            try:
                body = json.loads(self.rfile.read(length))
                response = gateway.call(body)
            except (ValueError, GatewayRequestError) as exc:
                self._json(400, error_json("invalid_request_error", str(exc)))
                return
            except BudgetExceededError as exc:
                self._json(400, error_json("invalid_request_error", str(exc)))
                return
            except LLMAPIError as exc:
                self._json(exc.status_code or 502, error_json("api_error", str(exc)))
                return
            if body.get("stream"):
                self._stream(response)
            else:
                self._json(200, message_json(response))

        def do_GET(self) -> None:
            self._json(404, error_json("not_found_error", f"{self.path}: not served"))

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, response: LLMResponse) -> None:
            data = b"".join(
                f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()
                for event, payload in sse_events(response)
            )
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("gateway: " + format, *args)

    return Handler
