"""crewbox.telemetry: off without an endpoint, the trace context through a Task, a bounded
exit flush, TRACEPARENT for Claude Code, and log lines that carry run, task, attempt and
trace ids (CREWBOX_LOG_FORMAT=json)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crewbox import telemetry
from crewbox.llm.base import Message
from crewbox.models import Task, TaskSpec, Usage
from crewbox.testing import ScriptedLLM
from worker.engines.claude_code import cli_env
from worker.gateway import MessagesGateway


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """crewbox's tracer backed by an in-memory exporter for one test (the global provider
    is left alone: it can be set once a process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "tracer", lambda: provider.get_tracer("test"))
    monkeypatch.setattr(telemetry, "active", True)
    yield exporter
    provider.shutdown()


def task() -> Task:
    spec = TaskSpec(id="t1", persona="marie", title="t", instructions="Do t1.")
    return Task(run_id="r1", spec=spec, request_text="x")


def test_tracing_is_off_without_an_endpoint_or_when_disabled() -> None:
    assert not telemetry.tracing_configured({})
    assert telemetry.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://p:6006"})
    assert telemetry.tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://p"})
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://p", "OTEL_SDK_DISABLED": "true"}
    assert not telemetry.tracing_configured(off)


def test_with_tracing_off_nothing_travels_and_no_span_records() -> None:
    with telemetry.run_span("r1") as span:
        assert not span.is_recording()
        assert telemetry.inject() == {}
        assert telemetry.traceparent() is None
        assert telemetry.trace_id_hex() is None


def test_the_attempt_joins_the_run_through_the_task(spans: InMemorySpanExporter) -> None:
    with telemetry.run_span("r1"):
        sent = task().model_copy(update={"trace_context": telemetry.inject()})
    received = Task.model_validate_json(sent.model_dump_json())  # what a queue carries
    with telemetry.attached(received.trace_context), telemetry.attempt_span(received):
        pass
    run, attempt = sorted(spans.get_finished_spans(), key=lambda s: s.name, reverse=True)
    assert run.name == "invoke_workflow crewbox" and attempt.name == "invoke_agent marie"
    assert attempt.parent is not None and attempt.parent.span_id == run.context.span_id
    assert attempt.context.trace_id == run.context.trace_id
    assert attempt.attributes == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "marie",
        telemetry.RUN_ID: "r1",
        telemetry.TASK_ID: "t1",
        telemetry.ATTEMPT: 1,
    }


def test_a_bad_trace_context_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    with telemetry.attached({"traceparent": "not-a-traceparent"}), telemetry.attempt_span(task()):
        pass
    (attempt,) = spans.get_finished_spans()
    assert attempt.parent is None


def test_chat_span_carries_usage_by_the_conventions(spans: InMemorySpanExporter) -> None:
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 300}
    llm = telemetry.TracedLLM(ScriptedLLM([{"text": "hi", "usage": usage}]), "anthropic")
    llm.complete(system=[], messages=[Message(role="user", content="q")], model="m-1")
    (chat,) = spans.get_finished_spans()
    assert chat.name == "chat m-1"
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "m-1"
    assert attributes["gen_ai.usage.input_tokens"] == 400  # input + cache read + cache write
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 300
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert "gen_ai.input.messages" not in attributes  # content only on opt-in


def test_content_is_recorded_only_on_opt_in(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(telemetry.CAPTURE_CONTENT_VAR, "true")
    llm = telemetry.TracedLLM(ScriptedLLM([{"text": "secret answer"}]), "openai")
    llm.complete(system=[], messages=[Message(role="user", content="secret question")])
    (chat,) = spans.get_finished_spans()
    attributes = dict(chat.attributes or {})
    assert "secret question" in str(attributes["gen_ai.input.messages"])
    assert "secret answer" in str(attributes["gen_ai.output.messages"])


def test_a_failed_call_is_an_error_span(spans: InMemorySpanExporter) -> None:
    llm = telemetry.TracedLLM(ScriptedLLM([{"error": {"status": 529}}]), "anthropic")
    with pytest.raises(Exception, match="scripted API error"):
        llm.complete(system=[], messages=[Message(role="user", content="q")])
    (chat,) = spans.get_finished_spans()
    assert chat.status.is_ok is False
    assert dict(chat.attributes or {})["error.type"] == "LLMAPIError"


class BlockingExporter(SpanExporter):
    """An exporter stuck like one talking to an endpoint that never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait()
        return SpanExportResult.SUCCESS


def test_exit_flush_gives_up_on_a_stuck_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = BlockingExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_provider", provider)
    provider.get_tracer("t").start_span("s").end()
    telemetry.flush_at_exit(limit_s=0.2)  # returns though the export never ends
    assert exporter.entered.is_set() and not exporter.release.is_set()
    exporter.release.set()


def test_claude_code_gets_the_attempts_traceparent(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    llm = ScriptedLLM([])
    with MessagesGateway(llm, lambda u, s: None, lambda m: m or "", time.monotonic() + 5) as gw:
        assert "TRACEPARENT" not in cli_env(gw, tmp_path, time.monotonic() + 5)
        with telemetry.attempt_span(task()) as span:
            env = cli_env(gw, tmp_path, time.monotonic() + 5)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert env["TRACEPARENT"].split("-")[1] == trace_id


def log_lines(run: Callable[[logging.Logger], None], kind: str) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.log_formatter(kind))
    handler.addFilter(telemetry.ContextFilter())
    logger = logging.getLogger("crewbox.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def json_lines(run: Callable[[logging.Logger], None]) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_lines(run, "json")]


def log_a_run(logger: logging.Logger) -> None:
    """A line outside any run, one in a run (and its span), one in an attempt, one after."""
    logger.info("outside")
    with telemetry.log_context(run_id="r1"), telemetry.run_span("r1"):
        logger.info("run")
        with telemetry.log_context(task_id="t1", attempt=2):
            logger.warning("attempt %d", 2)
    logger.info("after")


def test_json_log_lines_carry_run_task_attempt_and_trace(spans: InMemorySpanExporter) -> None:
    outside, run, attempt, after = json_lines(log_a_run)
    assert outside["run_id"] is None and outside["trace_id"] is None
    assert run["run_id"] == "r1" and run["task_id"] is None
    assert attempt == {
        "time": attempt["time"],
        "level": "WARNING",
        "logger": "crewbox.test-json",
        "message": "attempt 2",
        "run_id": "r1",
        "task_id": "t1",
        "attempt": 2,
        "trace_id": run["trace_id"],
    }
    (span,) = spans.get_finished_spans()
    assert run["trace_id"] == format(span.context.trace_id, "032x")
    assert after["run_id"] is None


def test_text_log_lines_carry_run_task_attempt_and_trace(spans: InMemorySpanExporter) -> None:
    outside, run, attempt, after = log_lines(log_a_run, "text")
    (span,) = spans.get_finished_spans()
    trace = format(span.context.trace_id, "032x")
    assert outside.endswith(" INFO crewbox.test-json: outside")
    assert run.endswith(f" INFO crewbox.test-json [run=r1 trace={trace}]: run")
    assert attempt.endswith(
        f" WARNING crewbox.test-json [run=r1 task=t1 attempt=2 trace={trace}]: attempt 2"
    )
    assert after.endswith(" INFO crewbox.test-json: after")


def test_an_unknown_log_format_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"CREWBOX_LOG_FORMAT='xml': use text or json"):
        telemetry.log_formatter("xml")


def test_usage_attributes_of_an_empty_call_are_zero() -> None:
    assert set(telemetry.usage_attributes(Usage()).values()) == {0}
