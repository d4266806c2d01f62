"""Traces and log context: OpenTelemetry with the GenAI semantic conventions.

One trace per run (docs/architecture.md, "Observability"): the orchestrator's run span
(``invoke_workflow crewbox``) holds ``plan``, every attempt (``invoke_agent {persona}``,
started by the worker that runs it, in whatever container) and ``synthesize``; an attempt
holds its ``chat {model}`` calls and ``execute_tool {tool}`` calls, a sub-agent's
``invoke_agent {sub-agent}`` nested under its ``Agent`` call. The attempt's parent travels
in ``Task.trace_context`` (W3C ``traceparent``), so both queues carry it; the claude-code
engine passes it on as ``TRACEPARENT``.

Names and values come from the semantic-conventions package
(``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``; the conventions are
https://opentelemetry.io/docs/specs/semconv/gen-ai/). For Anthropic,
``gen_ai.usage.input_tokens`` is input + cache read + cache write, with the cache parts
also in ``gen_ai.usage.cache_read.input_tokens`` and
``gen_ai.usage.cache_creation.input_tokens``; crewbox's cost is ``crewbox.usage.cost_usd``.

Export: OTLP over HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, through a batch processor (a background
thread: a slow or dead endpoint never waits a run; at exit at most EXIT_FLUSH_S more);
otherwise nothing is set up and the OpenTelemetry API is a no-op. Message content is
recorded only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.

Log context: :func:`log_context` sets run id, task id and attempt for the log lines of the
block (contextvars); :func:`setup_logging` writes them, with the trace id, as JSON lines
when ``CREWBOX_LOG_FORMAT=json``.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Unpack

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from crewbox.llm.base import CallArgs, LLMClient, LLMResponse
from crewbox.models import Task, Usage

TRACER_NAME = "crewbox"
WORKFLOW_NAME = "crewbox"
"""``gen_ai.workflow.name`` of a run's span."""

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Either one set turns export on (the OTLP exporter's own variables)."""

CAPTURE_CONTENT_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The conventions' opt-in for message content (``true``); off by default."""

EXIT_FLUSH_S = 2.0
"""At exit, how long spans still queued are given to reach the endpoint before the
process goes on exiting without them."""

RUN_ID = "crewbox.run_id"
TASK_ID = "crewbox.task_id"
ATTEMPT = "crewbox.attempt"
STATUS = "crewbox.status"
WORKER = "crewbox.worker"
ORCHESTRATOR = "crewbox.orchestrator"
COST_USD = "crewbox.usage.cost_usd"
"""crewbox's attribute names (no convention has them)."""

PROVIDERS = {
    "anthropic": gen_ai.GenAiProviderNameValues.ANTHROPIC.value,
    "openai": gen_ai.GenAiProviderNameValues.OPENAI.value,
}
"""crewbox's provider names to ``gen_ai.provider.name`` values; others pass as they are."""

_provider: Any = None
active = False
"""Whether spans are made: set by :func:`setup_tracing` (tests set it around their own
provider). While false every span helper returns one shared no-op span at once, and
:class:`TracedLLM` calls straight through: tracing off costs a task a few microseconds."""

_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


def tracing_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when ``env`` (default: the process's) names an OTLP endpoint and the SDK is not
    disabled (``OTEL_SDK_DISABLED=true``)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def setup_tracing(service_name: str) -> bool:
    """Install the tracer provider of this process when :func:`tracing_configured`:
    resource ``service.name`` = ``OTEL_SERVICE_NAME`` if set, else ``service_name``
    (``crewbox-orchestrator``, ``crewbox-worker-<persona>``), spans batched to the OTLP HTTP
    exporter (endpoint, headers, timeout from its ``OTEL_EXPORTER_OTLP_*`` variables).
    Returns whether it did; a second call does nothing. Never raises for a bad endpoint:
    export errors are the exporter's log lines."""
    global _provider
    if _provider is not None or not tracing_configured():
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    global active
    active = True
    atexit.register(flush_at_exit)
    return True


def flush_at_exit(limit_s: float = EXIT_FLUSH_S) -> None:
    """Shut the provider down (exporting what is queued) for at most ``limit_s`` seconds,
    in a daemon thread, so an unreachable endpoint delays exit by no more than that."""
    if _provider is None:
        return
    done = threading.Thread(target=_provider.shutdown, name="otel-flush", daemon=True)
    done.start()
    done.join(limit_s)


_TRACER = trace.get_tracer(TRACER_NAME)
"""A proxy: the no-op tracer until a provider is installed, that provider's after."""


def tracer() -> trace.Tracer:
    """crewbox's tracer (a no-op one until :func:`setup_tracing` installed a provider)."""
    return _TRACER


def capture_content() -> bool:
    """Whether message content goes into spans (CAPTURE_CONTENT_VAR is ``true``)."""
    return os.environ.get(CAPTURE_CONTENT_VAR, "").strip().lower() == "true"


# -- trace context in the Task ---------------------------------------------------------
def inject() -> dict[str, str]:
    """The current span's W3C trace context (``{"traceparent": ...}``), for a Task; empty
    when no span is recording (tracing off)."""
    carrier: dict[str, str] = {}
    if active:
        propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def attached(carrier: Mapping[str, str]) -> Iterator[None]:
    """A block whose spans are children of the span ``carrier`` names (from :func:`inject`);
    an empty or malformed carrier leaves the current context as it is."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)


def traceparent() -> str | None:
    """The current span's ``traceparent`` header value, or None when tracing is off (what
    the claude-code engine sets as ``TRACEPARENT`` for the CLI)."""
    return inject().get("traceparent")


def trace_id_hex() -> str | None:
    """The current span's trace id (32 hex digits), or None when there is none."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# -- spans -------------------------------------------------------------------------------
def _start(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    record_exception: bool = True,
) -> contextlib.AbstractContextManager[Span]:
    """``tracer().start_as_current_span(...)`` when :data:`active`, else the no-op span."""
    if not active:
        return _NO_SPAN
    return tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=record_exception
    )


