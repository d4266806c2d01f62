"""The engine seam without the CLI: the ``engine`` key, ``CREWBOX_ENGINE``, the gateway's
token check and translation (real HTTP to the gateway; the LLM is ScriptedLLM-free: a
recording stub that answers one text block)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import PersonaError
from crewbox.llm.base import LLMResponse, TextBlock
from crewbox.models import Usage
from crewbox.personas import parse_persona
from worker.engines.base import engine_of
from worker.engines.claude_code import tool_choice
from worker.gateway import MessagesGateway, sse_events


def persona(extra: str = "") -> str:
    return f"---\nname: tess\ndescription: d\n{extra}---\nPrompt.\n"


def test_engine_key_is_read_and_bad_values_are_refused() -> None:
    assert parse_persona(persona("engine: Claude-Code\n"), "t.md").engine == "claude-code"
    assert parse_persona(persona(), "t.md").engine is None
    with pytest.raises(PersonaError, match="engine 'codex' is unknown; give one of builtin"):
        parse_persona(persona("engine: codex\n"), "t.md")


def test_crewbox_engine_applies_to_every_persona(monkeypatch: pytest.MonkeyPatch) -> None:
    cc = parse_persona(persona("engine: claude-code\n"), "t.md")
    plain = parse_persona(persona(), "t.md")
    assert engine_of(Settings(), cc) == "claude-code"
    assert engine_of(Settings(), plain) == "builtin"
    monkeypatch.setenv("CREWBOX_ENGINE", "claude-code")
    assert engine_of(Settings(), plain) == "claude-code"


def test_claude_code_tools_keep_what_builtin_lacks_and_bash_only_when_allowed() -> None:
    p = parse_persona(persona("tools: Read, WebFetch, Bash(npm test:*), Task\n"), "t.md")
    out = Path("/r/out")
    choice = tool_choice(p, allow_bash=False, out_dir=out)
    assert choice.tools == ["Read", "Agent"]  # WebFetch dropped by the loader: no path here
    p2 = parse_persona(persona("tools: Read, Write, Bash(npm test:*)\n"), "t.md")
    assert tool_choice(p2, allow_bash=True, out_dir=out, workspace=Path("/ws")).allowed == [
        "Read(//r/out/**)", "Read(//ws/**)", "Edit(//r/out/**)", "Bash(npm test:*)",
    ]  # fmt: skip
    assert "Bash" in tool_choice(p2, allow_bash=False, out_dir=out).disallowed


class Answer:
    """An LLMClient that answers "hi" and records its calls."""

    model = "claude-sonnet-4-6"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def complete(self, **call: Any) -> LLMResponse:
        self.calls.append(call)
        usage = Usage(input_tokens=12, output_tokens=3, calls=1)
        return LLMResponse(
            content=[TextBlock(text="hi")], stop_reason="end_turn", usage=usage, model=self.model
        )


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url + "/v1/messages", json.dumps(body).encode(), {**headers, "content-type": "x"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "image"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "R", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "r"}],
                }
            ],
        },
    ],
    "tools": [
        {"name": "R", "description": "d", "input_schema": {"type": "object"}},
        {"type": "web_search_x", "name": "w"},
    ],
}


def test_gateway_refuses_a_wrong_token_and_forwards_a_right_one() -> None:
    llm, seen = Answer(), []
    gateway = MessagesGateway(llm, lambda u, s: seen.append(u), str, time.monotonic() + 30)
    with gateway:
        status, _ = post(gateway.url, BODY, {"x-api-key": "guess"})
        assert status == 401 and not llm.calls
        status, raw = post(gateway.url, BODY, {"authorization": f"Bearer {gateway.token}"})
        assert status == 200 and json.loads(raw)["content"] == [{"type": "text", "text": "hi"}]
        status, raw = post(gateway.url, {**BODY, "stream": True}, {"x-api-key": gateway.token})
    assert status == 200 and b"event: message_stop" in raw
    assert gateway.refused_auth == 1 and len(seen) == 2
    call = llm.calls[0]
    assert call["system"][0].cache and [t.name for t in call["tools"]] == ["R"]
    assert call["messages"][2].content[0].content == "r"
    assert "omitted" in call["messages"][0].content[1].text


def test_stream_events_carry_the_whole_answer_and_usage() -> None:
    usage = Usage(input_tokens=5, output_tokens=2, calls=1)
    response = LLMResponse(
        content=[TextBlock(text="a")], stop_reason="end_turn", usage=usage, model="m"
    )
    events = list(sse_events(response))
    assert [e for e, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[4][1]["usage"]["output_tokens"] == 2
