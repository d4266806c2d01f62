"""AnthropicClient over real HTTP against a fake Messages endpoint (the SDK is not patched)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import ConfigError, LLMAPIError
from crewbox.llm.anthropic import AnthropicClient
from crewbox.llm.base import (
    Message,
    RedactedThinkingBlock,
    SystemBlock,
    TextBlock,
    ThinkingBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)
from crewbox.llm.factory import make_client
from crewbox.llm.retry import RetryingLLM
from tests.fakes.messages_server import ErrorReply, FakeLLMServer

pytestmark = pytest.mark.filterwarnings(
    # anthropic 2.12 warns that claude-sonnet-4-5 reaches end-of-life on 2026-11-30.
    "ignore:The model .* is deprecated:DeprecationWarning"
)

MODEL = "claude-sonnet-4-5"
SERVED_MODEL = "claude-sonnet-4-5-20250929"

READ_TOOL = ToolDef(
    name="Read",
    description="Read a file.",
    input_schema={
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
    },
)
PLAN_TOOL = ToolDef(
    name="submit_plan",
    description="Submit the plan.",
    input_schema={"type": "object", "properties": {"tasks": {"type": "array"}}},
)
SYSTEM = [
    SystemBlock(text="You are Marie, a choreographer.", cache=True),
    SystemBlock(text="Run 7"),
]


def message_reply(
    content: list[dict[str, Any]], stop_reason: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """A Messages API response body."""
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": SERVED_MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


TOOL_USE_REPLY = message_reply(
    [
        {"type": "thinking", "thinking": "The notes hold the brief.", "signature": "sig"},
        {"type": "text", "text": "Let me read the notes."},
        {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "notes.md"}},
    ],
    "tool_use",
    {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 0,
    },
)
FINAL_REPLY = message_reply(
    [{"type": "text", "text": "The piece opens with a slow canon."}],
    "end_turn",
    {
        "input_tokens": 150,
        "output_tokens": 20,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": 2000,
    },
)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[AnthropicClient]:
    llm = AnthropicClient(api_key="test-key", model=MODEL, base_url=server.url)
    yield llm
    llm.close()


def run_round_trip(client: AnthropicClient) -> tuple[Any, Any]:
    """Ask, get a tool_use, send its tool_result back, get the final text."""
    ask = Message(role="user", content="Summarize notes.md")
    first = client.complete(system=SYSTEM, messages=[ask], tools=[READ_TOOL], max_tokens=512)
    result = ToolResultBlock(tool_use_id=first.tool_uses[0].id, content="Slow canon, then a duet.")
    history = [
        ask,
        Message(role="assistant", content=list(first.content)),
        Message(role="user", content=[result]),
    ]
    second = client.complete(system=SYSTEM, messages=history, tools=[READ_TOOL], max_tokens=512)
    return first, second


def test_tool_use_round_trip(server: FakeLLMServer, client: AnthropicClient) -> None:
    server.reply(TOOL_USE_REPLY, FINAL_REPLY)

    first, second = run_round_trip(client)

    assert first.stop_reason == "tool_use"
    assert first.content == [
        ThinkingBlock(thinking="The notes hold the brief.", signature="sig"),
        TextBlock(text="Let me read the notes."),
        ToolUseBlock(id="toolu_01", name="Read", input={"file_path": "notes.md"}),
    ]
    assert second.stop_reason == "end_turn"
    assert second.text == "The piece opens with a slow canon."
    assert second.model == SERVED_MODEL
    assert [r.path for r in server.requests] == ["/v1/messages", "/v1/messages"]
    sent = server.requests[1].body["messages"]
    assert sent[1]["content"][0] == {  # passed back exactly as returned
        "type": "thinking",
        "thinking": "The notes hold the brief.",
        "signature": "sig",
    }
    assert sent[1]["content"][2] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "Read",
        "input": {"file_path": "notes.md"},
    }
    assert sent[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": "Slow canon, then a duet.",
                "is_error": False,
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }


def test_the_latest_turn_is_a_cache_breakpoint_within_the_limit_of_four(
    server: FakeLLMServer, client: AnthropicClient
) -> None:
    server.reply(TOOL_USE_REPLY, FINAL_REPLY)
    run_round_trip(client)
    first, second = (r.body for r in server.requests)
    assert first["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(second["messages"][:-1])  # only the latest
    server.reply(FINAL_REPLY)
    four = [SystemBlock(text=f"part {i}", cache=True) for i in range(4)]
    client.complete(system=four, messages=[Message(role="user", content="hi")])
    assert "cache_control" not in json.dumps(server.requests[-1].body["messages"])


def api_key_sent(headers: dict[str, str]) -> str | None:
    """The API key a request carried: anthropic 2.x sends ``Authorization: Bearer``, 0.x
    ``x-api-key``."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer or None