def run_span(run_id: str) -> contextlib.AbstractContextManager[Span]:
    """The span of one drive of run ``run_id``: ``invoke_workflow crewbox``."""
    return _start(
        f"{gen_ai.GenAiOperationNameValues.INVOKE_WORKFLOW.value} {WORKFLOW_NAME}",
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
            gen_ai.GEN_AI_WORKFLOW_NAME: WORKFLOW_NAME,
            RUN_ID: run_id,
        },
    )


def stage_span(name: str, run_id: str) -> contextlib.AbstractContextManager[Span]:
    """A stage of the orchestrator's run (``plan``, ``synthesize``)."""
    return _start(name, attributes={RUN_ID: run_id})


def attempt_span(task: Task) -> contextlib.AbstractContextManager[Span]:
    """An attempt of ``task``: ``invoke_agent {persona}`` with its run, task and attempt."""
    return agent_span(
        task.persona,
        {RUN_ID: task.run_id, TASK_ID: task.task_id, ATTEMPT: task.attempt},
    )


def agent_span(
    name: str, attributes: Mapping[str, str | int] | None = None
) -> contextlib.AbstractContextManager[Span]:
    """``invoke_agent {name}`` (a persona's attempt, or a sub-agent's run)."""
    operation = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
    return _start(
        f"{operation} {name}",
        kind=SpanKind.INTERNAL,
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: operation,
            gen_ai.GEN_AI_AGENT_NAME: name,
            **(attributes or {}),
        },
    )


def end_status(span: Span, status: str, error: str | None = None) -> None:
    """Record crewbox's ``status`` of what ``span`` covered; an error sets the span's status
    to ERROR with ``error`` as its description."""
    span.set_attribute(STATUS, status)
    if error:
        span.set_status(Status(StatusCode.ERROR, error[:500]))


def tool_span(name: str, call_id: str) -> contextlib.AbstractContextManager[Span]:
    """``execute_tool {name}`` for one tool call (``gen_ai.tool.call.id``: the model's id)."""
    operation = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
    return _start(
        f"{operation} {name}",
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: operation,
            gen_ai.GEN_AI_TOOL_NAME: name,
            gen_ai.GEN_AI_TOOL_CALL_ID: call_id,
        },
    )


def usage_attributes(usage: Usage) -> dict[str, int | float]:
    """The ``gen_ai.usage.*`` attributes of one call's ``usage`` (input = uncached + cache
    read + cache write, as the conventions define it for Anthropic), and its cost in USD."""
    return {
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens
        + usage.cache_read_tokens
        + usage.cache_write_tokens,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage.cache_read_tokens,
        gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_write_tokens,
        gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: usage.thinking_tokens,
        COST_USD: float(usage.cost_usd),
    }


