"""What tracing costs a task (crewbox.telemetry), off (the default) and on.

One task's instrumentation is what the code does for it: the orchestrator injects the run's
context into the Task, the worker attaches it, opens the attempt span and its log context,
makes CALLS LLM calls through :class:`~crewbox.telemetry.TracedLLM` and TOOLS tool spans.
Timed REPEATS times against the same work without any of it (the code before tracing: the
bare LLM client, no span), with:

- ``off``: no tracer provider installed (no OTEL_EXPORTER_OTLP_ENDPOINT): the API's no-op;
- ``on``: an SDK provider batching every span to an exporter that drops them (what a run
  pays in-process when it exports; the network is the batch thread's).

The figures are microseconds per task (best of ROUNDS medians, so a busy machine inflates
them less); set beside ``overhead_ms_per_task_files`` they show whether tracing off is
measurable in a task's overhead.

Usage: ``python -m bench.tracing`` (also part of ``make bench``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from crewbox import telemetry
from crewbox.llm.base import LLMClient, LLMResponse, Message, TextBlock
from crewbox.models import Task, TaskSpec, Usage

CALLS = 2
TOOLS = 1
"""A task's LLM calls and tool calls in this measure (a Write, then the answer)."""
REPEATS = 2000
ROUNDS = 5

MESSAGES = [Message(role="user", content="Do t1.")]


class InstantLLM:
    """An LLMClient that answers at once (what is timed is around it)."""

    model = "claude-sonnet-4-6"

    def __init__(self) -> None:
        usage = Usage(input_tokens=100, output_tokens=10, calls=1)
        self.response = LLMResponse(
            content=[TextBlock(text="ok")], stop_reason="end_turn", usage=usage, model=self.model
        )

    def complete(self, **call: Any) -> LLMResponse:
        """The same response every time."""
        return self.response


class DropExporter(SpanExporter):
    """Takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Accept ``spans``."""
        return SpanExportResult.SUCCESS


def bare_task(llm: LLMClient, task: Task) -> None:
    """One task's work without tracing: CALLS calls, TOOLS tool calls (nothing)."""
    for _ in range(CALLS):
        llm.complete(system=[], messages=MESSAGES)


def traced_task(llm: LLMClient, task: Task) -> None:
    """The same with the instrumentation a task gets (see the module docstring)."""
    with telemetry.run_span(task.run_id):
        carried = telemetry.inject()
    with (
        telemetry.attached(carried),
        telemetry.attempt_span(task) as span,
        telemetry.log_context(run_id=task.run_id, task_id=task.task_id, attempt=task.attempt),
    ):
        for _ in range(CALLS):
            llm.complete(system=[], messages=MESSAGES)
        for _ in range(TOOLS):
            with telemetry.tool_span("Write", "toolu_1"):
                pass
        telemetry.end_status(span, "succeeded")


def per_task_us(work: Callable[[LLMClient, Task], None], llm: LLMClient) -> float:
    """Microseconds per call of ``work``: the best of ROUNDS medians of REPEATS calls timed
    in batches of 100."""
    task = Task(
        run_id="r", spec=TaskSpec(id="t1", persona="p", title="t", instructions="x"),
        request_text="x",
    )  # fmt: skip
    medians = []
    for _ in range(ROUNDS):
        samples = []
        for _ in range(REPEATS // 100):
            started = time.perf_counter()
            for _ in range(100):
                work(llm, task)
            samples.append((time.perf_counter() - started) / 100 * 1e6)
        medians.append(statistics.median(samples))
    return min(medians)


@contextmanager
def recording() -> Iterator[None]:
    """crewbox's tracer on an SDK provider batching to DropExporter, for the block."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    before = telemetry.tracer
    telemetry.tracer = lambda: provider.get_tracer("bench")
    telemetry.active = True
    try:
        yield
    finally:
        telemetry.tracer = before
        telemetry.active = False
        provider.shutdown()


def measure() -> dict[str, float]:
    """``tracing_off_us_per_task`` and ``tracing_on_us_per_task``: the instrumentation's
    cost per task beyond the bare work; ``bare_us_per_task``: the bare work itself.

    Raises:
        RuntimeError: a tracer provider is installed in this process (``off`` would not be
            the no-op path: unset OTEL_EXPORTER_OTLP_ENDPOINT).
    """
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        raise RuntimeError("a tracer provider is installed; unset OTEL_EXPORTER_OTLP_ENDPOINT")
    bare, traced = InstantLLM(), telemetry.TracedLLM(InstantLLM(), "anthropic")
    bare_us = per_task_us(bare_task, bare)
    off_us = per_task_us(traced_task, traced)
    with recording():
        on_us = per_task_us(traced_task, traced)
    return {
        "bare_us_per_task": bare_us,
        "tracing_off_us_per_task": max(off_us - bare_us, 0.0),
        "tracing_on_us_per_task": max(on_us - bare_us, 0.0),
    }


def share_of_overhead(tracing_us: float | None, overhead_ms: float | None) -> float | None:
    """``tracing_us`` as a percentage of a task's measured overhead (``overhead_ms``), or
    None when either is missing or the overhead is not positive."""
    if tracing_us is None or overhead_ms is None or overhead_ms <= 0:
        return None
    return tracing_us / (overhead_ms * 1000) * 100


if __name__ == "__main__":
    for key, value in measure().items():
        print(f"{key}: {value:.1f}")
