"""A fake Messages endpoint that answers as a Claude generation is documented to, contract
enforced, for the real Anthropic SDK to talk to (a :data:`Responder` of FakeLLMServer).

Generation ``"5.5"`` (platform.claude.com, "What's new in Claude Opus 5.5" and "Sonnet 5.5";
the error texts are the documented ones where the page gives them):

- ``thinking`` ``{"type": "disabled"}`` or ``{"type": "enabled", ...}`` is a 400;
- a forced ``tool_choice`` (``any`` or ``tool``) is a 400;
- ``output_config.effort`` must be low, medium, high, xhigh or max;
- every answer starts with a signed thinking block (its text empty, as at the default
  ``display``), and reports ``output_tokens_details.thinking_tokens``;
- a request whose last user turn holds tool results (a tool-use loop) must pass back the
  last assistant turn starting with a thinking or redacted_thinking block; every thinking
  block passed back must be one this endpoint issued, unchanged (signature and text).

Generation ``"4.x"``: forced tool use is allowed and answers carry no thinking.

What the model says comes from ``brain(body) -> (content blocks, stop_reason)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from typing import Any, Literal

from tests.fakes.messages_server import ErrorReply, RecordedRequest, Reply

Brain = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str]]
"""What the model answers to a request body: its content blocks and its stop reason."""

THINKING_OFF = (
    '"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)
FORCED_TOOL = (
    "tool_choice.type: `{kind}` is not supported for this model; forced tool use is not "
    "supported: use `auto` or `none`."
)
MISSING_THINKING = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."
)
BAD_SIGNATURE = "messages.{index}.content.{block}: Invalid `signature` in `thinking` block"
EFFORTS = ("low", "medium", "high", "xhigh", "max")
THINKING_TOKENS = 7
"""Thinking tokens each 5.5 answer reports (part of its output tokens)."""


class ClaudeContract:
    """Answers Messages requests as ``generation`` does; ``errors`` lists every contract
    error answered (a 400 each), ``requests`` every body received."""

    def __init__(self, generation: Literal["5.5", "4.x"], brain: Brain) -> None:
        self.generation = generation
        self.brain = brain
        self.errors: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._issued: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.body
        with self._lock:
            self.requests.append(body)
            problem = self.problem(body) if self.generation == "5.5" else None
            if problem is not None:
                self.errors.append(problem)
                error = {"type": "invalid_request_error", "message": problem}
                return ErrorReply(400, {"type": "error", "error": error})
            content, stop = self.brain(body)
            if self.generation == "5.5":
                content = [self._thinking(body), *content]
            return self._message(body, content, stop)

    def problem(self, body: dict[str, Any]) -> str | None:
        """The 400 message of a request the 5.5 contract refuses; None when it is valid."""
        thinking = body.get("thinking") or {}
        if thinking.get("type") in ("disabled", "enabled"):
            return THINKING_OFF.format(kind=thinking["type"])
        choice = body.get("tool_choice") or {}
        if choice.get("type") in ("any", "tool"):
            return FORCED_TOOL.format(kind=choice["type"])
        effort = (body.get("output_config") or {}).get("effort")
        if effort is not None and effort not in EFFORTS:
            return f"output_config.effort: Input should be one of {', '.join(EFFORTS)}"
        return self._loop_problem(body.get("messages", []))

    def _loop_problem(self, messages: list[dict[str, Any]]) -> str | None:
        for index, message in enumerate(messages):
            if message["role"] != "assistant" or isinstance(message["content"], str):
                continue
            for number, block in enumerate(message["content"]):
                if block.get("type") == "thinking" and self._issued.get(
                    block.get("signature", "")
                ) != block.get("thinking"):
                    return BAD_SIGNATURE.format(index=index, block=number)
        last_user = messages[-1]["content"] if messages else ""
        in_loop = isinstance(last_user, list) and any(
            b.get("type") == "tool_result" for b in last_user
        )
        assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not in_loop or not assistants:
            return None
        index = assistants[-1]
        content = messages[index]["content"]
        first = content[0]["type"] if isinstance(content, list) and content else "text"
        if first not in ("thinking", "redacted_thinking"):
            return MISSING_THINKING.format(index=index, found=first)
        return None

    def _thinking(self, body: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.sha256(
            f"{body.get('model')}:{len(self._issued)}:{json.dumps(body.get('messages'))}".encode()
        ).hexdigest()
        signature = f"sig-{digest[:32]}"
        self._issued[signature] = ""
        return {"type": "thinking", "thinking": "", "signature": signature}

    def _message(self, body: dict[str, Any], content: list[dict[str, Any]], stop: str) -> Reply:
        prompt_chars = len(
            json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
        )
        output = 20 + (THINKING_TOKENS if self.generation == "5.5" else 0)
        usage: dict[str, Any] = {
            "input_tokens": math.ceil(prompt_chars / 4),
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if self.generation == "5.5":
            usage["output_tokens_details"] = {"thinking_tokens": THINKING_TOKENS}
        return {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