class TracedLLM:
    """An :class:`~crewbox.llm.base.LLMClient` that makes each call a ``chat {model}`` span
    (``gen_ai.provider.name`` from ``provider``, request model and max tokens, response
    finish reason, :func:`usage_attributes`; content only with :func:`capture_content`).
    A call that raises ends its span with status ERROR and ``error.type``. With tracing
    off, the span is the API's no-op and no attribute is computed."""

    def __init__(self, inner: LLMClient, provider: str) -> None:
        self.inner = inner
        self.model = inner.model
        self.provider = PROVIDERS.get(provider, provider)

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """One call of the inner client inside its span (see the class docstring)."""
        if not active:
            return self.inner.complete(**call)
        name = call.get("model") or self.model
        operation = gen_ai.GenAiOperationNameValues.CHAT.value
        with tracer().start_as_current_span(
            f"{operation} {name}", kind=SpanKind.CLIENT, record_exception=False
        ) as span:
            recording = span.is_recording()
            if recording:
                self._request_attributes(span, name, call)
            try:
                response = self.inner.complete(**call)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
                raise
            if recording:
                _response_attributes(span, response)
            return response

    def _request_attributes(self, span: Span, model: str, call: CallArgs) -> None:
        span.set_attributes(
            {
                gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
                gen_ai.GEN_AI_PROVIDER_NAME: self.provider,
                gen_ai.GEN_AI_SYSTEM: self.provider,
                gen_ai.GEN_AI_REQUEST_MODEL: model,
                gen_ai.GEN_AI_REQUEST_MAX_TOKENS: call.get("max_tokens", 4096),
            }
        )
        if capture_content():
            system = [{"type": "text", "content": b.text} for b in call["system"]]
            messages = [m.model_dump(mode="json") for m in call["messages"]]
            span.set_attribute(gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS, json.dumps(system))
            span.set_attribute(gen_ai.GEN_AI_INPUT_MESSAGES, json.dumps(messages))


def _response_attributes(span: Span, response: LLMResponse) -> None:
    span.set_attributes(usage_attributes(response.usage))
    span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [response.stop_reason or ""])
    if capture_content():
        content = [block.model_dump(mode="json") for block in response.content]
        span.set_attribute(
            gen_ai.GEN_AI_OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "parts": content}])
        )


# -- log context -------------------------------------------------------------------------
LOG_FIELDS = ("run_id", "task_id", "attempt")
"""What :func:`log_context` sets, and JSON log lines carry (with ``trace_id``)."""

_log_context: contextvars.ContextVar[dict[str, str | int] | None] = contextvars.ContextVar(
    "crewbox_log_context", default=None
)


@contextlib.contextmanager
def log_context(**fields: str | int | None) -> Iterator[None]:
    """A block whose log lines carry ``fields`` (of LOG_FIELDS; None values are left out)
    besides those of any enclosing block."""
    merged = {**(_log_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _log_context.set(merged)
    try:
        yield
    finally:
        _log_context.reset(token)


class ContextFilter(logging.Filter):
    """Sets ``run_id``, ``task_id``, ``attempt`` (from :func:`log_context`, else None) and
    ``trace_id`` (the current span's, else None) on every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; never drops a record."""
        fields = _log_context.get() or {}
        for name in LOG_FIELDS:
            setattr(record, name, fields.get(name))
        record.trace_id = trace_id_hex()
        return True


LOG_FORMAT_VAR = "CREWBOX_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
TEXT_TAGS = (("run_id", "run"), ("task_id", "task"), ("attempt", "attempt"), ("trace_id", "trace"))
"""The fields a text line shows in brackets when set, and the tag of each."""


class TextFormatter(logging.Formatter):
    """``time level logger [run=R task=T attempt=N trace=X]: message``: the bracket holds
    the fields :class:`ContextFilter` set (only those that are set; no bracket outside any
    run), so `make logs-<persona>` lines meet the run log and a trace in text as in JSON."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The line, with ``record.context`` set to the bracket (or empty)."""
        tags = [
            f"{tag}={value}"
            for name, tag in TEXT_TAGS
            if (value := getattr(record, name, None)) is not None
        ]
        record.context = f" [{' '.join(tags)}]" if tags else ""
        return super().format(record)


def log_formatter(kind: str) -> logging.Formatter:
    """The formatter for ``CREWBOX_LOG_FORMAT`` ``kind``: ``text`` (``time level logger
    [run=… task=… attempt=… trace=…]: message``, :class:`TextFormatter`) or ``json`` (one
    JSON object a line: time, level, logger, message, run_id, task_id, attempt, trace_id;
    python-json-logger).

    Raises:
        ValueError: any other kind (the message names the variable and the choices).
    """
    if kind == "text":
        return TextFormatter()
    if kind == "json":
        return _json_formatter()
    raise ValueError(f"{LOG_FORMAT_VAR}={kind!r}: use text or json")


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    fields = " ".join(f"%({name})s" for name in (*LOG_FIELDS, "trace_id"))
    return JsonFormatter(
        f"%(asctime)s %(levelname)s %(name)s %(message)s {fields}",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def setup_logging(level: str = "INFO", kind: str = "text") -> None:
    """Log to stderr at ``level`` in format ``kind`` (:func:`log_formatter`), every line
    through :class:`ContextFilter`; httpx, the SDKs and watchfiles only from WARNING.

    Raises:
        ValueError: an unknown ``kind``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(kind))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("httpx", "anthropic", "openai", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
