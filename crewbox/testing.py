"""ScriptedLLM: a scripted :class:`~crewbox.llm.base.LLMClient` for tests and demos.

A script is a list of steps. Each call takes the first unconsumed step whose ``match``
substring occurs in the call (system prompt, messages, tool inputs); no such step raises
:class:`~crewbox.errors.ScriptExhaustedError`. Every call is recorded.

Scripts work across processes: with ``record_dir`` set, a step is consumed by creating a
file with ``O_EXCL`` (so two worker processes never take the same step), every call is
written to ``record_dir/calls/`` as JSON, and a step with ``barrier`` waits until
``parties`` calls (in any process) have reached the barrier of that name, which proves
the calls run at the same time. Select it with ``CREWBOX_PROVIDER=scripted`` and
``CREWBOX_SCRIPT_PATH=script.yaml`` (``CREWBOX_SCRIPT_RECORD_DIR`` for the records).

Step keys: ``match`` (str, optional), ``text`` (str), ``tool_uses`` (list of ``{name,
input}``), ``error`` (``{status, retry_after_s, message}``: the call fails with that API
error instead, recorded with ``error_status`` and zero usage; status null is a dropped
connection), ``usage`` (``input_tokens``, ``output_tokens``, ``cache_write_tokens``,
``cache_read_tokens``), ``barrier`` (str) with ``parties`` (int), ``delay_s`` (float: the
call takes this long; a call whose ``timeout_s`` is shorter fails with a timeout
LLMAPIError after ``timeout_s`` and is not recorded: nothing was billed).
Cost comes from the real pricing table for ``model`` (default ``claude-sonnet-4-6``).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from crewbox.errors import CrewboxError, LLMAPIError, ScriptExhaustedError
from crewbox.llm.base import (
    LLMResponse,
    Message,
    SystemBlock,
    TextBlock,
    ToolDef,
    ToolUseBlock,
)
from crewbox.llm.pricing import call_usage
from crewbox.models import Usage

BARRIER_TIMEOUT_S = 60.0
"""How long a barrier step waits for the other parties before failing the call."""

BARRIER_POLL_S = 0.01
"""How often a waiting barrier step looks at the arrivals folder (10 ms)."""


class ScriptedToolUse(BaseModel):
    """A tool call the scripted model makes."""

    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ScriptedUsage(BaseModel):
    """Tokens the scripted call reports (cost is derived from them)."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


class ScriptedError(BaseModel):
    """An API failure the scripted call raises instead of answering: HTTP ``status`` (None:
    a dropped connection), the server's ``retry_after_s`` hint, a ``message``."""

    status: int | None = None
    retry_after_s: float | None = None
    message: str = "scripted API error"


class ScriptedStep(BaseModel):
    """One scripted response (or ``error``) and the condition for using it."""

    match: str | None = None
    text: str = ""
    tool_uses: list[ScriptedToolUse] = Field(default_factory=list)
    usage: ScriptedUsage = Field(default_factory=ScriptedUsage)
    barrier: str | None = None
    parties: int = 1
    delay_s: float = 0.0
    error: ScriptedError | None = None


class RecordedCall(BaseModel):
    """One call as the scripted model saw it, with the step that answered it."""

    step: int
    pid: int
    system: list[str]
    messages: list[dict[str, Any]]
    tools: list[str]
    force_tool: str | None
    model: str
    usage: Usage
    started_at_s: float
    ended_at_s: float
    error_status: int | None = None
    """The status of a scripted error this call raised (0: a dropped connection); its usage
    is zero (nothing billed)."""
    effort: str | None = None
    max_tokens: int | None = None

    @property
    def text(self) -> str:
        """System and messages as one searchable string."""
        return _call_text(self.system, self.messages)


def _call_text(system: list[str], messages: list[dict[str, Any]]) -> str:
    return "\n".join(system) + "\n" + json.dumps(messages, ensure_ascii=False)


