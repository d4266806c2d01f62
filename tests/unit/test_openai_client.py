"""OpenAIClient over real HTTP against a fake chat-completions endpoint (no SDK patching)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import LLMAPIError, ModelBehaviorError
from crewbox.llm.base import (
    Message,
    SystemBlock,
    TextBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)
from crewbox.llm.factory import make_client
from crewbox.llm.openai import OpenAIClient
from crewbox.llm.retry import RetryingLLM
from crewbox.telemetry import TracedLLM
from tests.fakes.messages_server import ErrorReply, FakeLLMServer

MODEL = "smollm2-135m-instruct"
PATH = "/v1/chat/completions"

READ_TOOL = ToolDef(
    name="Read",
    description="Read a file.",
    input_schema={
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
    },
)
PLAN_SCHEMA = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": {"type": "object"}}},
    "required": ["tasks"],
    "additionalProperties": False,
}
PLAN_TOOL = ToolDef(name="submit_plan", description="Submit the plan.", input_schema=PLAN_SCHEMA)
SYSTEM = [SystemBlock(text="You are Fabien.", cache=True), SystemBlock(text="Run 7")]


def chat_reply(
    message: dict[str, Any],
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A chat-completions response body with one choice."""
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One ``tool_calls`` item as a server sends it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 100},
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[OpenAIClient]:
    llm = OpenAIClient(base_url=f"{server.url}/v1", api_key="none", model=MODEL)
    yield llm
    llm.close()


def ask(text: str = "Draft the launch email") -> list[Message]:
    return [Message(role="user", content=text)]


def test_tool_calls_translated_both_ways(server: FakeLLMServer, client: OpenAIClient) -> None:
    server.reply(
        chat_reply(
            {
                "content": "Reading the brief.",
                "tool_calls": [tool_call("call_1", "Read", '{"file_path": "brief.md"}')],
            },
            "tool_calls",
        ),
        chat_reply({"content": "Subject: We launch today"}),
    )

    first = client.complete(system=SYSTEM, messages=ask(), tools=[READ_TOOL])
    history = [
        *ask(),
        Message(role="assistant", content=list(first.content)),
        Message(
            role="user",
            content=[
                ToolResultBlock(tool_use_id="call_1", content="Launch on Monday."),
                TextBlock(text="Keep it short."),
            ],
        ),
    ]
    second = client.complete(system=SYSTEM, messages=history, tools=[READ_TOOL])

    assert first.stop_reason == "tool_use"
    assert first.content == [
        TextBlock(text="Reading the brief."),
        ToolUseBlock(id="call_1", name="Read", input={"file_path": "brief.md"}),
    ]
    assert second.text == "Subject: We launch today"
    assert second.stop_reason == "end_turn"
    body = server.bodies(PATH)[1]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "description": "Read a file.",
                "parameters": READ_TOOL.input_schema,
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "You are Fabien.\n\nRun 7"},
        {"role": "user", "content": "Draft the launch email"},
        {
            "role": "assistant",
            "content": "Reading the brief.",
            "tool_calls": [tool_call("call_1", "Read", json.dumps({"file_path": "brief.md"}))],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Launch on Monday."},
        {"role": "user", "content": "Keep it short."},
    ]


def test_tool_error_result_is_marked_in_content(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    server.reply(chat_reply({"content": "ok"}))
    history = [
        *ask(),
        Message(role="assistant", content=[ToolUseBlock(id="c9", name="Read", input={})]),
        Message(
            role="user", content=[ToolResultBlock(tool_use_id="c9", content="nope", is_error=True)]
        ),
    ]

    client.complete(system=[], messages=history, tools=[READ_TOOL])

    sent = server.bodies(PATH)[0]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [tool_call("c9", "Read", "{}")],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "c9", "content": "Error: nope"}


def test_force_tool_uses_json_schema_and_returns_tool_use(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    plan = {"tasks": [{"id": "email", "persona": "fabien"}]}
    server.reply(chat_reply({"content": f"```json\n{json.dumps(plan)}\n```"}))

    response = client.complete(
        system=SYSTEM, messages=ask(), tools=[READ_TOOL, PLAN_TOOL], force_tool="submit_plan"
    )

    body = server.bodies(PATH)[0]
    assert "tools" not in body
    assert "tool_choice" not in body
    assert body["temperature"] == 0
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "submit_plan",
            "description": "Submit the plan.",
            "schema": PLAN_SCHEMA,
            "strict": True,
        },
    }
    assert response.stop_reason == "tool_use"
    [use] = response.content
    assert isinstance(use, ToolUseBlock)
    assert (use.name, use.input) == ("submit_plan", plan)
    assert use.id


