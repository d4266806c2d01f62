"""The one retry layer (crewbox.llm.retry): which errors are retried, how long it waits,
and that the attempt's deadline bounds every try; through ScriptedLLM's error steps and
through the real Anthropic SDK against a fake Messages endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.errors import LLMAPIError
from crewbox.llm.base import Message
from crewbox.llm.factory import make_client
from crewbox.llm.retry import BACKOFF_MAX_S, RetryingLLM
from crewbox.testing import ScriptedLLM
from tests.fakes.messages_server import ErrorReply, FakeLLMServer
from tests.unit.test_anthropic_client import FINAL_REPLY

ASK = [Message(role="user", content="hi")]


def error(status: int | None, retry_after_s: float | None = None) -> dict[str, Any]:
    return {"error": {"status": status, "retry_after_s": retry_after_s}}


def retrying(steps: list[dict[str, Any]], max_retries: int = 2) -> tuple[RetryingLLM, list[float]]:
    waits: list[float] = []
    llm = ScriptedLLM(steps)
    return RetryingLLM(llm, max_retries, sleep=waits.append), waits


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(None, True), (408, True), (409, True), (429, True), (500, True), (503, True),
     (529, True), (400, False), (401, False), (403, False), (404, False), (413, False)],
)  # fmt: skip
def test_which_errors_are_retryable(status: int | None, retryable: bool) -> None:
    assert LLMAPIError("x", status_code=status).retryable is retryable


@pytest.mark.parametrize("status", [None, 429, 500, 529])
def test_a_retryable_error_is_tried_again_and_the_call_succeeds(status: int | None) -> None:
    llm, waits = retrying([error(status), {"text": "ok"}])
    assert llm.complete(system=[], messages=ASK).text == "ok"
    assert len(waits) == 1 and 0 <= waits[0] <= BACKOFF_MAX_S
    assert [c.error_status for c in llm.inner.calls] == [status or 0, None]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_an_error_that_cannot_pass_is_not_retried(status: int) -> None:
    llm, waits = retrying([error(status), {"text": "never"}])
    with pytest.raises(LLMAPIError) as caught:
        llm.complete(system=[], messages=ASK)
    assert caught.value.status_code == status and waits == []
    assert len(llm.inner.calls) == 1  # type: ignore[attr-defined]


def test_retry_after_is_honoured() -> None:
    llm, waits = retrying([error(429, retry_after_s=7), {"text": "ok"}])
    llm.complete(system=[], messages=ASK)
    assert waits == [7.0]


def test_retries_stop_after_max_retries() -> None:
    llm, waits = retrying([error(529)] * 4, max_retries=2)
    with pytest.raises(LLMAPIError):
        llm.complete(system=[], messages=ASK)
    assert len(llm.inner.calls) == 3 and len(waits) == 2  # type: ignore[attr-defined]
    assert llm.inner.unused_steps() == [3]  # type: ignore[attr-defined]


def test_no_retry_waits_past_the_deadline() -> None:
    llm, waits = retrying([error(429, retry_after_s=5), {"text": "too late"}])
    with pytest.raises(LLMAPIError):
        llm.complete(system=[], messages=ASK, timeout_s=1.0)
    assert waits == [] and len(llm.inner.calls) == 1  # type: ignore[attr-defined]


def test_every_step_used_is_checked() -> None:
    llm = ScriptedLLM([{"text": "a"}, {"text": "b"}])
    llm.complete(system=[], messages=ASK)
    with pytest.raises(AssertionError, match=r"never used: \[1\]"):
        llm.assert_all_used()


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def http_client(server: FakeLLMServer) -> Any:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        provider="anthropic",
        anthropic_api_key="k",
        anthropic_base_url=server.url,
        llm_max_retries=2,
    )
    return make_client(settings)


RATE_LIMITED = ErrorReply(429, {"type": "error", "error": {"type": "rate_limit_error"}},
                          {"retry-after": "0"})  # fmt: skip


def test_through_the_sdk_a_429_is_retried_once_by_crewbox_not_by_the_sdk(
    server: FakeLLMServer,
) -> None:
    server.reply(RATE_LIMITED, FINAL_REPLY)
    started = time.monotonic()
    response = http_client(server).complete(system=[], messages=ASK, timeout_s=30)
    assert response.stop_reason == "end_turn" and len(server.requests) == 2
    assert time.monotonic() - started < 5


def test_through_the_sdk_a_401_fails_at_once_saying_where_the_key_comes_from(
    server: FakeLLMServer,
) -> None:
    refused = {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
    server.reply(ErrorReply(401, refused), FINAL_REPLY)
    with pytest.raises(LLMAPIError) as caught:
        http_client(server).complete(system=[], messages=ASK)
    assert len(server.requests) == 1
    message = str(caught.value)
    assert "\n" not in message and "secrets/<service>.key" in message
    assert "ANTHROPIC_API_KEY" in message


def test_through_the_sdk_a_413_is_not_retried_and_says_what_to_shorten(
    server: FakeLLMServer,
) -> None:
    too_big = {"type": "error", "error": {"type": "request_too_large", "message": "too big"}}
    server.reply(ErrorReply(413, too_big), FINAL_REPLY)
    with pytest.raises(LLMAPIError, match="context files"):
        http_client(server).complete(system=[], messages=ASK)
    assert len(server.requests) == 1