class ScriptedLLM:
    """An LLMClient that replays scripted steps; see the module docstring.

    Raises (from :meth:`complete`): ScriptExhaustedError when no unconsumed step matches;
    CrewboxError when a barrier times out.
    """

    def __init__(
        self,
        steps: list[ScriptedStep] | list[dict[str, Any]],
        *,
        model: str = "claude-sonnet-4-6",
        record_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.steps = [s if isinstance(s, ScriptedStep) else ScriptedStep(**s) for s in steps]
        self.record_dir = record_dir
        self.calls: list[RecordedCall] = []
        self._consumed: set[int] = set()
        self._lock = threading.Lock()
        if record_dir:
            (record_dir / "steps").mkdir(parents=True, exist_ok=True)
            (record_dir / "calls").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_file(cls, path: Path, record_dir: Path | None = None) -> ScriptedLLM:
        """Load a script: YAML or JSON, either a list of steps or ``{model, steps}``."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return cls(data, record_dir=record_dir)
        return cls(
            data["steps"], model=data.get("model", "claude-sonnet-4-6"), record_dir=record_dir
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
        """Answer with the first matching unconsumed step (see the class docstring).

        Raises:
            LLMAPIError: the step's ``delay_s`` is longer than ``timeout_s`` (after
                ``timeout_s``).
        """
        started = time.time()
        system_texts = [b.text for b in system]
        dumped = [m.model_dump(mode="json") for m in messages]
        index = self._take_step(_call_text(system_texts, dumped))
        step = self.steps[index]
        if step.barrier:
            self._await_barrier(step.barrier, step.parties)
        self._delay(step.delay_s, timeout_s)
        failure = step.error
        response = None if failure else self._response(step, model or self.model)
        self._record(
            RecordedCall(
                step=index,
                pid=os.getpid(),
                system=system_texts,
                messages=dumped,
                tools=[t.name for t in tools or []],
                force_tool=force_tool,
                model=response.model if response else (model or self.model),
                usage=response.usage if response else Usage(),
                started_at_s=started,
                ended_at_s=time.time(),
                error_status=(failure.status or 0) if failure else None,
                effort=effort,
                max_tokens=max_tokens,
            )
        )
        if response is None:
            assert failure is not None
            raise LLMAPIError(
                f"scripted HTTP {failure.status}: {failure.message}",
                status_code=failure.status,
                retry_after_s=failure.retry_after_s,
            )
        return response

    def unused_steps(self) -> list[int]:
        """Indexes of the steps no call has used (in any process, with ``record_dir``)."""
        used = set(self._consumed)
        if self.record_dir is not None:
            used |= {int(p.name) for p in (self.record_dir / "steps").iterdir()}
        return [i for i in range(len(self.steps)) if i not in used]

    def assert_all_used(self) -> None:
        """Check that every scripted step answered a call.

        Raises:
            AssertionError: some did not (their indexes and matches in the message).
        """
        left = self.unused_steps()
        if left:
            matches = [self.steps[i].match for i in left]
            raise AssertionError(f"scripted steps never used: {left} (matches {matches})")

    @staticmethod
    def _delay(delay_s: float, timeout_s: float | None) -> None:
        if timeout_s is not None and delay_s > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            raise LLMAPIError(f"scripted call timed out after {timeout_s:.1f}s")
        time.sleep(delay_s)

    def _take_step(self, text: str) -> int:
        with self._lock:
            for index, step in enumerate(self.steps):
                if index in self._consumed or (step.match and step.match not in text):
                    continue
                if self._claim(index):
                    self._consumed.add(index)
                    return index
                self._consumed.add(index)
        raise ScriptExhaustedError(f"no scripted step left for a call containing: {text[-300:]!r}")

    def _claim(self, index: int) -> bool:
        if self.record_dir is None:
            return True
        try:
            fd = os.open(self.record_dir / "steps" / str(index), os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def _await_barrier(self, name: str, parties: int) -> None:
        if self.record_dir is None:
            raise CrewboxError(
                f"scripted barrier {name!r} needs a record_dir (processes meet there)"
            )
        folder = self.record_dir / "barriers" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while len(list(folder.iterdir())) < parties:
            if time.monotonic() > deadline:
                arrived = len(list(folder.iterdir()))
                raise CrewboxError(
                    f"scripted barrier {name!r}: {arrived} of {parties} calls arrived "
                    f"within {BARRIER_TIMEOUT_S:.0f}s; the calls did not run in parallel"
                )
            time.sleep(BARRIER_POLL_S)

    def _response(self, step: ScriptedStep, model: str) -> LLMResponse:
        content: list[TextBlock | ToolUseBlock] = []
        if step.text:
            content.append(TextBlock(text=step.text))
        for use in step.tool_uses:
            content.append(
                ToolUseBlock(id=f"toolu_{uuid.uuid4().hex[:16]}", name=use.name, input=use.input)
            )
        u = step.usage
        usage = call_usage(
            model,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cache_read_tokens=u.cache_read_tokens,
        )
        stop = "tool_use" if step.tool_uses else "end_turn"
        return LLMResponse(content=content, stop_reason=stop, usage=usage, model=model)

    def _record(self, call: RecordedCall) -> None:
        with self._lock:
            self.calls.append(call)
        if self.record_dir:
            name = f"{time.time_ns()}-{os.getpid()}-{call.step}.json"
            (self.record_dir / "calls" / name).write_text(call.model_dump_json())


def recorded_calls(record_dir: Path) -> list[RecordedCall]:
    """Every call recorded under ``record_dir`` by any process, in start order."""
    calls = [
        RecordedCall.model_validate_json(p.read_text())
        for p in sorted((record_dir / "calls").glob("*.json"))
    ]
    return sorted(calls, key=lambda c: c.started_at_s)