def test_request_body_has_cache_control_tools_and_key(
    server: FakeLLMServer, client: AnthropicClient
) -> None:
    server.reply(FINAL_REPLY)

    client.complete(system=SYSTEM, messages=[Message(role="user", content="hi")], tools=[READ_TOOL])

    request = server.requests[0]
    assert api_key_sent(request.headers) == "test-key"
    assert request.body["model"] == MODEL
    assert request.body["max_tokens"] == 4096
    assert request.body["system"] == [
        {
            "type": "text",
            "text": "You are Marie, a choreographer.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "Run 7"},
    ]
    assert request.body["tools"] == [READ_TOOL.model_dump()]
    assert "tool_choice" not in request.body


def test_usage_and_cost_summed_exactly(server: FakeLLMServer, client: AnthropicClient) -> None:
    server.reply(TOOL_USE_REPLY, FINAL_REPLY)

    first, second = run_round_trip(client)
    total = first.usage + second.usage

    # claude-sonnet-4-5, USD per MTok: input 3, output 15, cache write 3.75, cache read 0.30.
    first_cost = (100 * Decimal("3") + 50 * Decimal("15") + 2000 * Decimal("3.75")) / 10**6
    second_cost = (150 * Decimal("3") + 20 * Decimal("15") + 2000 * Decimal("0.30")) / 10**6
    assert first_cost == Decimal("0.00855")
    assert second_cost == Decimal("0.00135")
    assert first.usage.cost_usd == first_cost
    assert second.usage.cost_usd == second_cost
    assert total.cost_usd == Decimal("0.0099")
    assert (total.input_tokens, total.output_tokens) == (250, 70)
    assert (total.cache_write_tokens, total.cache_read_tokens) == (2000, 2000)
    assert total.calls == 2


def test_rate_limit_becomes_llm_api_error_with_retry_after(
    server: FakeLLMServer, client: AnthropicClient
) -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow\ndown."}}
    server.reply(ErrorReply(429, body, {"retry-after": "7"}))

    with pytest.raises(LLMAPIError) as caught:
        client.complete(system=SYSTEM, messages=[Message(role="user", content="hi")])

    assert caught.value.status_code == 429
    assert caught.value.retry_after_s == 7.0
    assert "\n" not in str(caught.value)
    assert len(server.requests) == 1


def test_server_error_tuple_reply_maps_status(
    server: FakeLLMServer, client: AnthropicClient
) -> None:
    server.reply((529, {"type": "error", "error": {"type": "overloaded_error"}}, {}))

    with pytest.raises(LLMAPIError) as caught:
        client.complete(system=SYSTEM, messages=[Message(role="user", content="hi")])

    assert caught.value.status_code == 529
    assert caught.value.retry_after_s is None


def test_connection_refused_has_no_status() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = AnthropicClient(api_key="k", model=MODEL, base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(LLMAPIError) as caught:
        llm.complete(system=[], messages=[Message(role="user", content="hi")])

    assert caught.value.status_code is None
    assert caught.value.retry_after_s is None
    assert f"127.0.0.1:{port}" in str(caught.value)  # where it tried, and what to check
    assert "ANTHROPIC_BASE_URL" in str(caught.value) and "\n" not in str(caught.value)


def test_forced_tool_sends_tool_choice(server: FakeLLMServer, client: AnthropicClient) -> None:
    plan = {"tasks": [{"id": "choreo", "persona": "marie"}]}
    server.reply(
        message_reply(
            [{"type": "tool_use", "id": "toolu_9", "name": "submit_plan", "input": plan}],
            "tool_use",
            {"input_tokens": 10, "output_tokens": 5},
        )
    )

    response = client.complete(
        system=[],
        messages=[Message(role="user", content="Plan a show")],
        tools=[PLAN_TOOL],
        force_tool="submit_plan",
    )

    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "submit_plan"}
    assert "system" not in body
    assert response.tool_uses == [ToolUseBlock(id="toolu_9", name="submit_plan", input=plan)]
    assert response.usage.cache_write_tokens == 0
    assert response.usage.cost_usd == (10 * Decimal(3) + 5 * Decimal(15)) / 10**6


def test_factory_needs_a_key_for_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("CREWBOX_ANTHROPIC_API_KEY", raising=False)
    settings = Settings(_env_file=None, provider="anthropic")

    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY or CREWBOX_PROVIDER=openai"):
        make_client(settings)


def test_factory_builds_anthropic_client(server: FakeLLMServer) -> None:
    settings = Settings(
        _env_file=None,
        provider="anthropic",
        anthropic_api_key="factory-key",
        anthropic_base_url=server.url,
        model="claude-haiku-4-5",
        llm_max_retries=0,
    )
    server.reply(FINAL_REPLY)

    llm = make_client(settings)
    llm.complete(system=[], messages=[Message(role="user", content="hi")])

    assert isinstance(llm, RetryingLLM) and isinstance(llm.inner.inner, AnthropicClient)  # type: ignore[attr-defined]
    assert api_key_sent(server.requests[0].headers) == "factory-key"
    assert server.requests[0].body["model"] == "claude-haiku-4-5"


@pytest.mark.parametrize(
    ("model", "forced", "thinking", "tool_choice", "effort"),
    [
        # Opus 5.5: thinking always on (omitted), forced tool use refused: offered, auto.
        ("claude-opus-5-5", True, None, {"type": "auto"}, "high"),
        # Sonnet 5.5 / Haiku 5.5: adaptive, no forcing.
        ("claude-sonnet-5-5", True, {"type": "adaptive"}, {"type": "auto"}, "high"),
        ("claude-haiku-5-5", False, {"type": "adaptive"}, None, "high"),
        # Opus 5: adaptive, forcing allowed with thinking off.
        (
            "claude-opus-5",
            True,
            {"type": "disabled"},
            {"type": "tool", "name": "submit_plan"},
            "high",
        ),
        ("claude-opus-5", False, {"type": "adaptive"}, None, "high"),
        # 4.x: as before (no thinking sent); effort where the model takes it.
        ("claude-sonnet-4-6", True, None, {"type": "tool", "name": "submit_plan"}, "high"),
        ("claude-haiku-4-5", False, None, None, None),
        # An id crewbox does not know: the newest family's behaviour.
        ("claude-opus-7", True, None, {"type": "auto"}, "high"),
    ],
)
def test_each_family_gets_the_thinking_tool_choice_and_effort_it_accepts(
    server: FakeLLMServer,
    client: AnthropicClient,
    model: str,
    forced: bool,
    thinking: dict[str, Any] | None,
    tool_choice: dict[str, Any] | None,
    effort: str | None,
) -> None:
    server.reply(
        message_reply(
            [{"type": "text", "text": "ok"}], "end_turn", {"input_tokens": 1, "output_tokens": 1}
        )
    )
    client.complete(
        system=[],
        messages=[Message(role="user", content="Plan")],
        tools=[PLAN_TOOL],
        force_tool="submit_plan" if forced else None,
        model=model,
        effort="high",
    )
    body = server.requests[0].body
    assert body.get("thinking") == thinking
    assert body.get("tool_choice") == tool_choice
    assert body.get("output_config", {}).get("effort") == effort


def test_an_unknown_id_is_warned_once(
    server: FakeLLMServer, client: AnthropicClient, caplog: pytest.LogCaptureFixture
) -> None:
    reply = message_reply(
        [{"type": "text", "text": "ok"}], "end_turn", {"input_tokens": 1, "output_tokens": 1}
    )
    server.reply(reply, reply)
    for _ in range(2):
        client.complete(
            system=[], messages=[Message(role="user", content="x")], model="claude-zeta-9"
        )
    assert caplog.text.count("'claude-zeta-9' is not in crewbox's capability table") == 1


def test_thinking_tokens_are_counted_and_the_client_default_effort_sent(
    server: FakeLLMServer,
) -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 30,
        "output_tokens_details": {"thinking_tokens": 25},
    }
    server.reply(
        message_reply(
            [{"type": "redacted_thinking", "data": "enc"}, {"type": "text", "text": "ok"}],
            "end_turn",
            usage,
        )
    )
    llm = AnthropicClient(api_key="k", model="claude-sonnet-5-5", base_url=server.url, effort="max")
    response = llm.complete(system=[], messages=[Message(role="user", content="x")])
    assert response.usage.thinking_tokens == 25 and response.usage.output_tokens == 30
    assert response.content[0] == RedactedThinkingBlock(data="enc")
    assert server.requests[0].body["output_config"] == {"effort": "max"}