def test_force_tool_bad_json_comes_back_as_text_with_usage(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    reply = "Sure! Here is the plan:\n" + "tasks: email, then ads. " * 20
    server.reply(chat_reply({"content": reply}))

    response = client.complete(
        system=[], messages=ask(), tools=[PLAN_TOOL], force_tool="submit_plan"
    )

    assert response.tool_uses == []
    assert response.text == reply.strip()
    assert response.usage.calls == 1


def test_force_tool_json_array_comes_back_as_text(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    server.reply(chat_reply({"content": "[1, 2]"}))

    response = client.complete(
        system=[], messages=ask(), tools=[PLAN_TOOL], force_tool="submit_plan"
    )
    assert response.tool_uses == [] and response.text == "[1, 2]"


def test_bad_tool_arguments_are_model_behavior_error(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    bad = tool_call("call_2", "Read", '{"file_path": ')
    server.reply(chat_reply({"content": None, "tool_calls": [bad]}, "tool_calls"))

    with pytest.raises(ModelBehaviorError, match="Read"):
        client.complete(system=[], messages=ask(), tools=[READ_TOOL])


def test_force_tool_must_be_among_tools(client: OpenAIClient) -> None:
    with pytest.raises(ValueError, match="submit_plan"):
        client.complete(system=[], messages=ask(), tools=[READ_TOOL], force_tool="submit_plan")


def test_usage_maps_cached_tokens_to_cache_reads(
    server: FakeLLMServer, client: OpenAIClient
) -> None:
    server.reply(chat_reply({"content": "hi"}, usage=USAGE), chat_reply({"content": "hi"}))

    local = client.complete(system=[], messages=ask())
    no_usage = client.complete(system=[], messages=ask())

    usage = local.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (20, 100, 30)
    assert usage.cache_write_tokens == 0
    assert usage.total_tokens == 150
    assert usage.cost_usd == Decimal(0)
    assert usage.calls == 1
    assert no_usage.usage.total_tokens == 0
    assert no_usage.usage.calls == 1


def test_known_model_is_priced(server: FakeLLMServer, client: OpenAIClient) -> None:
    server.reply(chat_reply({"content": "hi"}, usage=USAGE))

    response = client.complete(system=[], messages=ask(), model="claude-haiku-4-5")

    # claude-haiku-4-5, USD per MTok: input 1, output 5, cache read 0.10.
    expected = (20 * Decimal(1) + 30 * Decimal(5) + 100 * Decimal("0.10")) / 10**6
    assert response.usage.cost_usd == expected == Decimal("0.00018")
    assert server.bodies(PATH)[0]["model"] == "claude-haiku-4-5"


def test_length_finish_reason_is_max_tokens(server: FakeLLMServer, client: OpenAIClient) -> None:
    server.reply(chat_reply({"content": "Dear team, we"}, "length"))

    response = client.complete(system=[], messages=ask(), max_tokens=16)

    assert response.stop_reason == "max_tokens"
    assert server.bodies(PATH)[0]["max_tokens"] == 16


def test_rate_limit_becomes_llm_api_error(server: FakeLLMServer, client: OpenAIClient) -> None:
    body = {"error": {"message": "too many requests", "type": "rate_limit"}}
    server.reply(ErrorReply(429, body, {"retry-after": "3"}))

    with pytest.raises(LLMAPIError) as caught:
        client.complete(system=[], messages=ask())

    assert (caught.value.status_code, caught.value.retry_after_s) == (429, 3.0)
    assert "\n" not in str(caught.value)


def test_factory_builds_openai_client(server: FakeLLMServer) -> None:
    settings = Settings(
        _env_file=None,
        provider="openai",
        llm_base_url=f"{server.url}/v1",
        llm_api_key="local-secret",
        llm_model="qwen2.5-0.5b",
        llm_max_retries=0,
    )
    server.reply(chat_reply({"content": "hi"}))

    llm = make_client(settings)
    response = llm.complete(system=[], messages=ask())

    assert isinstance(llm, TracedLLM) and isinstance(llm.inner, RetryingLLM)
    assert isinstance(llm.inner.inner.inner, OpenAIClient)  # type: ignore[attr-defined]
    assert response.text == "hi"
    assert server.requests[0].path == PATH
    assert server.requests[0].headers["authorization"] == "Bearer local-secret"
    assert server.requests[0].body["model"] == "qwen2.5-0.5b"


def test_unreachable_server_says_what_to_do() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpenAIClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", model="m")
    with pytest.raises(LLMAPIError, match="cannot reach the LLM server") as caught:
        client.complete(system=[], messages=ask())
    assert caught.value.status_code is None
    assert "ANTHROPIC_API_KEY" in str(caught.value) and "\n" not in str(caught.value)