def test_crewbox_effort_reaches_the_client_and_blank_means_unset(
    monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    from crewbox.config import Settings

    monkeypatch.setenv("CREWBOX_EFFORT", "")
    assert Settings().effort is None
    monkeypatch.setenv("CREWBOX_EFFORT", "medium")
    settings = Settings(provider="anthropic", anthropic_api_key="k", anthropic_base_url=server.url)
    server.reply(
        message_reply(
            [{"type": "text", "text": "ok"}], "end_turn", {"input_tokens": 1, "output_tokens": 1}
        )
    )
    make_client(settings).complete(system=[], messages=[Message(role="user", content="x")])
    assert server.requests[0].body["output_config"] == {"effort": "medium"}
    assert server.requests[0].body["model"] == "claude-sonnet-5-5"


def test_compose_s_anthropic_base_url_reaches_the_client_and_blank_means_the_api(
    monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    """docker-compose.yml passes ``CREWBOX_ANTHROPIC_BASE_URL: ${ANTHROPIC_BASE_URL:-}``:
    blank is the API's own URL (not an empty base URL), set is where every call goes."""
    from crewbox.config import Settings

    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("CREWBOX_ANTHROPIC_BASE_URL", "")
    assert Settings().anthropic_base_url is None  # the SDK's default, not base_url=""
    monkeypatch.setenv("CREWBOX_ANTHROPIC_BASE_URL", server.url)
    server.reply(
        message_reply(
            [{"type": "text", "text": "ok"}], "end_turn", {"input_tokens": 1, "output_tokens": 1}
        )
    )
    make_client(Settings(provider="anthropic", anthropic_api_key="k")).complete(
        system=[], messages=[Message(role="user", content="x")]
    )
    assert len(server.requests) == 1


def test_an_offered_plan_tool_is_strict_with_a_schema_strict_tools_take(
    server: FakeLLMServer, client: AnthropicClient
) -> None:
    from orchestrator.plan import plan_tool

    reply = message_reply(
        [{"type": "text", "text": "ok"}], "end_turn", {"input_tokens": 1, "output_tokens": 1}
    )
    server.reply(reply, reply)
    tool = plan_tool(["marie", "anga"])
    for model in ("claude-opus-5-5", "claude-sonnet-4-6"):
        client.complete(
            system=[],
            messages=[Message(role="user", content="Plan")],
            tools=[tool],
            force_tool="submit_plan",
            model=model,
        )
    offered, forced = (r.body["tools"][0] for r in server.requests)
    assert offered["strict"] is True
    spec = offered["input_schema"]["$defs"]["TaskSpec"]["properties"]
    assert "maxLength" not in spec["title"] and "maxLength: 80" in spec["title"]["description"]
    assert spec["persona"]["enum"] == ["anga", "marie"]
    assert "strict" not in forced and forced["input_schema"] == tool.input_schema
